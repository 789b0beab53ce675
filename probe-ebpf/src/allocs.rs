//! The allocator: every allocation counted per stack, caller and type (`--exact`), or the heap
//! profiler's sampled objects followed until the sweeper frees them.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_get_stack, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::ProbeContext,
};
use probe_common::{
    AllocKey, AllocStats, COUNTED_ALLOCATION, COUNTED_RESIDENCY, COUNTED_SAMPLED,
    COUNTED_SAMPLED_FREED, COUNTER_ALLOCS_LOST, COUNTER_EVENTS, InProcess, LiveObject,
    MAX_ALLOC_SITES, MAX_ALLOC_STACKS, MAX_LIVE_SAMPLES, MAX_STACK_FRAMES, NO_STACK, StackRecord,
};

use crate::{
    GO_OFFSETS, SIZED_BY_USE, arg_reg, count, in_this_process, read_u64, runtime_probe_regs,
};

/// Objects and bytes per (user stack, caller, type), summed in the kernel so that exact
/// allocation profiling sends nothing per allocation through the ring buffer.
#[map]
static ALLOC_SITES: PerCpuHashMap<AllocKey, AllocStats> =
    PerCpuHashMap::with_max_entries(MAX_ALLOC_SITES, SIZED_BY_USE);

/// User stacks by a hash of their return addresses. Not a kernel stack-trace map: that one
/// keeps one stack per hash bucket and refuses (-EEXIST) a colliding stack, which with a few
/// hundred stacks in 16,384 buckets happens within seconds.
#[map]
static ALLOC_STACKS: HashMap<u64, StackRecord> =
    HashMap::with_max_entries(MAX_ALLOC_STACKS, SIZED_BY_USE);

/// Where the probe takes a stack before it knows whether the stack is new.
#[map]
static STACK_SCRATCH: PerCpuArray<StackRecord> = PerCpuArray::with_max_entries(1, 0);

/// Takes the user stack and returns its key in `ALLOC_STACKS`, storing it if it is new.
pub(crate) fn user_stack(ctx: &impl EbpfContext) -> Option<i64> {
    let record = STACK_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: `record` is this CPU's scratch slot; the helper writes at most `size` bytes.
    let bytes = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            (*record).pcs.as_mut_ptr() as *mut core::ffi::c_void,
            (MAX_STACK_FRAMES * 8) as u32,
            BPF_F_USER_STACK as u64,
        )
    };
    if bytes <= 0 {
        return None;
    }
    let frames = (bytes as usize / 8).min(MAX_STACK_FRAMES);
    // FNV-1a over the return addresses.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..MAX_STACK_FRAMES {
        if i >= frames {
            break;
        }
        // SAFETY: i < MAX_STACK_FRAMES.
        hash = (hash ^ unsafe { (*record).pcs[i] }).wrapping_mul(0x0100_0000_01b3);
    }
    // Non-negative, so never `NO_STACK`.
    let key = (hash >> 1) as i64;
    // SAFETY: plain field write in this CPU's slot.
    unsafe { (*record).frames = frames as u64 };
    let hash = key as u64;
    // SAFETY: lookup only tests presence.
    if unsafe { ALLOC_STACKS.get(hash) }.is_none() {
        // SAFETY: `record` points at a whole StackRecord in map memory.
        let record = unsafe { &*record };
        // By reference: by value, the 520-byte record would not fit the 512-byte BPF stack.
        let _ = ALLOC_STACKS.insert(hash, record, 0);
    }
    Some(key)
}

/// `runtime.mallocgc(size uintptr, typ *_type, needzero bool)`, and the size-specialized
/// allocators of the same signature, probed like a traced function's entry: RAX is the size,
/// RBX the type.
#[uprobe]
pub fn go_malloc(ctx: ProbeContext) -> u32 {
    let _ = count_allocation(&ctx);
    0
}

/// Sampled objects still live, by address in their process, so their free can be matched to their allocation.
#[map]
static SAMPLED_LIVE: HashMap<InProcess, LiveObject> =
    HashMap::with_max_entries(MAX_LIVE_SAMPLES, SIZED_BY_USE);

/// `runtime.mProf_Malloc`: the runtime's heap profiler sampled this object (about one per
/// `MemProfileRate` bytes), so unsampled allocations cost nothing.
#[uprobe]
pub fn go_mprof_malloc(ctx: ProbeContext) -> u32 {
    let _ = try_mprof_malloc(&ctx);
    0
}

