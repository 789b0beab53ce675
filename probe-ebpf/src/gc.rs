//! Garbage collection: each completed cycle's record.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_ns,
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use probe_common::{
    AllocKey, COUNTED_GC_CYCLE, COUNTER_EVENTS, GC_FIELDS, GC_NUMGC, GcCycleRecord, InProcess,
    MAX_GC_CYCLES, NO_STACK,
};

use crate::{
    GO_OFFSETS, allocs::add_to_site, count, in_this_process, read_u64, runtime_probe_regs,
};

/// The most recent GC cycles, by number in their process.
#[map]
static GC_CYCLES: LruHashMap<InProcess, GcCycleRecord> =
    LruHashMap::with_max_entries(MAX_GC_CYCLES, 0);

/// `runtime.gcMarkTermination`'s call to `mProf_Flush`: a GC cycle has ended (once per cycle,
/// after the runtime incremented `MemStats.NumGC`), and the runtime's record of it is complete
/// while the next cycle cannot start yet. Where that call is not found, its `RET`s, which the
/// kernel single-steps.
#[uprobe]
pub fn go_gc(ctx: ProbeContext) -> u32 {
    let _ = try_gc(&ctx);
    0
}

fn try_gc(ctx: &ProbeContext) -> Result<(), ()> {
    if runtime_probe_regs(ctx).is_none() {
        return Ok(());
    }
    let offsets = GO_OFFSETS.get(0).ok_or(())?;
    let mut record = GcCycleRecord {
        // SAFETY: no preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        fields: [0; GC_FIELDS],
    };
    for i in 0..GC_FIELDS {
        let addr = offsets.gc_fields[i];
        if addr != 0 {
            record.fields[i] = read_u64(addr).unwrap_or(0);
        }
    }
    // numgc is a uint32.
    record.fields[GC_NUMGC] &= 0xffff_ffff;
    let key = in_this_process(match record.fields[GC_NUMGC] {
        0 => record.ktime_ns,
        n => n,
    });
    // On a RET, which the kernel single-steps, a preemption signal during the step makes the
    // goroutine run the RET, and so this probe, again once it is rescheduled, possibly in the
    // next cycle. The first hit of a cycle holds its record and counts it.
    if GC_CYCLES.insert(key, record, BPF_NOEXIST as u64).is_err() {
        return Ok(());
    }
    count(COUNTER_EVENTS);
    let cycle = AllocKey {
        counted: COUNTED_GC_CYCLE,
        stack_id: NO_STACK,
        caller: 0,
        detail: 0,
    };
    add_to_site(&cycle, 0);
    Ok(())
}
