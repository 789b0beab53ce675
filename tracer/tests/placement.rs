//! Probe placement against real Go binaries: every prologue shape in `tests/go/prologues.go`,
//! built with every installed toolchain, and every function of those binaries.

mod common;

use std::collections::BTreeMap;

use escapade::probes::placement::{EntryProbe, SlowReason, call_sites, place};
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, OpKind, Register};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// The text of one Go binary, by function.
struct Binary {
    /// Toolchain and build mode, for assertion messages.
    label: String,
    text_addr: u64,
    text: Vec<u8>,
    /// Function name -> (address, size), from the ELF symbol table.
    funcs: BTreeMap<String, (u64, u64)>,
}

/// `prologues` built with every toolchain, as an executable and as PIE (where ABI0 functions
/// load g from TLS in two instructions).
fn binaries() -> Vec<Binary> {
    let mut bins = Vec::new();
    for go in common::toolchains() {
        for (mode, flags) in [("exe", &[][..]), ("pie", &["-buildmode=pie"])] {
            let path = common::build(&go, "prologues", flags);
            let data = std::fs::read(&path).unwrap();
            let file = object::File::parse(&*data).unwrap();
            let section = file.section_by_name(".text").expect(".text");
            let funcs = file
                .symbols()
                .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
                .map(|s| (s.name().unwrap().to_string(), (s.address(), s.size())))
                .collect();
            bins.push(Binary {
                label: format!("{} {mode}", go.version),
                text_addr: section.address(),
                text: section.data().unwrap().to_vec(),
                funcs,
            });
        }
    }
    bins
}

impl Binary {
    fn func(&self, name: &str) -> (u64, &[u8]) {
        let &(addr, size) = self
            .funcs
            .get(name)
            .unwrap_or_else(|| panic!("no symbol {name}"));
        let start = (addr - self.text_addr) as usize;
        (addr, &self.text[start..start + size as usize])
    }
}

fn decode(code: &[u8], addr: u64) -> Vec<Instruction> {
    Decoder::with_ip(64, code, addr, DecoderOptions::NONE)
        .into_iter()
        .collect()
}

fn is_stackguard0_cmp(i: &Instruction, reg: Register) -> bool {
    i.code() == Code::Cmp_r64_rm64
        && i.op0_register() == reg
        && i.op1_kind() == OpKind::Memory
        && i.memory_base() == Register::R14
        && i.memory_index() == Register::None
        && i.memory_displacement64() == 0x10
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    /// `CMP RSP, [R14+0x10]; JBE`
    Small,
    /// `LEA R12, [RSP-n]; CMP R12, [R14+0x10]; JBE`
    Large,
    /// `MOV R12, RSP; SUB R12, n; JB; CMP R12, [R14+0x10]; JBE`
    Huge,
}

/// Asserts `name` gets a fast entry probe on the JBE of a stack check of `shape`, and returns the
/// framesize (locals, outgoing arguments, saved BP) the check encodes, 0 for small frames.
fn assert_stack_check(bin: &Binary, name: &str, shape: Shape) -> u64 {
    let (entry, code) = bin.func(name);
    let placement = place(code, entry).unwrap();
    let EntryProbe::StackCheckBranch { addr } = placement.entry else {
        panic!(
            "{}: {name}: expected a fast probe, got {}",
            bin.label, placement.entry
        );
    };
    let insns = decode(code, entry);
    let at = insns
        .iter()
        .position(|i| i.ip() == addr)
        .unwrap_or_else(|| {
            panic!(
                "{}: {name}: {addr:#x} is not an instruction boundary",
                bin.label
            )
        });
    let ctx = format!("{}: {name}: {:?}", bin.label, &insns[..=at]);
    assert!(
        matches!(insns[at].code(), Code::Jbe_rel8_64 | Code::Jbe_rel32_64),
        "{ctx}"
    );
    let prologue: Vec<Code> = insns[..at].iter().map(Instruction::code).collect();
    match shape {
        Shape::Small => {
            assert_eq!(prologue, [Code::Cmp_r64_rm64], "{ctx}");
            assert!(is_stackguard0_cmp(&insns[0], Register::RSP), "{ctx}");
            0
        }
        Shape::Large => {
            assert_eq!(prologue, [Code::Lea_r64_m, Code::Cmp_r64_rm64], "{ctx}");
            let lea = &insns[0];
            assert_eq!(lea.op0_register(), Register::R12, "{ctx}");
            assert_eq!(lea.memory_base(), Register::RSP, "{ctx}");
            assert!(is_stackguard0_cmp(&insns[1], Register::R12), "{ctx}");
            128 + lea.memory_displacement64().wrapping_neg()
        }
        Shape::Huge => {
            assert_eq!(prologue.len(), 4, "{ctx}");
            let (mov, sub, jb, cmp) = (&insns[0], &insns[1], &insns[2], &insns[3]);
            assert_eq!(
                (mov.code(), mov.op0_register(), mov.op1_register()),
                (Code::Mov_rm64_r64, Register::R12, Register::RSP),
                "{ctx}"
            );
            assert!(
                matches!(sub.code(), Code::Sub_rm64_imm32 | Code::Sub_rm64_imm8)
                    && sub.op0_register() == Register::R12,
                "{ctx}"
            );
            assert!(
                matches!(jb.code(), Code::Jb_rel8_64 | Code::Jb_rel32_64),
                "{ctx}"
            );
            // The wraparound JB and the JBE both go to the morestack call.
            assert_eq!(
                jb.near_branch_target(),
                insns[at].near_branch_target(),
                "{ctx}"
            );
            assert!(is_stackguard0_cmp(cmp, Register::R12), "{ctx}");
            128 + sub.immediate64()
        }
    }
}

