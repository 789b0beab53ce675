//! Whether every eBPF program fits the BPF stack of kernels without private stacks, worked out
//! from the embedded objects alone, so that the answer is the same on every machine.
//!
//! Kernels before 6.14 (and some 6.18 machines) sum the stack frames along each call chain of
//! a program, main program and subprograms, and refuse a chain over 512 bytes; 6.1 rounds each
//! frame up to 32 bytes, at least 32 (`check_max_stack_depth` in kernel/bpf/verifier.c). A
//! frame's size here is the deepest byte below `r10` its code can touch, so it bounds what the
//! verifier measures in every configuration the loader patches the object's globals for.

use std::collections::{BTreeMap, HashMap};

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex, SymbolKind};

/// What the strictest kernel allows a chain.
pub const KERNEL_LIMIT: u64 = 512;

/// What escapade's programs may use, below [`KERNEL_LIMIT`] so that a compiler update that
/// grows a frame a little does not make a program unloadable.
pub const BUDGET: u64 = 448;

const INSN: usize = 8;
const FRAME_POINTER: u8 = 10;

/// A function of the object: a program or a subprogram it calls.
#[derive(Debug)]
pub struct Function {
    /// Bytes below `r10` its own code reaches.
    pub frame: u64,
    /// Functions it calls (bpf-to-bpf), by name.
    pub calls: Vec<String>,
}

impl Function {
    /// The frame as the strictest kernel charges it.
    pub fn charged(&self) -> u64 {
        self.frame.max(1).next_multiple_of(32)
    }
}

/// A call chain from a program down to a leaf, with what it is charged.
#[derive(Debug)]
pub struct Chain {
    pub frames: Vec<(String, u64)>,
    pub charged: u64,
}

impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>4} bytes:", self.charged)?;
        for (i, (name, charged)) in self.frames.iter().enumerate() {
            let arrow = if i == 0 { " " } else { " -> " };
            write!(f, "{arrow}{} ({charged})", readable(name))?;
        }
        Ok(())
    }
}

/// `calls::try_record` for the Rust v0 symbol `_RNvNtCs..._10probe_ebpf5calls10try_record`:
/// the path's segments after the crate, each written as its length and its text. Other names
/// (programs, `memset`) are kept.
fn readable(symbol: &str) -> String {
    let Some((_, mut rest)) = symbol.split_once("probe_ebpf") else {
        return symbol.to_string();
    };
    let mut segments = Vec::new();
    while let Some(digits) = rest.find(|c: char| !c.is_ascii_digit()).filter(|&n| n > 0) {
        let Ok(len) = rest[..digits].parse::<usize>() else {
            break;
        };
        let Some(segment) = rest.get(digits..digits + len) else {
            break;
        };
        segments.push(segment);
        rest = &rest[digits + len..];
    }
    if segments.is_empty() {
        symbol.to_string()
    } else {
        segments.join("::")
    }
}

/// The functions of a BPF ELF object, by name.
pub fn functions(elf: &[u8]) -> anyhow::Result<BTreeMap<String, Function>> {
    let file = object::File::parse(elf)?;
    // Where each function starts: (section, offset) -> name.
    let mut starts: HashMap<(SectionIndex, u64), String> = HashMap::new();
    let mut bodies = Vec::new();
    for (symbol, section) in function_symbols(&file) {
        let name = symbol.name()?.to_string();
        starts.insert((section, symbol.address()), name.clone());
        bodies.push((name, section, symbol.address(), symbol.size()));
    }
    let mut functions = BTreeMap::new();
    for (name, section_index, start, size) in bodies {
        let section = file.section_by_index(section_index)?;
        let data = section.data()?;
        let code = data
            .get(start as usize..(start + size) as usize)
            .ok_or_else(|| anyhow::anyhow!("{name} lies outside its section"))?;
        // Calls to another section carry a relocation naming their target.
        let relocated: HashMap<u64, (SectionIndex, u64)> = section
            .relocations()
            .filter_map(|(offset, relocation)| {
                let RelocationTarget::Symbol(index) = relocation.target() else {
                    return None;
                };
                let symbol = file.symbol_by_index(index).ok()?;
                Some((offset, (symbol.section_index()?, symbol.address())))
            })
            .collect();
        let (frame, call_offsets) = scan(code);
        let mut calls = Vec::new();
        for (at, imm) in call_offsets {
            let offset = start + at as u64;
            let target = match relocated.get(&offset) {
                // A call through a section symbol keeps the offset into it in `imm`.
                Some(&(section, address)) => (section, address + ((imm + 1) * INSN as i64) as u64),
                None => (
                    section_index,
                    (offset as i64 + (imm + 1) * INSN as i64) as u64,
                ),
            };
            let callee = starts.get(&target).ok_or_else(|| {
                anyhow::anyhow!("{name} calls a function at {target:?} that no symbol names")
            })?;
            if !calls.contains(callee) {
                calls.push(callee.clone());
            }
        }
        functions.insert(name, Function { frame, calls });
    }
    Ok(functions)
}

