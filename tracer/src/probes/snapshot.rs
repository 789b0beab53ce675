//! What a session's probes counted in the kernel, read from the loaded object's maps as typed
//! values: the read side of the probes, which a sink may hold without being able to detach
//! them or take their events.

use anyhow::Context as _;
use aya::maps::{HashMap, Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use aya::{Ebpf, Pod};
use probe_common::{
    AllocKey, AllocStats, COUNTED_STACK_GROWTH, COUNTER_ALLOCS_LOST, COUNTER_DROPPED,
    COUNTER_EVENTS, COUNTER_MORESTACK, COUNTER_READ_ERRORS, CallHeap, CallStart, CallStats,
    CallerKey, CallerStats, GcCycleRecord, GoroutineCalls, InProcess, LiveObject, MAX_PARAMS,
    OpenCall, ParamStats, StackRecord, Unplaced,
};

/// The map `name` of a loaded object, typed as its reader wants it; the object keeps it no more.
pub fn take<T>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<Map>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

/// The map `name` of a loaded object, typed as its writer wants it, borrowed: for maps the
/// programs must still find in the object when they load.
pub fn borrow<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<&'a mut Map>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let map = ebpf
        .map_mut(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

/// What one session's probes counted in the kernel, read from its own maps when asked: what a
/// sink sees of the probes, which can neither detach them nor take their events.
pub struct KernelCounts {
    counters: PerCpuArray<MapData, u64>,
    alloc_sites: PerCpuHashMap<MapData, AllocKey, AllocStats>,
    alloc_stacks: HashMap<MapData, u64, StackRecord>,
    sampled_live: HashMap<MapData, InProcess, LiveObject>,
    gc_cycles: HashMap<MapData, InProcess, GcCycleRecord>,
    call_stats: PerCpuArray<MapData, CallStats>,
    call_starts: HashMap<MapData, OpenCall, CallStart>,
    goroutine_calls: HashMap<MapData, InProcess, GoroutineCalls>,
    param_stats: PerCpuArray<MapData, ParamStats>,
    call_heap: PerCpuArray<MapData, CallHeap>,
    unplaced: PerCpuHashMap<MapData, Unplaced, u64>,
    callers: PerCpuHashMap<MapData, CallerKey, CallerStats>,
}

/// The probes' counters (`probe_common::COUNTER_*`). Its fields are in the counters' order,
/// which keeps recordings as they were when they held the counters as an array.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// What the probes recorded: calls' entries and returns, and what the counting probes
    /// counted (allocations, goroutines, GC cycles).
    pub events: u64,
    /// Events lost because the ring buffer was full.
    pub dropped: u64,
    /// Hits on a stack-check branch that was about to grow the stack (not an event).
    pub morestack: u64,
    /// Reads of target memory that failed (g, argument area or string bytes).
    pub read_errors: u64,
    /// Allocations whose key did not fit in `ALLOC_SITES`.
    pub allocs_lost: u64,
}

impl KernelCounts {
    /// The counting maps of `ebpf`, which the object holds no more.
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<KernelCounts> {
        Ok(KernelCounts {
            counters: take(ebpf, "PROBE_COUNTERS")?,
            alloc_sites: take(ebpf, "ALLOC_SITES")?,
            alloc_stacks: take(ebpf, "ALLOC_STACKS")?,
            sampled_live: take(ebpf, "SAMPLED_LIVE")?,
            gc_cycles: take(ebpf, "GC_CYCLES")?,
            call_stats: take(ebpf, "CALL_STATS")?,
            call_starts: take(ebpf, "CALL_STARTS")?,
            goroutine_calls: take(ebpf, "INNERMOST_CALL")?,
            param_stats: take(ebpf, "PARAM_STATS")?,
            call_heap: take(ebpf, "CALL_HEAP")?,
            unplaced: take(ebpf, "UNPLACED")?,
            callers: take(ebpf, "CALLERS")?,
        })
    }

    /// Removes what the kernel keeps of the goroutines of processes that `exited`: probes that
    /// serve every process of a file would otherwise keep them for as long as they stay. Only
    /// `INNERMOST_CALL` needs it; the other per-goroutine maps are LRU.
    pub(super) fn forget_exited(&mut self, exited: impl Fn(u32) -> bool) -> anyhow::Result<()> {
        // Asked once per process, not per goroutine: a process may hold thousands.
        let mut asked = std::collections::HashMap::new();
        let goroutines: Vec<InProcess> = self
            .goroutine_calls
            .keys()
            .filter_map(Result::ok)
            .filter(|goroutine| {
                let tgid = goroutine.tgid as u32;
                *asked.entry(tgid).or_insert_with(|| exited(tgid))
            })
            .collect();
        for goroutine in goroutines {
            self.goroutine_calls
                .remove(&goroutine)
                .context("removing an exited process's goroutines from INNERMOST_CALL")?;
        }
        Ok(())
    }

    /// The calls the kernel saw enter and not return: still running, or unwound by a panic.
    pub fn open_calls(&self) -> anyhow::Result<Vec<(OpenCall, CallStart)>> {
        let mut open: Vec<_> = self.call_starts.iter().collect::<Result<_, _>>()?;
        for goroutine in self.goroutine_calls.iter() {
            let (goroutine, calls) = goroutine?;
            open.extend(calls.inline().iter().map(|held| {
                let call = OpenCall::new(goroutine.key, goroutine.tgid as u32, held.depth);
                (call, held.start)
            }));
        }
        Ok(open)
    }

    /// The calls of the first `functions` traced functions as the kernel counted and timed
    /// them, summed over CPUs.
    pub fn call_stats(&self, functions: usize) -> anyhow::Result<Vec<CallStats>> {
        (0..functions as u32)
            .map(|i| {
                let per_cpu = self.call_stats.get(&i, 0)?;
                Ok(per_cpu.iter().fold(CallStats::default(), |mut t, s| {
                    t.entries += s.entries;
                    t.returns += s.returns;
                    t.caller_returns += s.caller_returns;
                    t.unobserved += s.unobserved;
                    t.total_ns += s.total_ns;
                    for (t, s) in t.latency.iter_mut().zip(&s.latency) {
                        *t += s;
                    }
                    t
                }))
            })
            .collect()
    }

    /// Under `Programs::Params`, the first `functions` traced functions' parameters as the
    /// kernel classified them, `MAX_PARAMS` slots per function, summed over CPUs.
    pub fn param_stats(&self, functions: usize) -> anyhow::Result<Vec<ParamStats>> {
        (0..(functions * MAX_PARAMS) as u32)
            .map(|i| {
                let per_cpu = self.param_stats.get(&i, 0)?;
                Ok(per_cpu.iter().fold(ParamStats::default(), |mut t, s| {
                    for (t, s) in t.pointees.iter_mut().zip(&s.pointees) {
                        *t += s;
                    }
                    t.moved_calls += s.moved_calls;
                    t.moved_objects += s.moved_objects;
                    t.moved_bytes += s.moved_bytes;
                    t
                }))
            })
            .collect()
    }

    /// Under `Programs::Params`, what the first `functions` traced functions' calls
    /// allocated, summed over CPUs.
    pub fn call_heap(&self, functions: usize) -> anyhow::Result<Vec<CallHeap>> {
        (0..functions as u32)
            .map(|i| {
                let per_cpu = self.call_heap.get(&i, 0)?;
                Ok(per_cpu.iter().fold(CallHeap::default(), |t, s| CallHeap {
                    objects: t.objects + s.objects,
                    bytes: t.bytes + s.bytes,
                    own_objects: t.own_objects + s.own_objects,
                    unverified_moves: t.unverified_moves + s.unverified_moves,
                    unmatched_returns: t.unmatched_returns + s.unmatched_returns,
                }))
            })
            .collect()
    }

    /// Under `Programs::CountingByCaller`, each traced function's calls per caller (by
    /// run-time return address) and the time of those that returned, summed over CPUs.
    pub fn callers(&self) -> anyhow::Result<Vec<(CallerKey, CallerStats)>> {
        summed_per_key(&self.callers, |_, per_cpu| CallerStats {
            calls: per_cpu.iter().map(|s| s.calls).sum(),
            total_ns: per_cpu.iter().map(|s| s.total_ns).sum(),
        })
    }

    /// Under `Programs::Params`, the pointers the kernel could not place by
    /// `AddressRanges`, counted so far, summed over CPUs.
    pub fn unplaced(&self) -> anyhow::Result<Vec<(Unplaced, u64)>> {
        summed_per_key(&self.unplaced, |_, per_cpu| per_cpu.iter().sum())
    }

    /// What the counting probes counted, per (stack, caller, type), summed over CPUs.
    pub fn alloc_sites(&self) -> anyhow::Result<Vec<(AllocKey, AllocStats)>> {
        summed_per_key(&self.alloc_sites, |key, per_cpu| {
            per_cpu
                .iter()
                .fold(AllocStats::default(), |t, s| AllocStats {
                    objects: t.objects + s.objects,
                    bytes: if key.counted == COUNTED_STACK_GROWTH {
                        t.bytes.max(s.bytes)
                    } else {
                        t.bytes + s.bytes
                    },
                })
        })
    }

    /// Sampled objects allocated while escapade watched and not freed yet, by address.
    pub fn sampled_live(&self) -> anyhow::Result<Vec<LiveObject>> {
        let mut live = Vec::new();
        for entry in self.sampled_live.iter() {
            live.push(entry?.1);
        }
        Ok(live)
    }

    /// The most recent GC cycles completed while escapade watched, oldest first.
    pub fn gc_cycles(&self) -> anyhow::Result<Vec<GcCycleRecord>> {
        let mut cycles = Vec::new();
        for entry in self.gc_cycles.iter() {
            cycles.push(entry?.1);
        }
        cycles.sort_by_key(|c| c.ktime_ns);
        Ok(cycles)
    }

    /// The return addresses of a stack a counting probe recorded, innermost first.
    pub fn alloc_stack(&self, key: i64) -> anyhow::Result<Vec<u64>> {
        let record = self.alloc_stacks.get(&(key as u64), 0)?;
        let frames = (record.frames as usize).min(record.pcs.len());
        Ok(record.pcs[..frames].to_vec())
    }

    /// The probes' counters, summed over CPUs.
    pub fn counters(&self) -> Counters {
        let counter = |i: u32| {
            self.counters
                .get(&i, 0)
                .map_or(0, |values| values.iter().sum())
        };
        Counters {
            events: counter(COUNTER_EVENTS),
            dropped: counter(COUNTER_DROPPED),
            morestack: counter(COUNTER_MORESTACK),
            read_errors: counter(COUNTER_READ_ERRORS),
            allocs_lost: counter(COUNTER_ALLOCS_LOST),
        }
    }
}

/// Each key of `map` with its per-CPU values summed by `sum`.
fn summed_per_key<K: Pod, V: Pod, T>(
    map: &PerCpuHashMap<MapData, K, V>,
    sum: impl Fn(&K, &PerCpuValues<V>) -> T,
) -> anyhow::Result<Vec<(K, T)>> {
    map.iter()
        .map(|entry| {
            let (key, per_cpu) = entry?;
            let total = sum(&key, &per_cpu);
            Ok((key, total))
        })
        .collect()
}
