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
    Code, FlowControl, Instruction, InstructionInfoFactory, OpAccess, OpKind, Register,
};

use crate::amd64::{INT_ARG_REGISTERS, Linear};

/// Where the probes for one function go. Addresses are the same kind as `entry` passed in
/// (link-time vaddr).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub entry: EntryProbe,
    /// Where each `RET` in the function body is probed: on the `RET`, or on a one-byte `NOP`
    /// right before it, which the kernel emulates instead of single-stepping.
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
    let body: Vec<Instruction> = prologue.iter().copied().chain(insns.by_ref()).collect();
    let returns = return_probes(&body);
    insns.log_skipped("place");
    Ok(Placement {
        entry: entry_probe,
        returns,
    })
}

/// Where to probe each `RET` of a function's `body`. The compiler leaves a one-byte `NOP` (an
/// inline mark) right before about 3% of them; where nothing can jump to the `RET` itself, a
/// probe on that `NOP` sees the same registers and stack, twelve times cheaper (BENCHMARKS.md).
fn return_probes(body: &[Instruction]) -> Vec<u64> {
    // A jump table could land anywhere.
    let indirect = body
        .iter()
        .any(|i| i.flow_control() == FlowControl::IndirectBranch);
    let targets: std::collections::HashSet<u64> = body
        .iter()
        .filter(|i| i.is_jcc_short_or_near() || i.is_jmp_short_or_near())
        .map(|i| i.near_branch_target())
        .collect();
    body.iter()
        .enumerate()
        .filter(|(_, i)| matches!(i.code(), Code::Retnq | Code::Retnq_imm16))
        .map(|(n, ret)| {
            let nop = n
                .checked_sub(1)
                .map(|p| &body[p])
                .filter(|nop| nop.code() == Code::Nopd && nop.next_ip() == ret.ip())
                .filter(|_| !indirect && !targets.contains(&ret.ip()));
            nop.map_or(ret.ip(), |nop| nop.ip())
        })
        .collect()
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

/// What the caller must still hold at a return-site probe for the callee's results to be read
/// there: the integer result registers (by index in Go's order, RAX, RBX, ...) with how many
/// of their low bytes hold a result, and the bytes of the caller's outgoing argument area that
/// hold stack-assigned results.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultsNeeded {
    pub registers: Vec<(usize, u64)>,
    pub stack: std::ops::Range<u64>,
}

/// A direct call's return seen in the caller: the first instruction after the call that the
/// kernel emulates (~0.5 us a hit, against ~10 us on the callee's single-stepped `RET`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnSite {
    /// The instruction after the `CALL`, where the call returns.
    pub returns_to: u64,
    /// The probed instruction: everything from `returns_to` up to it runs straight through.
    pub probe: u64,
    /// Per needed result register (in [`ResultsNeeded::registers`] order), where its value is
    /// when the probe fires.
    pub results: Vec<ResultWord>,
}

/// Where a result word is when a return-site probe fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultWord {
    /// In this register (an index into `probe_common::RESULT_REGISTERS`).
    Register(usize),
    /// In the caller's frame, this many bytes above its SP.
    Stack(u64),
    /// Overwritten before anything read it: the caller never saw the value.
    Discarded,
}

/// Why a call site's return is probed on the callee's `RET` instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoReturnSite {
    /// A `RET`, an indirect branch or a trap comes before any instruction the kernel emulates.
    NoEmulatedInstruction,
    /// SP or R14 (g) changes first: the probe could not tell the call's goroutine or frame.
    FrameChanges,
    /// A result is read and then overwritten before the probe: the caller used a value the
    /// probe cannot see.
    ResultConsumed,
    /// The caller overwrites its stack-assigned results before the probe.
    StackResultOverwritten,
    /// The instruction is a call that carries another probe's entry (`--placement callsites`).
    EntryProbeThere,
}

impl fmt::Display for NoReturnSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoReturnSite::NoEmulatedInstruction => "no emulated instruction before a RET or jump",
            NoReturnSite::FrameChanges => "SP or g changes after the return",
            NoReturnSite::ResultConsumed => "a result is used and overwritten at once",
            NoReturnSite::StackResultOverwritten => "a stack result is overwritten at once",
            NoReturnSite::EntryProbeThere => "the next call's entry probe sits there",
        })
    }
}

/// How far after a call's return to look for an emulated instruction: 95% of return sites
/// have one within 9 instructions (measured on the demo binary, runtime included).
const RETURN_SITE_WINDOW: usize = 24;

