//! Where each uprobe sits in a function's machine code.
//!
//! The obvious spot, a Go function's first instruction, is the expensive one: it is almost
//! always `CMP RSP, [R14+0x10]`, which the kernel cannot emulate, so every hit single-steps it
//! out of line (~10 us). Conditional branches, `JMP` and `CALL` are emulated (~0.5 us); `RET`
//! is not (BENCHMARKS.md), so return probes pay the single step.
//! Every splittable Go function (amd64, register ABI) opens with a stack-bound check ending in a
//! `JBE` to its `morestack` call, and nothing before that `JBE` touches the argument registers,
//! RSP or the return address, so a probe there sees exactly what an entry probe would, twenty
//! times cheaper. The check is emitted by `stacksplit` in `cmd/internal/obj/x86/obj6.go`
//! (identical in Go 1.22 and 1.26), where `framesize` counts locals, outgoing arguments and
//! the saved frame pointer:
//!
//! | framesize (fs)      | sequence                                                          |
//! |---------------------|-------------------------------------------------------------------|
//! | <= 128 (StackSmall) | `CMP RSP, [R14+0x10]; JBE m`                                      |
//! | <= 4096 (StackBig)  | `LEA R12, [RSP-(fs-128)]; CMP R12, [R14+0x10]; JBE m`             |
//! | > 4096              | `MOV R12, RSP; SUB R12, fs-128; JB m; CMP R12, [R14+0x10]; JBE m` |
//!
//! `m` is the `morestack` call after the body, which jumps back to the check. ABI0 (assembly)
//! functions first load g into R14 from TLS (one instruction, two in PIE), and
//! `//go:systemstack` runtime functions compare against `[R14+0x18]` (stackguard1). Functions
//! the compiler marks nosplit (leaves with frames under 128 bytes) and `//go:nosplit` ones have
//! no check: their entry probe has to pay for the single step, or sit on their call sites (see
//! [`call_sites`]).
//!
//! Returns are probed on every `RET` rather than with uretprobes, which rewrite the return
//! address on the stack and break when Go moves the stack. A uprobe program cannot execute the
//! `RET` itself either: this kernel's verifier refuses writes to `pt_regs.ip`.

use std::fmt;

use iced_x86::{
    Code, Decoder, DecoderError, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory,
    OpAccess, OpKind, Register,
};

/// Where the probes for one function go. Addresses are the same kind as `entry` passed in
/// (link-time vaddr).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub entry: EntryProbe,
    /// Address of every RET instruction in the function body.
    pub returns: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryProbe {
    /// On the conditional branch of the stack-bound check; emulated by the kernel (fast). The
    /// probe must drop hits where CF|ZF is set: the branch is then taken, the function calls
    /// morestack and starts over, and the retry hits the probe again.
    StackCheckBranch { addr: u64 },
    /// On the first instruction: single-stepped by the kernel (slow, ~10 us per hit).
    FirstInstruction { addr: u64, reason: SlowReason },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowReason {
    /// No stack-bound check was recognised: a leaf or nosplit function, or a prologue this
    /// module does not know (such as the `-d=maymorestack` debug hook's).
    NoStackCheck,
    /// The user asked for the entry placement.
    Forced,
}

impl EntryProbe {
    pub fn addr(&self) -> u64 {
        match *self {
            EntryProbe::StackCheckBranch { addr } | EntryProbe::FirstInstruction { addr, .. } => {
                addr
            }
        }
    }

    pub fn is_fast(&self) -> bool {
        matches!(self, EntryProbe::StackCheckBranch { .. })
    }
}

impl fmt::Display for SlowReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlowReason::NoStackCheck => "no stack check: leaf or nosplit",
            SlowReason::Forced => "entry placement forced",
        })
    }
}

impl fmt::Display for EntryProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryProbe::StackCheckBranch { addr } => {
                write!(f, "fast: stack-check JBE at {addr:#x}")
            }
            EntryProbe::FirstInstruction { addr, reason } => {
                write!(f, "slow: first instruction at {addr:#x} ({reason})")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("function at {entry:#x} has no code")]
    Empty { entry: u64 },
}