/// The deepest byte below `r10` that `code` touches, and its bpf-to-bpf calls (offset in
/// `code`, immediate). Registers are followed in program order: LLVM derives stack pointers
/// right before use (`rX = r10; rX += -N`), and a register it keeps longer is set before the
/// code that uses it.
fn scan(code: &[u8]) -> (u64, Vec<(usize, i64)>) {
    // For each register, its offset from r10 when it holds a stack address.
    let mut from_fp: [Option<i64>; 11] = [None; 11];
    from_fp[FRAME_POINTER as usize] = Some(0);
    let mut deepest: i64 = 0;
    let mut calls = Vec::new();
    let mut at = 0;
    while at + INSN <= code.len() {
        let insn = &code[at..at + INSN];
        let opcode = insn[0];
        let dst = (insn[1] & 0x0f) as usize;
        let src = (insn[1] >> 4) as usize;
        let off = i64::from(i16::from_le_bytes([insn[2], insn[3]]));
        let imm = i64::from(i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]));
        let mut reach = |base: Option<i64>| {
            if let Some(base) = base {
                deepest = deepest.min(base + off);
            }
        };
        let class = opcode & 0x07;
        match class {
            // LDX: dst = *(src + off)
            0x01 => {
                reach(from_fp.get(src).copied().flatten());
                if dst < 10 {
                    from_fp[dst] = None;
                }
            }
            // ST, STX: *(dst + off) = imm or src (atomics too)
            0x02 | 0x03 => {
                reach(from_fp.get(dst).copied().flatten());
                // An atomic fetch writes its result back into src.
                if class == 0x03 && opcode & 0xe0 == 0xc0 && imm & 0x01 != 0 && src < 10 {
                    from_fp[src] = None;
                }
            }
            // ALU64
            0x07 if dst < 10 => {
                from_fp[dst] = match opcode {
                    0xbf => from_fp.get(src).copied().flatten(), // mov dst, src
                    0x07 => from_fp[dst].map(|base| base + imm), // add dst, imm
                    0x17 => from_fp[dst].map(|base| base - imm), // sub dst, imm
                    _ => None,
                };
            }
            // ALU (32-bit) makes a scalar of dst.
            0x04 if dst < 10 => from_fp[dst] = None,
            // LD: the 64-bit immediate, which takes two slots.
            0x00 if opcode == 0x18 => {
                if dst < 10 {
                    from_fp[dst] = None;
                }
                at += INSN;
            }
            // JMP: calls clobber r0-r5.
            0x05 if opcode == 0x85 => {
                if src == 1 {
                    calls.push((at, imm));
                }
                for reg in &mut from_fp[..6] {
                    *reg = None;
                }
            }
            _ => {}
        }
        at += INSN;
    }
    (deepest.unsigned_abs(), calls)
}

/// Every call chain from each of `programs` (function names), deepest first.
pub fn chains(functions: &BTreeMap<String, Function>, programs: &[&str]) -> Vec<Chain> {
    fn walk(
        functions: &BTreeMap<String, Function>,
        name: &str,
        path: &mut Vec<(String, u64)>,
        out: &mut Vec<Chain>,
    ) {
        let Some(function) = functions.get(name) else {
            return;
        };
        // Recursion is refused by the verifier anyway; stop rather than loop.
        if path.iter().any(|(seen, _)| seen == name) {
            return;
        }
        path.push((name.to_string(), function.charged()));
        if function.calls.is_empty() {
            out.push(Chain {
                frames: path.clone(),
                charged: path.iter().map(|(_, charged)| charged).sum(),
            });
        }
        for callee in &function.calls {
            walk(functions, callee, path, out);
        }
        path.pop();
    }
    let mut out = Vec::new();
    for program in programs {
        walk(functions, program, &mut Vec::new(), &mut out);
    }
    out.sort_by_key(|chain| std::cmp::Reverse(chain.charged));
    out
}