/// The registers of `probe_common::RESULT_REGISTERS`, in its order: the argument registers,
/// then the others a caller may move a result to.
const RESULT_REGISTERS: [Register; probe_common::RESULT_REGISTERS] = {
    let mut all = [Register::None; probe_common::RESULT_REGISTERS];
    let mut i = 0;
    while i < INT_ARG_REGISTERS.len() {
        all[i] = INT_ARG_REGISTERS[i];
        i += 1;
    }
    let others = [
        Register::RDX,
        Register::RBP,
        Register::R12,
        Register::R13,
        Register::R15,
    ];
    let mut j = 0;
    while j < others.len() {
        all[INT_ARG_REGISTERS.len() + j] = others[j];
        j += 1;
    }
    all
};

/// Every direct `CALL rel32` in `text` (at vaddr `text_addr`) to one of `callees`, with where
/// its return can be probed in the caller, or why it cannot: `(callee, call address, site)`.
pub fn return_sites(
    text: &[u8],
    text_addr: u64,
    callees: &std::collections::HashMap<u64, ResultsNeeded>,
) -> Vec<(u64, u64, Result<ReturnSite, NoReturnSite>)> {
    let mut insns = Linear::new(text, text_addr);
    let calls: Vec<(u64, u64, u64)> = insns
        .by_ref()
        .filter(|i| i.code() == Code::Call_rel32_64)
        .filter(|i| callees.contains_key(&i.near_branch_target()))
        .map(|i| (i.near_branch_target(), i.ip(), i.next_ip()))
        .collect();
    insns.log_skipped("return_sites");
    let mut info = InstructionInfoFactory::new();
    calls
        .into_iter()
        .map(|(callee, call, returns_to)| {
            let code = &text[(returns_to - text_addr) as usize..];
            let after = Linear::new(code, returns_to).take(RETURN_SITE_WINDOW);
            let site = follow_results(&mut info, after, returns_to, &callees[&callee]);
            (callee, call, site)
        })
        .collect()
}

/// Walks straight-line code from a call's return to the first instruction the kernel emulates,
/// keeping track of where each result goes.
fn follow_results(
    info: &mut InstructionInfoFactory,
    code: impl Iterator<Item = Instruction>,
    returns_to: u64,
    needed: &ResultsNeeded,
) -> Result<ReturnSite, NoReturnSite> {
    let mut results: Vec<Tracked> = needed
        .registers
        .iter()
        .map(|&(r, bytes)| Tracked {
            places: vec![Place::Register(RESULT_REGISTERS[r])],
            bytes,
            read: false,
        })
        .collect();
    for i in code {
        if is_emulated(&i) {
            return Ok(ReturnSite {
                returns_to,
                probe: i.ip(),
                results: results
                    .iter()
                    .map(Tracked::word)
                    .collect::<Option<_>>()
                    .ok_or(NoReturnSite::ResultConsumed)?,
            });
        }
        if i.flow_control() != FlowControl::Next {
            return Err(NoReturnSite::NoEmulatedInstruction);
        }
        let used = info.info(&i);
        let writes = |access: OpAccess| {
            matches!(
                access,
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            )
        };
        let reads = |access: OpAccess| {
            matches!(
                access,
                OpAccess::Read | OpAccess::CondRead | OpAccess::ReadWrite | OpAccess::ReadCondWrite
            )
        };
        let written: Vec<Register> = used
            .used_registers()
            .iter()
            .filter(|r| writes(r.access()))
            .map(|r| r.register().full_register())
            .collect();
        if written
            .iter()
            .any(|r| matches!(r, Register::RSP | Register::R14))
        {
            return Err(NoReturnSite::FrameChanges);
        }
        // A stack store: only a plain RSP+disp operand names a slot this walk can follow.
        let mut stored: Option<std::ops::Range<u64>> = None;
        for m in used.used_memory().iter().filter(|m| writes(m.access())) {
            if m.base() != Register::RSP {
                // Go keeps spilled results in its own frame, which only RSP-relative code
                // writes.
                continue;
            }
            if m.index() != Register::None {
                return Err(NoReturnSite::FrameChanges);
            }
            let at = m.displacement();
            let slot = at..at + m.memory_size().size() as u64;
            if slot.start < needed.stack.end && needed.stack.start < slot.end {
                return Err(NoReturnSite::StackResultOverwritten);
            }
            stored = Some(slot);
        }
        let copy = copied_register(&i);
        for result in &mut results {
            let held = |place: &Place| match *place {
                Place::Register(r) => used
                    .used_registers()
                    .iter()
                    .any(|u| u.register().full_register() == r && reads(u.access())),
                Place::Stack(at) => used.used_memory().iter().any(|m| {
                    m.base() == Register::RSP
                        && reads(m.access())
                        && m.displacement() < at + 8
                        && at < m.displacement() + m.memory_size().size() as u64
                }),
            };
            // A move as wide as the value keeps it whole: not a use but a new place for it.
            let moved = copy.filter(|&(from, _, width)| {
                width >= result.bytes && result.places.contains(&Place::Register(from))
            });
            if moved.is_none() && result.places.iter().any(held) {
                result.read = true;
            }
            result.places.retain(|place| match place {
                Place::Register(r) => !written.contains(r),
                Place::Stack(at) => !stored
                    .as_ref()
                    .is_some_and(|s| s.start < at + 8 && *at < s.end),
            });
            match moved {
                Some((_, To::Register(r), _)) => result.places.push(Place::Register(r)),
                Some((_, To::Stack(at), _)) => result.places.push(Place::Stack(at)),
                None => {}
            }
        }
    }
    Err(NoReturnSite::NoEmulatedInstruction)
}

