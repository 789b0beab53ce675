//! Arguments without DWARF, as Go's own traceback prints them.
//!
//! Every Go function carries `FUNCDATA_ArgInfo`, which the runtime's `printArgs`
//! (runtime/traceback.go) reads to print a panicking frame's arguments in a binary with no
//! symbols: a byte program written by the compiler (`EmitArgInfo` in
//! cmd/compile/internal/ssagen/ssa.go), the same from Go 1.21 to 1.27. Each leaf word of the
//! arguments, in order, is an (offset, size) pair, its offset into the argument area (the
//! caller's frame, from SP+8 at entry); `0xfe`/`0xfd` open and close a struct, array, string,
//! slice, interface or complex; `0xfc` (`...`) says the compiler stopped after 10 words or 5
//! levels of nesting; `0xfb` (`_`) a word past offset 0xf0; `0xff` ends the program.
//!
//! Offsets of stack-passed arguments are where they are at entry. Offsets of register-passed
//! ones are their spill slots, which the function writes only when it needs to (the traceback
//! marks a slot it cannot vouch for with `?`): at entry the value is still in its register.
//! Which register goes with which slot is written in the function's own code: the path to
//! `runtime.morestack` (the stack-check branch's target) stores every register argument into
//! its spill slot before the call, exactly once, with the width of the value
//! (`RegArgs` in cmd/compile/internal/ssagen/ssa.go, spilled by `stacksplit` in
//! cmd/internal/obj/x86/obj6.go). A function without a stack check has no such path, and its
//! register-passed words stay unknown.

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, OpKind, Register};
use serde::{Deserialize, Serialize};

use crate::amd64::INT_ARG_REGISTERS;

/// `abi.TraceArgsEndSeq` and the other operators; bytes below `TRACE_ARGS_SPECIAL` are offsets.
const END_SEQ: u8 = 0xff;
const START_AGG: u8 = 0xfe;
const END_AGG: u8 = 0xfd;
const DOTDOTDOT: u8 = 0xfc;
const OFFSET_TOO_LARGE: u8 = 0xfb;
/// `abi.TraceArgsMaxLen`: (5 levels * 3 + 2) * 10 words + 1.
const MAX_LEN: usize = (5 * 3 + 2) * 10 + 1;

/// Instructions looked at for the stack-check branch, and at most in the morestack path: the
/// path spills at most 9 integer and 15 float registers.
const PROLOGUE_LEN: usize = 8;
const MAX_SPILLS: usize = 9 + 15;

/// Where a word of the arguments is when the function is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An integer argument register, by its index in ABI order (0 = RAX).
    Int(u8),
    /// A float argument register (X0...): `pt_regs` has no XMM state.
    Float(u8),
    /// The caller's argument area, at this offset from SP+8 at entry.
    Stack(u64),
    /// A word of a function without a morestack path: in a register or on the stack, which
    /// the offset alone does not tell.
    Unmapped,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Int(i) => write!(f, "{:?}", INT_ARG_REGISTERS[usize::from(*i)]),
            Source::Float(i) => write!(f, "X{i}"),
            Source::Stack(off) => write!(f, "stack+{off}"),
            Source::Unmapped => f.write_str("?"),
        }
    }
}

/// One step of a function's argument program, each word with where it is at entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Word { size: u8, from: Source },
    StartAgg,
    EndAgg,
    Dotdotdot,
    OffsetTooLarge,
}

/// How to read a function's arguments as the traceback prints them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgLayout {
    pub steps: Vec<Step>,
}

/// One printed item of a call's arguments, in the traceback's order; stored in recordings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceWord {
    /// A word of `size` bytes; None where escapade could not read it.
    Word {
        size: u8,
        value: Option<u64>,
    },
    StartAgg,
    EndAgg,
    Dotdotdot,
    OffsetTooLarge,
}