fn try_mprof_malloc(ctx: &ProbeContext) -> Result<(), ()> {
    let Some(regs) = runtime_probe_regs(ctx) else {
        return Ok(());
    };
    let offsets = GO_OFFSETS.get(0).ok_or(())?;
    let (Some(addr), Some(size)) = (
        arg_reg(regs, offsets.mprof_malloc_addr_reg),
        arg_reg(regs, offsets.mprof_malloc_size_reg),
    ) else {
        return Err(());
    };
    let key = AllocKey {
        counted: COUNTED_SAMPLED,
        stack_id: user_stack(ctx).unwrap_or(NO_STACK),
        caller: read_u64(regs.rsp).unwrap_or(0),
        detail: 0,
    };
    count(COUNTER_EVENTS);
    add_to_site(&key, size);
    let live = LiveObject {
        // SAFETY: no preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        stack_id: key.stack_id,
        caller: key.caller,
        size,
    };
    if SAMPLED_LIVE.insert(in_this_process(addr), live, 0).is_err() {
        count(COUNTER_ALLOCS_LOST);
    }
    Ok(())
}

/// `runtime.freeSpecial(s *special, p unsafe.Pointer, size uintptr)`: the sweeper frees an
/// object's special record; for a profile record, a sampled object has died.
#[uprobe]
pub fn go_free_special(ctx: ProbeContext) -> u32 {
    let _ = try_free_special(&ctx);
    0
}

fn try_free_special(ctx: &ProbeContext) -> Result<(), ()> {
    let Some(regs) = runtime_probe_regs(ctx) else {
        return Ok(());
    };
    let offsets = GO_OFFSETS.get(0).ok_or(())?;
    let kind_at = (regs.rax + offsets.special_kind_offset) as *const u8;
    // SAFETY: bpf_probe_read_user checks the address.
    let kind = unsafe { bpf_probe_read_user(kind_at) }.map_err(|_| ())?;
    if kind as u64 != offsets.special_kind_profile {
        return Ok(());
    }
    let object = in_this_process(regs.rbx);
    // SAFETY: the value is copied before the entry is removed.
    let Some(live) = (unsafe { SAMPLED_LIVE.get(object) }).copied() else {
        // Sampled before escapade attached.
        return Ok(());
    };
    let _ = SAMPLED_LIVE.remove(object);
    count(COUNTER_EVENTS);
    let freed = AllocKey {
        counted: COUNTED_SAMPLED_FREED,
        stack_id: live.stack_id,
        caller: live.caller,
        detail: 0,
    };
    add_to_site(&freed, live.size);
    // SAFETY: no preconditions.
    let lifetime = unsafe { bpf_ktime_get_ns() }.saturating_sub(live.ktime_ns);
    let residency = AllocKey {
        counted: COUNTED_RESIDENCY,
        detail: 64 - lifetime.leading_zeros() as u64,
        ..freed
    };
    add_to_site(&residency, 0);
    Ok(())
}

/// Adds one object of `bytes` to `key`'s totals.
pub(crate) fn add_to_site(key: &AllocKey, bytes: u64) {
    tally(key, bytes, Bytes::Sum);
}

/// What a site's `bytes` holds.
pub(crate) enum Bytes {
    Sum,
    /// The largest seen (a stack size, not an amount).
    Max,
}

pub(crate) fn tally(key: &AllocKey, bytes: u64, how: Bytes) {
    match ALLOC_SITES.get_ptr_mut(key) {
        // SAFETY: a per-CPU value, written by no one else while the program runs on this CPU.
        Some(stats) => unsafe {
            (*stats).objects += 1;
            (*stats).bytes = match how {
                Bytes::Sum => (*stats).bytes + bytes,
                Bytes::Max => (*stats).bytes.max(bytes),
            };
        },
        None => {
            let stats = AllocStats { objects: 1, bytes };
            if ALLOC_SITES.insert(key, stats, 0).is_err() {
                count(COUNTER_ALLOCS_LOST);
            }
        }
    }
}

fn count_allocation(ctx: &ProbeContext) -> Result<(), ()> {
    let Some(regs) = runtime_probe_regs(ctx) else {
        return Ok(());
    };
    // mallocgc returns a shared zero-size block without allocating (or counting) anything.
    let size = regs.rax;
    if size == 0 {
        return Ok(());
    }
    let caller = read_u64(regs.rsp).unwrap_or(0);
    let offsets = GO_OFFSETS.get(0).ok_or(())?;
    if caller >= offsets.mallocgc_start && caller < offsets.mallocgc_end {
        return Ok(());
    }
    let key = AllocKey {
        counted: COUNTED_ALLOCATION,
        stack_id: user_stack(ctx).unwrap_or(NO_STACK),
        caller,
        detail: regs.rbx,
    };
    count(COUNTER_EVENTS);
    add_to_site(&key, size);
    Ok(())
}
