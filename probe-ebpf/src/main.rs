//! uprobes on traced Go functions (entries; returns on their `RET`s or at their callers'
//! return sites) and on the Go runtime (allocations, goroutines, stack growth, GC cycles).
//!
//! Each attachment's cookie carries a probe id (an index into `PROBE_CONFIGS`, mapped back to a
//! function by the tracer) and placement flags. Events go out through `EVENTS` without waking
//! the reader: it drains on a timer, and a probe only forces a wake-up when the buffer is filling.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod allocs;
mod calls;
mod cpu;
mod gc;
mod goroutines;
mod params;

use core::intrinsics::AtomicOrdering;

use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
    programs::ProbeContext,
};
use probe_common::{
    COOKIE_SKIP_IF_BELOW_OR_EQUAL, COUNTER_MORESTACK, COUNTERS, EFLAGS_CF, EFLAGS_ZF, EVENTS_BYTES,
    EVERY_PROCESS, GoOffsets, INT_ARG_REGS, InProcess, MAX_PROBES, ProbeConfig,
};

/// Wake the reader once this many bytes wait, so a burst does not overflow before the timer.
const WAKEUP_THRESHOLD: u64 = (EVENTS_BYTES / 2) as u64;

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// The flags of a hash map that takes kernel memory for its entries as they come, not for all
/// of them up front: a per-CPU map's `max_entries` times the node's CPUs is gigabytes on a
/// large node, for slots most sessions never fill. (Tracing programs may use such maps from
/// 6.1 on, which has the BPF memory allocator.)
pub(crate) const SIZED_BY_USE: u32 = aya_ebpf::bindings::BPF_F_NO_PREALLOC;

#[map]
pub(crate) static PROBE_CONFIGS: Array<ProbeConfig> = Array::with_max_entries(MAX_PROBES, 0);

/// One entry: the runtime offsets of the traced binary.
#[map]
pub(crate) static GO_OFFSETS: Array<GoOffsets> = Array::with_max_entries(1, 0);

#[map]
pub(crate) static PROBE_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);

/// The traced process; attachments are already scoped to it, this guards against PID reuse.
/// 0 when the probes are attached to the file ahead of the program's next process: then the
/// first process to hit one claims them, in `CLAIMED_TGID`. `EVERY_PROCESS` when they serve
/// every process of the file, whose state the maps key by TGID.
// SAFETY: no other symbol of the object has this name; the loader sets it by name.
#[unsafe(no_mangle)]
static TARGET_TGID: u32 = 0;

#[map]
static CLAIMED_TGID: Array<u64> = Array::with_max_entries(1, 0);

/// Whether the current process is the traced one; with probes attached to the file ahead of
/// it, the first process to ask claims them. Only for probes in the program's own code: any
/// process can run a perf event's program.
pub(crate) fn is_target(tgid: u32) -> bool {
    // SAFETY: a read of a constant the loader patched.
    let target = unsafe { core::ptr::read_volatile(&TARGET_TGID) };
    if target == EVERY_PROCESS {
        return true;
    }
    if target != 0 {
        return tgid == target;
    }
    let Some(slot) = CLAIMED_TGID.get_ptr_mut(0) else {
        return false;
    };
    let tgid = u64::from(tgid);
    // SAFETY: the map's one value, aligned and valid while the program runs; every access to
    // it, here and from userspace, is atomic. (The BPF target's `AtomicU64` has no
    // compare-exchange; the instruction exists.)
    let (owner, _) = unsafe {
        core::intrinsics::atomic_cxchg::<
            u64,
            { AtomicOrdering::Relaxed },
            { AtomicOrdering::Relaxed },
        >(slot, 0, tgid)
    };
    owner == 0 || owner == tgid
}

/// The traced process, 0 while the probes attached to the file wait for one.
pub(crate) fn target_tgid() -> u32 {
    // SAFETY: a read of a constant the loader patched.
    match unsafe { core::ptr::read_volatile(&TARGET_TGID) } {
        0 => CLAIMED_TGID.get(0).map_or(0, |claimed| {
            // SAFETY: the map's one value, aligned (an aligned 64-bit load is atomic).
            (unsafe { core::ptr::read_volatile(claimed) }) as u32
        }),
        target => target,
    }
}