#[test]
fn stack_check_shapes_get_fast_probes() {
    for bin in binaries() {
        for name in [
            "main.smallFrame",
            "main.(*counter).Add",
            "main.makeAdder.func1",
            "main.maxOf[go.shape.int]",
            "main.maxOf[go.shape.float64]",
            "main.recurse",
            "main.classify",
        ] {
            assert_stack_check(&bin, name, Shape::Small);
        }
        let large = assert_stack_check(&bin, "main.largeFrame", Shape::Large);
        let huge = assert_stack_check(&bin, "main.hugeFrame", Shape::Huge);
        assert!((129..=4096).contains(&large), "{}: {large}", bin.label);
        assert!(huge > 4096, "{}: {huge}", bin.label);
        println!(
            "{}: largeFrame framesize {large}, hugeFrame framesize {huge}",
            bin.label
        );
    }
}

#[test]
fn leaf_gets_slow_probe_and_call_sites() {
    for bin in binaries() {
        let (leaf, code) = bin.func("main.leafAdd");
        let placement = place(code, leaf).unwrap();
        assert_eq!(
            placement.entry,
            EntryProbe::FirstInstruction {
                addr: leaf,
                reason: SlowReason::NoStackCheck
            },
            "{}",
            bin.label
        );
        assert_eq!(placement.returns.len(), 1, "{}", bin.label);

        let sites = call_sites(&bin.text, bin.text_addr, leaf);
        let (main, main_code) = bin.func("main.main");
        let in_main = main..main + main_code.len() as u64;
        assert!(
            sites.iter().any(|s| in_main.contains(s)),
            "{}: no call to leafAdd from main.main in {sites:x?}",
            bin.label
        );
        for &site in &sites {
            let at = (site - bin.text_addr) as usize;
            assert_eq!(bin.text[at], 0xE8, "{}: {site:#x}", bin.label);
            let rel = i32::from_le_bytes(bin.text[at + 1..at + 5].try_into().unwrap());
            assert_eq!(
                (site + 5).wrapping_add_signed(rel.into()),
                leaf,
                "{}: {site:#x}",
                bin.label
            );
        }
    }
}

#[test]
fn every_ret_is_found() {
    for bin in binaries() {
        let (entry, code) = bin.func("main.classify");
        let placement = place(code, entry).unwrap();
        // classify has four return statements; the compiler gives each exit block its own RET.
        assert!(
            placement.returns.len() >= 4,
            "{}: {:x?}",
            bin.label,
            placement.returns
        );
        let boundaries: Vec<u64> = decode(code, entry)
            .iter()
            .filter(|i| matches!(code[(i.ip() - entry) as usize], 0xC3 | 0xC2))
            .map(Instruction::ip)
            .collect();
        assert_eq!(placement.returns, boundaries, "{}", bin.label);
    }
}

/// Tail calls are not returns: newer compilers make a promoted method's wrapper JMP to the
/// method, and its returns are the method's own.
#[test]
fn tail_call_wrapper_has_no_returns() {
    for bin in binaries() {
        let (entry, code) = bin.func("main.(*outer).Bump");
        let (method, _) = bin.func("main.(*inner).Bump");
        let placement = place(code, entry).unwrap();
        let insns = decode(code, entry);
        let tail_calls = insns
            .iter()
            .any(|i| i.code() == Code::Jmp_rel32_64 && i.near_branch_target() == method);
        println!(
            "{}: (*outer).Bump {}, {} returns, tail call: {tail_calls}",
            bin.label,
            placement.entry,
            placement.returns.len()
        );
        assert_eq!(placement.returns.is_empty(), tail_calls, "{}", bin.label);
    }
}

#[test]
fn every_function_places() {
    for bin in binaries() {
        let (mut fast, mut rets, mut before_rets) = (0, 0, 0);
        for (name, &(entry, _)) in &bin.funcs {
            let (_, code) = bin.func(name);
            let placement = place(code, entry).unwrap_or_else(|e| panic!("{name}: {e}"));
            let end = entry + code.len() as u64;
            assert!(
                (entry..end).contains(&placement.entry.addr()),
                "{}: {name}: {}",
                bin.label,
                placement.entry
            );
            if placement.entry.is_fast() {
                fast += 1;
                let at = (placement.entry.addr() - entry) as usize;
                assert!(
                    code[at] == 0x76 || code[at..].starts_with(&[0x0F, 0x86]),
                    "{}: {name}: {}",
                    bin.label,
                    placement.entry
                );
            }
            // On the RET, or on a one-byte NOP right before it.
            for &ret in &placement.returns {
                match code[(ret - entry) as usize..] {
                    [0xC3 | 0xC2, ..] => rets += 1,
                    [0x90, 0xC3 | 0xC2, ..] => before_rets += 1,
                    _ => panic!("{}: {name}: RET at {ret:#x}", bin.label),
                }
            }
        }
        let total = bin.funcs.len();
        println!(
            "{}: {fast}/{total} functions ({:.1}%) get a fast entry probe; \
             {before_rets} of {} RETs are probed on the NOP before them",
            bin.label,
            100.0 * fast as f64 / total as f64,
            rets + before_rets
        );
        assert!(before_rets > 0, "{}: no RET probed on a NOP", bin.label);
        assert!(fast * 2 > total, "{}: only {fast}/{total} fast", bin.label);
    }
}

#[test]
fn empty_code_is_an_error_and_garbage_is_skipped() {
    assert!(place(&[], 0x1000).is_err());
    // 0x06 (PUSH ES) is invalid in 64-bit mode; decoding resumes at the next byte.
    let placement = place(&[0x06, 0xC3, 0xCC, 0xCC], 0x1000).unwrap();
    assert_eq!(placement.returns, [0x1001]);
    assert!(!placement.entry.is_fast());
}