/// The symbols of `file` that name code, with their section.
fn function_symbols<'data, 'file>(
    file: &'file object::File<'data>,
) -> impl Iterator<Item = (object::Symbol<'data, 'file>, SectionIndex)> {
    file.symbols()
        .filter(|symbol| symbol.kind() == SymbolKind::Text && symbol.size() != 0)
        .filter_map(|symbol| Some((symbol.section_index()?, symbol)))
        .map(|(section, symbol)| (symbol, section))
}

/// The programs of a BPF ELF object: functions in sections other than `.text`.
pub fn programs(elf: &[u8]) -> anyhow::Result<Vec<String>> {
    let file = object::File::parse(elf)?;
    let mut programs = Vec::new();
    for (symbol, section) in function_symbols(&file) {
        if file.section_by_index(section)?.name()? != ".text" {
            programs.push(symbol.name()?.to_string());
        }
    }
    Ok(programs)
}

/// Panics, listing the chains, when one of `elf`'s call chains is over [`BUDGET`].
pub fn assert_fits(object_name: &str, elf: &[u8]) {
    let functions = functions(elf).unwrap();
    let programs = programs(elf).unwrap();
    assert!(!programs.is_empty(), "{object_name}: no programs found");
    let names: Vec<&str> = programs.iter().map(String::as_str).collect();
    let chains = chains(&functions, &names);
    println!("{object_name}: each program's call chains, as kernel 6.1 charges them:");
    for chain in &chains {
        println!("  {chain}");
    }
    let over: Vec<String> = chains
        .iter()
        .filter(|chain| chain.charged > BUDGET)
        .map(ToString::to_string)
        .collect();
    assert!(
        over.is_empty(),
        "{object_name}: call chains over the {BUDGET}-byte budget (kernels without private \
         BPF stacks refuse more than {KERNEL_LIMIT}):\n  {}",
        over.join("\n  ")
    );
}

mod tests {
    use super::*;

    #[test]
    fn every_call_chain_fits_the_classic_bpf_stack() {
        assert_fits("probe-ebpf", super::super::attach::PROBES);
    }

    #[test]
    fn readable_names() {
        assert_eq!(
            readable("_RNvNtCshKigaaxo0jk_10probe_ebpf5calls10try_record"),
            "calls::try_record"
        );
        assert_eq!(
            readable("_RNvCshKigaaxo0jk_10probe_ebpf8register"),
            "register"
        );
        assert_eq!(readable("go_entry"), "go_entry");
    }

    /// The scan sees a frame reached directly and through a derived pointer, and a call.
    #[test]
    fn scan_finds_frame_and_calls() {
        let insn = |opcode: u8, dst: u8, src: u8, off: i16, imm: i32| {
            let mut bytes = vec![opcode, dst | (src << 4)];
            bytes.extend(off.to_le_bytes());
            bytes.extend(imm.to_le_bytes());
            bytes
        };
        let code: Vec<u8> = [
            insn(0x7a, 10, 0, -16, 0), // *(u64 *)(r10 - 16) = 0
            insn(0xbf, 1, 10, 0, 0),   // r1 = r10
            insn(0x07, 1, 0, 0, -200), // r1 += -200
            insn(0x7b, 1, 2, 8, 0),    // *(u64 *)(r1 + 8) = r2: reaches 192
            insn(0x85, 0, 1, 0, 3),    // call +3
            insn(0x79, 0, 1, -300, 0), // r0 = *(u64 *)(r1 - 300): r1 was clobbered
            insn(0x95, 0, 0, 0, 0),    // exit
        ]
        .concat();
        assert_eq!(scan(&code), (192, vec![(4 * INSN, 3)]));
    }
}