/// `g.stackguard0`, which ordinary functions check, and `g.stackguard1`, which `//go:systemstack`
/// runtime functions check so that running them on a goroutine stack ends in `morestackc`'s
/// throw. Either way the `JBE` is taken only when the call does not go ahead.
const STACKGUARDS: [u64; 2] = [0x10, 0x18];

/// The longest prologue before the `JBE`: the huge-frame sequence (4 instructions) behind a
/// two-instruction TLS load of g in a PIE ABI0 function, plus slack.
const PROLOGUE_LEN: usize = 8;

/// Disassemble one function's code (bytes from entry to end) and place its probes.
///
/// Decoding is linear, which is exact for Go code (no data in `.text`; the INT3 padding after a
/// function decodes harmlessly). Undecodable bytes are skipped one at a time and logged.
///
/// Only `RET`s count as returns. A function that leaves through a tail call (`JMP` to another
/// function) returns through the callee's `RET`, so tracing its returns needs the callee traced
/// too. The compiler emits tail calls only in generated wrappers: ABI0 wrappers of functions
/// without parameters or results and, in newer toolchains (1.26, not 1.22), the `(*Outer).M`
/// wrapper of a method promoted from an embedded struct whose `(*Inner).M` is not inlinable.
/// Hand-written runtime assembly also tail-calls.
pub fn place(code: &[u8], entry: u64) -> Result<Placement, PlacementError> {
    if code.is_empty() {
        return Err(PlacementError::Empty { entry });
    }
    let mut insns = Linear::new(code, entry);
    let prologue: Vec<Instruction> = insns.by_ref().take(PROLOGUE_LEN).collect();
    let entry_probe = match stack_check_branch(&prologue) {
        Some(addr) => EntryProbe::StackCheckBranch { addr },
        None => EntryProbe::FirstInstruction {
            addr: entry,
            reason: SlowReason::NoStackCheck,
        },
    };
    let returns = prologue
        .iter()
        .copied()
        .chain(insns.by_ref())
        .filter(|i| matches!(i.code(), Code::Retnq | Code::Retnq_imm16))
        .map(|i| i.ip())
        .collect();
    insns.log_skipped("place");
    Ok(Placement {
        entry: entry_probe,
        returns,
    })
}

/// Every direct `CALL rel32` in `text` (starting at vaddr `text_addr`) whose target is `target`,
/// for probing a leaf function at its call sites. Indirect calls (closures, interface methods)
/// are not found.
pub fn call_sites(text: &[u8], text_addr: u64, target: u64) -> Vec<u64> {
    let mut insns = Linear::new(text, text_addr);
    let sites = insns
        .by_ref()
        .filter(|i| i.code() == Code::Call_rel32_64 && i.near_branch_target() == target)
        .map(|i| i.ip())
        .collect();
    insns.log_skipped("call_sites");
    sites
}

/// A function of the runtime's allocator and where its type argument is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocator {
    pub entry: u64,
    /// The integer argument register holding the `*_type`: 0 (RAX) for `newobject(typ)`, 1
    /// (RBX) for `mallocgc(size, typ, needzero)` and its size-specialized variants.
    pub type_arg: usize,
}

/// A function's own call to the allocator: how the compiler heap-allocates a variable that
/// escapes, such as a parameter whose address outlives the call ("moved to heap").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocationCall {
    pub call: u64,
    /// The instruction after the call, where RAX holds the new object.
    pub after: u64,
    /// The type descriptor loaded for the call (`LEAQ type:T(SB), AX`), when the instructions
    /// just before it say.
    pub type_addr: Option<u64>,
}

/// How far before an allocator call to look for the `LEA` of its type.
const TYPE_LOAD_WINDOW: usize = 4;

/// Every direct call to one of `allocators` in `code` (a function at `entry`).
pub fn allocation_calls(code: &[u8], entry: u64, allocators: &[Allocator]) -> Vec<AllocationCall> {
    let mut insns = Linear::new(code, entry);
    let all: Vec<Instruction> = insns.by_ref().collect();
    insns.log_skipped("allocation_calls");
    all.iter()
        .enumerate()
        .filter(|(_, i)| i.code() == Code::Call_rel32_64)
        .filter_map(|(n, call)| {
            let allocator = allocators
                .iter()
                .find(|a| a.entry == call.near_branch_target())?;
            let reg = [Register::RAX, Register::RBX].get(allocator.type_arg)?;
            let before = &all[n.saturating_sub(TYPE_LOAD_WINDOW)..n];
            // The last write to the register before the call decides the argument.
            let type_addr = before
                .iter()
                .rev()
                .find(|i| i.op0_kind() == OpKind::Register && i.op0_register() == *reg)
                .filter(|i| i.code() == Code::Lea_r64_m && i.is_ip_rel_memory_operand())
                .map(|i| i.ip_rel_memory_address());
            Some(AllocationCall {
                call: call.ip(),
                after: call.next_ip(),
                type_addr,
            })
        })
        .collect()
}

