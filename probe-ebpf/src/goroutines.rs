//! Goroutines: their creations per `go` statement, and their stacks' growth.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use probe_common::{AllocKey, COUNTED_GOROUTINE, COUNTED_STACK_GROWTH, COUNTER_EVENTS, NO_STACK};

use crate::{
    GO_OFFSETS,
    allocs::{Bytes, add_to_site, tally},
    count, read_u64, runtime_probe_regs,
};

/// `runtime.newproc1(fn *funcval, callergp *g, callerpc uintptr, ...)`: one goroutine created.
/// It runs on the system stack, so the creating `go` statement is `callerpc` (RCX), not a
/// stack walk.
#[uprobe]
pub fn go_newproc(ctx: ProbeContext) -> u32 {
    let _ = count_goroutine(&ctx);
    0
}

/// `runtime.copystack(gp *g, newsize uintptr)`: a goroutine's stack is copied to a new size,
/// to grow it (from `newstack`) or to shrink it (during GC). Growths are counted per `go`
/// statement, with the largest stack reached.
#[uprobe]
pub fn go_copystack(ctx: ProbeContext) -> u32 {
    let _ = try_copystack(&ctx);
    0
}

fn try_copystack(ctx: &ProbeContext) -> Result<(), ()> {
    let Some(regs) = runtime_probe_regs(ctx) else {
        return Ok(());
    };
    let offsets = GO_OFFSETS.get(0).ok_or(())?;
    let (gp, new_size) = (regs.rax, regs.rbx);
    let lo = read_u64(gp + offsets.g_stack_lo).ok_or(())?;
    let hi = read_u64(gp + offsets.g_stack_hi).ok_or(())?;
    if new_size <= hi.wrapping_sub(lo) {
        return Ok(());
    }
    let key = AllocKey {
        counted: COUNTED_STACK_GROWTH,
        stack_id: NO_STACK,
        caller: read_u64(gp + offsets.g_gopc).unwrap_or(0),
        detail: read_u64(gp + offsets.g_startpc).unwrap_or(0),
    };
    count(COUNTER_EVENTS);
    tally(&key, new_size, Bytes::Max);
    Ok(())
}

fn count_goroutine(ctx: &ProbeContext) -> Result<(), ()> {
    let Some(regs) = runtime_probe_regs(ctx) else {
        return Ok(());
    };
    let key = AllocKey {
        counted: COUNTED_GOROUTINE,
        stack_id: NO_STACK,
        caller: regs.rcx,
        // A funcval's first word is the code pointer.
        detail: read_u64(regs.rax).unwrap_or(0),
    };
    // The stack the new goroutine starts with (a uint32).
    let offsets = GO_OFFSETS.get(0).ok_or(())?;
    let stack = match offsets.starting_stack_size {
        0 => 0,
        addr => read_u64(addr).unwrap_or(0) & 0xffff_ffff,
    };
    count(COUNTER_EVENTS);
    add_to_site(&key, stack);
    Ok(())
}
