//! Go's internal register ABI (ABIInternal) on amd64, computed the way the compiler does it
//! (GOROOT/src/cmd/compile/abi-internal.md): each argument is assigned to registers as a whole
//! or, if it does not fit, to the stack; results start again from the first register.

use std::fmt;

use serde::Serialize;

use super::types::{GoType, TypeKind};

/// Integer argument registers, in assignment order.
pub const INT_REGS: [&str; 9] = ["RAX", "RBX", "RCX", "RDI", "RSI", "R8", "R9", "R10", "R11"];
/// X0..X14 carry floating-point words.
pub const FLOAT_REGS: usize = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// Index into [`INT_REGS`] (and into the event's register array).
    Int(u8),
    /// X0..X14: not in `pt_regs`, so never readable from a uprobe.
    Float(u8),
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reg::Int(i) => f.write_str(INT_REGS[i as usize]),
            Reg::Float(i) => write!(f, "X{i}"),
        }
    }
}

/// One register holding `size` bytes of a value, starting `offset` bytes into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub offset: u64,
    pub size: u64,
    pub reg: Reg,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// Zero-sized values occupy nothing.
    Nowhere,
    Registers(Vec<Piece>),
    /// Byte offset into the argument area, which starts at SP+8 at entry (above the return address).
    Stack {
        offset: u64,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Nowhere => f.write_str("none"),
            Location::Stack { offset } => write!(f, "stack+{offset}"),
            Location::Registers(pieces) => {
                for (i, p) in pieces.iter().enumerate() {
                    if i > 0 {
                        f.write_str("+")?;
                    }
                    write!(f, "{}", p.reg)?;
                }
                Ok(())
            }
        }
    }
}

impl Serialize for Location {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where every parameter and result of one function lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub params: Vec<Location>,
    pub results: Vec<Location>,
    /// Bytes of the argument area (stack arguments then stack results, each part word-aligned).
    pub stack_bytes: u64,
}

/// Assigns `params` then `results` as the compiler does.
pub fn assign(params: &[&GoType], results: &[&GoType]) -> Assignment {
    let mut stack = 0u64;
    let place_all = |types: &[&GoType], stack: &mut u64| -> Vec<Location> {
        let mut regs = Registers::default();
        let located = types
            .iter()
            .map(|ty| {
                if ty.size == 0 {
                    return Location::Nowhere;
                }
                let saved = regs;
                let mut pieces = Vec::new();
                if regs.assign(ty, 0, &mut pieces) {
                    Location::Registers(pieces)
                } else {
                    regs = saved;
                    let offset = align_up(*stack, ty.align.max(1));
                    *stack = offset + ty.size;
                    Location::Stack { offset }
                }
            })
            .collect();
        *stack = align_up(*stack, 8);
        located
    };
    let params = place_all(params, &mut stack);
    let results = place_all(results, &mut stack);
    Assignment {
        params,
        results,
        stack_bytes: stack,
    }
}

fn align_up(n: u64, align: u64) -> u64 {
    n.div_ceil(align) * align
}

#[derive(Clone, Copy, Default)]
struct Registers {
    ints: u8,
    floats: u8,
}

impl Registers {
    /// Assigns `ty` (found `offset` bytes into the whole argument) to registers, or returns false
    /// when it does not fit; the caller then restores the registers and uses the stack.
    fn assign(&mut self, ty: &GoType, offset: u64, pieces: &mut Vec<Piece>) -> bool {
        match &ty.kind {
            _ if ty.size == 0 => true,
            TypeKind::Bool | TypeKind::Int { .. } | TypeKind::Pointer => {
                self.int(offset, ty.size, pieces)
            }
            TypeKind::Float => self.float(offset, ty.size, pieces),
            TypeKind::Complex => {
                let half = ty.size / 2;
                self.float(offset, half, pieces) && self.float(offset + half, half, pieces)
            }
            TypeKind::String | TypeKind::Interface { .. } => {
                self.int(offset, 8, pieces) && self.int(offset + 8, 8, pieces)
            }
            TypeKind::Slice => (0..3).all(|i| self.int(offset + 8 * i, 8, pieces)),
            TypeKind::Struct(fields) => fields
                .iter()
                .all(|f| self.assign(&f.ty, offset + f.offset, pieces)),
            TypeKind::Array { elem, len } => match len {
                0 => true,
                1 => self.assign(elem, offset, pieces),
                _ => false,
            },
            // Without a shape we cannot know the compiler's split; the stack is the safe guess
            // only for large values, so word-sized ones go to an integer register.
            TypeKind::Opaque => ty.size <= 8 && self.int(offset, ty.size, pieces),
        }
    }

    fn int(&mut self, offset: u64, size: u64, pieces: &mut Vec<Piece>) -> bool {
        if self.ints as usize >= INT_REGS.len() {
            return false;
        }
        pieces.push(Piece {
            offset,
            size,
            reg: Reg::Int(self.ints),
        });
        self.ints += 1;
        true
    }

    fn float(&mut self, offset: u64, size: u64, pieces: &mut Vec<Piece>) -> bool {
        if self.floats as usize >= FLOAT_REGS {
            return false;
        }
        pieces.push(Piece {
            offset,
            size,
            reg: Reg::Float(self.floats),
        });
        self.floats += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracee::gobin::types::Field;

    fn int() -> GoType {
        GoType::word("int", TypeKind::Int { signed: true })
    }

    #[test]
    fn ten_ints_spill_the_tenth_to_the_stack() {
        let ints: Vec<GoType> = (0..11).map(|_| int()).collect();
        let refs: Vec<&GoType> = ints.iter().collect();
        let a = assign(&refs, &[&int()]);
        assert_eq!(a.params[8].to_string(), "R11");
        assert_eq!(a.params[9], Location::Stack { offset: 0 });
        assert_eq!(a.params[10], Location::Stack { offset: 8 });
        // Results start over at RAX.
        assert_eq!(a.results[0].to_string(), "RAX");
        assert_eq!(a.stack_bytes, 16);
    }

    #[test]
    fn struct_that_does_not_fit_goes_to_the_stack_whole_and_frees_its_registers() {
        let big = GoType {
            name: "main.Big".into(),
            size: 80,
            align: 8,
            kind: TypeKind::Struct(
                (0..10)
                    .map(|i| Field {
                        name: format!("f{i}"),
                        offset: 8 * i,
                        ty: int(),
                    })
                    .collect(),
            ),
        };
        let a = assign(&[&big, &int()], &[]);
        assert_eq!(a.params[0], Location::Stack { offset: 0 });
        assert_eq!(a.params[1].to_string(), "RAX");
    }
}