/// The `JBE` of the stack-bound check, if `prologue` (the first instructions) opens with one
/// that leaves the entry state intact up to the `JBE`.
fn stack_check_branch(prologue: &[Instruction]) -> Option<u64> {
    let cmp = prologue.iter().position(is_stackguard_cmp)?;
    let jbe = prologue
        .get(cmp + 1)
        .filter(|i| matches!(i.code(), Code::Jbe_rel8_64 | Code::Jbe_rel32_64))?;
    let mut info = InstructionInfoFactory::new();
    prologue[..cmp]
        .iter()
        .all(|i| keeps_entry_state(&mut info, i, jbe.near_branch_target()))
        .then_some(jbe.ip())
}

/// `CMP RSP, [R14+guard]` (small frames) or `CMP R12, [R14+guard]` (R12 = RSP - framesize).
fn is_stackguard_cmp(i: &Instruction) -> bool {
    i.code() == Code::Cmp_r64_rm64
        && matches!(i.op0_register(), Register::RSP | Register::R12)
        && i.op1_kind() == OpKind::Memory
        && i.memory_base() == Register::R14
        && i.memory_index() == Register::None
        && i.memory_segment() == Register::DS
        && STACKGUARDS.contains(&i.memory_displacement64())
}

/// Whether `i`, before the stack check's `JBE`, preserves what the entry probe reads: it writes
/// only the scratch registers of the check (R12, and R14 when an ABI0 function loads g), writes
/// no memory, and branches, if at all, only to `morestack` like the `JBE` (the huge-frame
/// wraparound check), after which the function starts over.
fn keeps_entry_state(info: &mut InstructionInfoFactory, i: &Instruction, morestack: u64) -> bool {
    let flow_ok = match i.flow_control() {
        FlowControl::Next => true,
        FlowControl::ConditionalBranch => i.near_branch_target() == morestack,
        _ => false,
    };
    let info = info.info(i);
    let writes = |access: OpAccess| {
        matches!(
            access,
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        )
    };
    flow_ok
        && info.used_registers().iter().all(|r| {
            !writes(r.access())
                || matches!(r.register().full_register(), Register::R12 | Register::R14)
        })
        && info.used_memory().iter().all(|m| !writes(m.access()))
}

/// Linear sweep that steps over undecodable bytes instead of stopping.
pub(crate) struct Linear<'a> {
    decoder: Decoder<'a>,
    start: u64,
    skipped: usize,
}

impl<'a> Linear<'a> {
    pub(crate) fn new(code: &'a [u8], addr: u64) -> Self {
        Linear {
            decoder: Decoder::with_ip(64, code, addr, DecoderOptions::NONE),
            start: addr,
            skipped: 0,
        }
    }

    pub(crate) fn log_skipped(&self, what: &str) {
        if self.skipped > 0 {
            tracing::debug!(
                "{what}: skipped {} undecodable bytes in code at {:#x}",
                self.skipped,
                self.start
            );
        }
    }
}

impl Iterator for Linear<'_> {
    type Item = Instruction;

    fn next(&mut self) -> Option<Instruction> {
        while self.decoder.can_decode() {
            let (position, ip) = (self.decoder.position(), self.decoder.ip());
            let insn = self.decoder.decode();
            if !insn.is_invalid() {
                return Some(insn);
            }
            // A truncated instruction at the end is the end of the code, not garbage.
            if self.decoder.last_error() == DecoderError::NoMoreBytes {
                return None;
            }
            self.skipped += 1;
            self.decoder
                .set_position(position + 1)
                .expect("position + 1 is within the code: can_decode held");
            self.decoder.set_ip(ip + 1);
        }
        None
    }
}