pub(crate) fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// `key` (a `g`, a goroutine id, an address...) of the process the probe hit.
pub(crate) fn in_this_process(key: u64) -> InProcess {
    InProcess {
        tgid: u64::from(current_tgid()),
        key,
    }
}

/// The registers at a probe on a runtime function's entry, or None when this hit is not one:
/// another process, or the stack-check branch about to grow the stack.
pub(crate) fn runtime_probe_regs(ctx: &ProbeContext) -> Option<&pt_regs> {
    if !is_target(current_tgid()) {
        return None;
    }
    // SAFETY: the context of a uprobe program is its pt_regs.
    let regs: &pt_regs = unsafe { &*(ctx.as_ptr() as *const pt_regs) };
    // SAFETY: helper valid for uprobe programs since 5.15.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    if cookie & COOKIE_SKIP_IF_BELOW_OR_EQUAL != 0 && regs.eflags & (EFLAGS_CF | EFLAGS_ZF) != 0 {
        count(COUNTER_MORESTACK);
        return None;
    }
    Some(regs)
}

/// Go's integer argument register `index` (RAX, RBX, RCX, RDI, RSI, ...).
pub(crate) fn arg_reg(regs: &pt_regs, index: u64) -> Option<u64> {
    if index < INT_ARG_REGS as u64 {
        register(regs, index as u32)
    } else {
        None
    }
}

/// Register `index` in `RESULT_REGISTERS` order: Go's integer argument registers RAX to R11,
/// then RDX, RBP, R12, R13, R15.
///
/// Every field is read, each at its constant offset, and the one asked for kept: the verifier
/// refuses a read through a context pointer moved by a value it cannot bound, which is what
/// LLVM makes of a `match` whose arms each read one field (one load after a select of the
/// address). Volatile reads cannot be merged or moved into the branches. An array of them all
/// would do too, but it takes 112 bytes of the BPF stack. Not inlined, so that in a loop LLVM
/// does not keep the field addresses in registers (or on the stack) across iterations.
#[inline(never)]
pub(crate) fn register(regs: &pt_regs, index: u32) -> Option<u64> {
    let mut value = None;
    let mut keep = |at: u32, field: &u64| {
        // SAFETY: a plain read of one of the context's fields.
        let read = unsafe { core::ptr::read_volatile(field) };
        if at == index {
            value = Some(read);
        }
    };
    keep(0, &regs.rax);
    keep(1, &regs.rbx);
    keep(2, &regs.rcx);
    keep(3, &regs.rdi);
    keep(4, &regs.rsi);
    keep(5, &regs.r8);
    keep(6, &regs.r9);
    keep(7, &regs.r10);
    keep(8, &regs.r11);
    keep(9, &regs.rdx);
    keep(10, &regs.rbp);
    keep(11, &regs.r12);
    keep(12, &regs.r13);
    keep(13, &regs.r15);
    value
}

/// Writes Go's integer argument registers, RAX to R11, into `words`, each read at its constant
/// offset (see `register`).
pub(crate) fn store_int_arg_registers(regs: &pt_regs, words: &mut [u64; INT_ARG_REGS]) {
    let fields = [
        &regs.rax, &regs.rbx, &regs.rcx, &regs.rdi, &regs.rsi, &regs.r8, &regs.r9, &regs.r10,
        &regs.r11,
    ];
    for (word, field) in words.iter_mut().zip(fields) {
        // SAFETY: a plain read of one of the context's fields.
        *word = unsafe { core::ptr::read_volatile(field) };
    }
}

pub(crate) fn count(counter: u32) {
    if let Some(slot) = PROBE_COUNTERS.get_ptr_mut(counter) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}

pub(crate) fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the address; failure is an Err.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// SAFETY: the section holds only this NUL-terminated string, which the kernel reads as the
// object's license; no other symbol has this name.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
