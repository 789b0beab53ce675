//! CPU sampling: a program on the software `cpu-clock` perf event of every CPU (these VMs have
//! no hardware PMU), counting the target's samples per user stack in the kernel, so nothing
//! crosses to userspace per sample.

use aya_ebpf::{
    macros::{map, perf_event},
    maps::PerCpuHashMap,
    programs::PerfEventContext,
};
use probe_common::{MAX_ALLOC_STACKS, NO_STACK};

use crate::{SIZED_BY_USE, allocs::user_stack, target_tgid};

/// Samples per user stack (a key of `ALLOC_STACKS`, or `NO_STACK`). The tracer creates the
/// `NO_STACK` entry before sampling starts, so a sample always has a slot to count in.
#[map]
static CPU_SAMPLES: PerCpuHashMap<i64, u64> =
    PerCpuHashMap::with_max_entries(MAX_ALLOC_STACKS, SIZED_BY_USE);

/// One tick of one CPU's clock. The event samples every task on that CPU: ticks of other
/// processes are dropped here, since a per-process event would miss the threads that
/// existed before it was opened.
#[perf_event]
pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
    let target = target_tgid();
    if target == 0 || crate::current_tgid() != target {
        return 0;
    }
    // The kernel walks the user stack from the registers the task entered the kernel with,
    // so a tick during a system call still finds the Go code that made it.
    let key = user_stack(&ctx).unwrap_or(NO_STACK);
    // With the map full, a new stack's sample counts as one without a stack.
    if !add_sample(key) {
        add_sample(NO_STACK);
    }
    0
}

fn add_sample(key: i64) -> bool {
    match CPU_SAMPLES.get_ptr_mut(key) {
        Some(samples) => {
            // SAFETY: a per-CPU value, written by no one else while the program runs on this
            // CPU.
            unsafe { *samples += 1 };
            true
        }
        None => CPU_SAMPLES.insert(key, 1, 0).is_ok(),
    }
}