impl ArgLayout {
    /// The layout of a function from its `FUNCDATA_ArgInfo` bytes and its machine code (at
    /// `entry`); None when the program is malformed.
    pub fn new(arg_info: &[u8], code: &[u8], entry: u64) -> Option<ArgLayout> {
        let spills = morestack_spills(code, entry);
        let mut steps = Vec::new();
        let mut bytes = arg_info.iter().take(MAX_LEN);
        loop {
            let step = match *bytes.next()? {
                END_SEQ => break,
                START_AGG => Step::StartAgg,
                END_AGG => Step::EndAgg,
                DOTDOTDOT => Step::Dotdotdot,
                OFFSET_TOO_LARGE => Step::OffsetTooLarge,
                offset => {
                    let size = *bytes.next()?;
                    Step::Word {
                        size,
                        from: source(u64::from(offset), spills.as_deref()),
                    }
                }
            };
            steps.push(step);
        }
        Some(ArgLayout { steps })
    }

    /// Bytes of the argument area the stack-passed words reach.
    pub fn stack_bytes(&self) -> u64 {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Word {
                    size,
                    from: Source::Stack(off),
                } => Some(off + u64::from(*size)),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// The words of one call, from the integer argument registers and the copied argument
    /// area (`stack`, from SP+8).
    pub fn read(&self, regs: &[u64], stack: &[u8]) -> Vec<TraceWord> {
        self.steps
            .iter()
            .map(|step| match *step {
                Step::Word { size, from } => TraceWord::Word {
                    size,
                    value: word(from, size, regs, stack),
                },
                Step::StartAgg => TraceWord::StartAgg,
                Step::EndAgg => TraceWord::EndAgg,
                Step::Dotdotdot => TraceWord::Dotdotdot,
                Step::OffsetTooLarge => TraceWord::OffsetTooLarge,
            })
            .collect()
    }
}

/// A word's value, only its own bytes as printArgs prints it; None where it cannot be read.
fn word(from: Source, size: u8, regs: &[u64], stack: &[u8]) -> Option<u64> {
    let value = match from {
        Source::Int(i) => *regs.get(usize::from(i))?,
        Source::Stack(off) => {
            let start = usize::try_from(off).ok()?;
            let bytes = stack.get(start..start.checked_add(usize::from(size.min(8)))?)?;
            let mut word = [0; 8];
            word[..bytes.len()].copy_from_slice(bytes);
            u64::from_le_bytes(word)
        }
        Source::Float(_) | Source::Unmapped => return None,
    };
    Some(match size {
        8.. => value,
        _ => value & ((1u64 << (8 * u32::from(size))) - 1),
    })
}

/// The words as the traceback prints them, e.g. `0x2a, {0x4c492c, 0x5}, ...`; a word escapade
/// could not read prints as `?`.
pub fn text(words: &[TraceWord]) -> String {
    print_args(words.iter().map(|w| match w {
        TraceWord::Word { value: Some(v), .. } => Piece::Item(format!("{v:#x}")),
        TraceWord::Word { value: None, .. } => Piece::Item("?".into()),
        TraceWord::StartAgg => Piece::Open,
        TraceWord::EndAgg => Piece::Close,
        TraceWord::Dotdotdot => Piece::Item("...".into()),
        TraceWord::OffsetTooLarge => Piece::Item("_".into()),
    }))
}

/// Where each word comes from, in the traceback's layout: `RAX, {RBX, stack+0}, ...`.
impl std::fmt::Display for ArgLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&print_args(self.steps.iter().map(|s| match s {
            Step::Word { from, .. } => Piece::Item(from.to_string()),
            Step::StartAgg => Piece::Open,
            Step::EndAgg => Piece::Close,
            Step::Dotdotdot => Piece::Item("...".into()),
            Step::OffsetTooLarge => Piece::Item("_".into()),
        })))
    }
}

enum Piece {
    Item(String),
    Open,
    Close,
}

/// Joins the pieces as `printArgs` does: a comma before anything but a closing brace, except
/// right after an opening one or at the start.
fn print_args(pieces: impl Iterator<Item = Piece>) -> String {
    let mut s = String::new();
    let mut start = true;
    for piece in pieces {
        let comma = if start { "" } else { ", " };
        match piece {
            Piece::Open => {
                s.push_str(comma);
                s.push('{');
                start = true;
                continue;
            }
            Piece::Close => s.push('}'),
            Piece::Item(item) => s.push_str(&format!("{comma}{item}")),
        }
        start = false;
    }
    s
}