/// One result word on the walk after a return.
struct Tracked {
    /// Everywhere it is now.
    places: Vec<Place>,
    /// How many low bytes of the word the value takes.
    bytes: u64,
    /// Whether an instruction other than a move that keeps it whole has read it.
    read: bool,
}

impl Tracked {
    /// Where the probe reads it, or None when the caller used it and let it go.
    fn word(&self) -> Option<ResultWord> {
        let register = self.places.iter().find_map(|p| match p {
            Place::Register(r) => RESULT_REGISTERS.iter().position(|x| x == r),
            Place::Stack(_) => None,
        });
        let stack = self.places.iter().find_map(|p| match p {
            Place::Stack(at) => Some(*at),
            Place::Register(_) => None,
        });
        match (register, stack) {
            (Some(r), _) => Some(ResultWord::Register(r)),
            (None, Some(at)) => Some(ResultWord::Stack(at)),
            (None, None) if self.read => None,
            (None, None) => Some(ResultWord::Discarded),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Register(Register),
    Stack(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum To {
    Register(Register),
    Stack(u64),
}

/// A register's low bytes copied to another register or to an RSP-relative slot: the source
/// (full) register, the destination, and how many bytes the copy keeps.
fn copied_register(i: &Instruction) -> Option<(Register, To, u64)> {
    let width = match i.code() {
        Code::Mov_r64_rm64 | Code::Mov_rm64_r64 => 8,
        Code::Mov_r32_rm32 | Code::Mov_rm32_r32 => 4,
        Code::Mov_r16_rm16 | Code::Mov_rm16_r16 => 2,
        Code::Mov_r8_rm8 | Code::Mov_rm8_r8 => 1,
        Code::Movzx_r32_rm8 | Code::Movzx_r64_rm8 | Code::Movsx_r32_rm8 | Code::Movsx_r64_rm8 => 1,
        Code::Movzx_r32_rm16
        | Code::Movzx_r64_rm16
        | Code::Movsx_r32_rm16
        | Code::Movsx_r64_rm16 => 2,
        Code::Movsxd_r64_rm32 => 4,
        _ => return None,
    };
    if i.op1_kind() != OpKind::Register
        || matches!(
            i.op1_register(),
            Register::AH | Register::BH | Register::CH | Register::DH
        )
    {
        return None;
    }
    let from = i.op1_register().full_register();
    let to = match i.op0_kind() {
        OpKind::Register => To::Register(i.op0_register().full_register()),
        OpKind::Memory
            if i.memory_base() == Register::RSP && i.memory_index() == Register::None =>
        {
            To::Stack(i.memory_displacement64())
        }
        _ => return None,
    };
    Some((from, to, width))
}

/// Whether the kernel emulates `i` at a uprobe rather than single-stepping it
/// (arch/x86/kernel/uprobes.c: `branch_setup_xol_ops`, `push_setup_xol_ops`).
fn is_emulated(i: &Instruction) -> bool {
    i.is_jcc_short_or_near()
        || i.is_jmp_short_or_near()
        || i.code() == Code::Call_rel32_64
        || matches!(
            i.code(),
            Code::Nopd | Code::Nopw | Code::Nopq | Code::Push_r64
        )
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