/// The words as JSON: `{"kind":"word","size":8,"value":42}` (`value` null when unreadable),
/// `{"kind":"aggregate","words":[...]}`, `{"kind":"dotdotdot"}`, `{"kind":"offset_too_large"}`.
pub fn json(words: &[TraceWord]) -> serde_json::Value {
    fn items(words: &mut std::slice::Iter<TraceWord>) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Some(w) = words.next() {
            out.push(match w {
                TraceWord::Word { size, value } => {
                    serde_json::json!({"kind": "word", "size": size, "value": value})
                }
                TraceWord::StartAgg => {
                    serde_json::json!({"kind": "aggregate", "words": items(words)})
                }
                TraceWord::EndAgg => break,
                TraceWord::Dotdotdot => serde_json::json!({"kind": "dotdotdot"}),
                TraceWord::OffsetTooLarge => serde_json::json!({"kind": "offset_too_large"}),
            });
        }
        out
    }
    serde_json::Value::Array(items(&mut words.iter()))
}

fn source(offset: u64, spills: Option<&[(u64, Source)]>) -> Source {
    let Some(spills) = spills else {
        // Without a morestack path there are no spills to tell a spill slot from a stack
        // argument; a function with no register arguments at all looks the same.
        return Source::Unmapped;
    };
    spills
        .iter()
        .find(|(off, _)| *off == offset)
        .map_or(Source::Stack(offset), |(_, reg)| *reg)
}

/// The register stores on the path to `runtime.morestack`, as (offset from SP+8, register);
/// None when the function has no stack check to find that path by.
fn morestack_spills(code: &[u8], entry: u64) -> Option<Vec<(u64, Source)>> {
    let decode_at = |addr: u64| {
        let start = usize::try_from(addr.checked_sub(entry)?).ok()?;
        Some(Decoder::with_ip(
            64,
            code.get(start..)?,
            addr,
            DecoderOptions::NONE,
        ))
    };
    let morestack = decode_at(entry)?
        .into_iter()
        .take(PROLOGUE_LEN)
        .find(|i| matches!(i.code(), Code::Jbe_rel8_64 | Code::Jbe_rel32_64))?
        .near_branch_target();
    let mut spills = Vec::new();
    for i in decode_at(morestack)?.into_iter().take(MAX_SPILLS + 1) {
        if i.flow_control() == FlowControl::Call {
            return Some(spills);
        }
        // `MOV [RSP+d], reg` (MOVQ/L/W/B) or `MOVSD`/`MOVSS [RSP+d], xmm`; the frame is not
        // set up yet, so RSP is the entry SP and the argument area starts at RSP+8.
        let stored = (i.op_count() == 2
            && i.op0_kind() == OpKind::Memory
            && i.memory_base() == Register::RSP
            && i.memory_index() == Register::None
            && i.op1_kind() == OpKind::Register)
            .then(|| i.op1_register())?;
        let from = match stored {
            r if r.is_xmm() => Source::Float(r.number() as u8),
            r => Source::Int(
                INT_ARG_REGISTERS
                    .iter()
                    .position(|&g| g == r.full_register())
                    .and_then(|p| u8::try_from(p).ok())?,
            ),
        };
        spills.push((i.memory_displacement64().checked_sub(8)?, from));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_as_print_args() {
        let w = |v| TraceWord::Word {
            size: 8,
            value: Some(v),
        };
        let words = [
            w(0x63),
            TraceWord::StartAgg,
            w(0x4c492c),
            w(5),
            TraceWord::EndAgg,
            TraceWord::StartAgg,
            TraceWord::EndAgg,
            TraceWord::StartAgg,
            w(0xff),
            TraceWord::Dotdotdot,
            TraceWord::EndAgg,
            TraceWord::Dotdotdot,
        ];
        assert_eq!(text(&words), "0x63, {0x4c492c, 0x5}, {}, {0xff, ...}, ...");
    }
}
