//! Loads the embedded eBPF object, fills its maps for one process, and attaches a uprobe at
//! every probe point: through one `uprobe_multi` link per kind of probe where the kernel has
//! them (6.6+), else one perf event per probe. Dropping [`Attached`] detaches everything.

use std::num::NonZeroU32;
use std::path::Path;

use anyhow::Context as _;
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope};
use aya::{Ebpf, EbpfLoader};
use probe_common::{
    AddressRange, AllocKey, AllocStats, COOKIE_AT_CALL_SITE, COOKIE_AT_RETURN_SITE,
    COOKIE_SKIP_IF_BELOW_OR_EQUAL, COUNTED_STACK_GROWTH, COUNTER_ALLOCS_LOST, COUNTER_DROPPED,
    COUNTER_EVENTS, COUNTER_MORESTACK, COUNTER_READ_ERRORS, CallHeap, CallStart, CallStats,
    CallerKey, CallerStats, GcCycleRecord, GoOffsets, GoroutineCalls, LiveObject,
    MAX_ACTIVE_GOROUTINES, MAX_ADDRESS_RANGES, MAX_CALLERS, MAX_FAST_RETURNS, MAX_HELD_ENTRIES,
    MAX_LIVE_SAMPLES, MAX_OPEN_CALLS, MAX_PARAMS, MAX_PROBES, MAX_TRACED_FUNCTIONS, MAX_UNPLACED,
    OpenCall, ParamStats, ProbeConfig, StackRecord, Unplaced,
};

use crate::uprobe_multi::{self, MultiLink, MultiPrograms};

static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-ebpf"));

/// What a probe point records, which decides the program attached there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// A traced function's entry: arguments, into the ring buffer.
    Entry,
    /// A traced function's `RET`: results, into the ring buffer.
    Return,
    /// `runtime.mallocgc`'s entry: counted per stack and type in the kernel.
    Malloc,
    /// `runtime.newproc1`'s entry: goroutine creations, counted per `go` statement.
    Newproc,
    /// `runtime.gcMarkTermination`'s call to `mProf_Flush` (or its `RET`s): completed GC
    /// cycles and the runtime's record of each.
    GcCycle,
    /// `runtime.copystack`'s entry: goroutine stacks grown.
    StackGrowth,
    /// The allocator's entry, reported from goroutines inside a traced function only.
    Allocating,
    /// The instruction after a traced function's own call to the allocator.
    Allocated,
    /// `runtime.mProf_Malloc`'s entry: an object the heap profiler sampled.
    SampledMalloc,
    /// `runtime.freeSpecial`'s entry: a sampled object freed.
    FreeSpecial,
}

/// One uprobe to attach.
#[derive(Clone, Debug)]
pub struct ProbePoint {
    /// Index of the traced function this probe belongs to.
    pub function: usize,
    pub kind: ProbeKind,
    /// Link-time address of the probed instruction.
    pub addr: u64,
    /// File offset of that instruction, as the kernel wants it.
    pub file_offset: u64,
    /// `COOKIE_*` placement flags.
    pub flags: u64,
    pub config: ProbeConfig,
}

impl ProbePoint {
    /// Whether the kernel single-steps the probed instruction rather than emulating it: a
    /// signal during the step makes it run, and the probe fire, again. Entries on the
    /// stack-check branch or a `CALL` and returns at return sites are emulated; a return on a
    /// function's `RET` may be.
    pub fn single_stepped(&self) -> bool {
        let emulated = COOKIE_SKIP_IF_BELOW_OR_EQUAL | COOKIE_AT_CALL_SITE | COOKIE_AT_RETURN_SITE;
        self.flags & emulated == 0
    }
}

pub struct Attached {
    /// Keeps the maps, and the programs of perf-event links, alive.
    ebpf: Ebpf,
    links: Links,
    events: Option<RingBuf<MapData>>,
    counts: KernelCounts,
    claimed_tgid: Array<MapData, u64>,
    rets_closed: Array<MapData, u32>,
    entries_detached: Array<MapData, u32>,
    open_via_ret: PerCpuArray<MapData, i64>,
    /// Under `--returns sampled`, when the `RET` probes come and go.
    windows: Option<RetWindows>,
    address_ranges: Option<AddressRanges>,
}

/// What one session's probes counted in the kernel, read from its own maps when asked: what a
/// sink sees of the probes, which can neither detach them nor take their events.
pub struct KernelCounts {
    counters: PerCpuArray<MapData, u64>,
    alloc_sites: PerCpuHashMap<MapData, AllocKey, AllocStats>,
    alloc_stacks: HashMap<MapData, u64, StackRecord>,
    sampled_live: HashMap<MapData, u64, LiveObject>,
    gc_cycles: HashMap<MapData, u64, GcCycleRecord>,
    call_stats: PerCpuArray<MapData, CallStats>,
    call_starts: HashMap<MapData, OpenCall, CallStart>,
    goroutine_calls: HashMap<MapData, u64, GoroutineCalls>,
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

/// Where the process's memory regions lie, as the probes of [`Programs::Params`] classify
/// pointers by them: the one map userspace keeps current while a session runs, held by
/// whoever follows the process's memory.
pub struct AddressRanges(Array<MapData, AddressRange>);

impl AddressRanges {
    /// Replaces the ranges: sorted, at most `MAX_ADDRESS_RANGES`.
    pub fn write(&mut self, ranges: &[AddressRange]) -> anyhow::Result<()> {
        write_address_ranges(&mut self.0, ranges)
    }
}

/// `--returns sampled`: a window with the `RET` probes attached opens every [`RET_PERIOD`] and
/// lasts its share of it.
#[derive(Clone, Copy, Debug)]
struct RetWindows {
    open_for: std::time::Duration,
    closed_for: std::time::Duration,
    next_edge: std::time::Instant,
}

/// How often a sampling window opens: long enough that a 1 % window (20 ms) outlasts the
/// attach and the detach, short enough to sample a short session.
const RET_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// How long closing a window waits for the calls its `RET` probes were to see to return.
const RET_DRAIN: std::time::Duration = std::time::Duration::from_millis(50);

impl Attached {
    /// The ring buffer the probes write to; the reader takes it once.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// The map of the process's memory regions, for [`Programs::Params`]; taken once, by what
    /// keeps it current.
    pub fn take_address_ranges(&mut self) -> Option<AddressRanges> {
        self.address_ranges.take()
    }

    /// What the probes counted so far.
    pub fn counts(&self) -> &KernelCounts {
        &self.counts
    }

    /// Detaches the entry probes, leaving the return probes in place so calls in flight can
    /// still return; the rest detaches on drop. Detaching in the other order would show calls
    /// entered in between as never returning.
    pub fn detach_entries(&mut self) -> anyhow::Result<()> {
        // From now on a return without its entry is a call entered after the entry probes
        // went, not one running at attach.
        self.entries_detached.set(0, 1, 0)?;
        match &mut self.links {
            Links::Multi { entries, .. } => uprobe_multi::close_together(std::mem::take(entries)),
            Links::PerfEvents { entries } => {
                for (name, link) in entries.drain(..) {
                    uprobe_program(&mut self.ebpf, name)?.detach(link)?;
                }
            }
        }
        Ok(())
    }

    /// Detaches the `RET` probes, between the windows of `--returns sampled`: from now on the
    /// kernel counts calls that only a `RET` probe would see as unobserved, and the probes go
    /// once the calls they were to see have returned (or after `wait`, for calls a panic
    /// unwound). Return sites stay.
    fn close_rets(&mut self, wait: std::time::Duration) -> anyhow::Result<()> {
        let Links::Multi { rets, .. } = &mut self.links else {
            anyhow::bail!(NO_SAMPLING);
        };
        let Some(link) = rets.link.take() else {
            return Ok(());
        };
        self.rets_closed.set(0, 1, 0)?;
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until {
            let open: i64 = self.open_via_ret.get(&0, 0)?.iter().sum();
            if open <= 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        // Its grace period need not hold up the session.
        std::thread::spawn(move || drop(link));
        Ok(())
    }

    /// `--returns sampled`: detaches the `RET` probes now and has them attached again in
    /// windows adding up to `percent` of the time ([`Attached::ret_edge`]).
    pub fn sample_rets(&mut self, percent: f64) -> anyhow::Result<()> {
        self.close_rets(RET_DRAIN)?;
        let open_for = RET_PERIOD.mul_f64(percent / 100.0);
        self.windows = Some(RetWindows {
            open_for,
            closed_for: RET_PERIOD.saturating_sub(open_for),
            next_edge: std::time::Instant::now() + RET_PERIOD.saturating_sub(open_for),
        });
        Ok(())
    }

    /// When the next sampling window opens or closes, if the `RET` probes are sampled.
    pub fn next_ret_edge(&self) -> Option<std::time::Instant> {
        self.windows.map(|w| w.next_edge)
    }

    /// Opens or closes the sampling window, at the time [`Attached::next_ret_edge`] said.
    pub fn ret_edge(&mut self) -> anyhow::Result<()> {
        let Some(mut windows) = self.windows else {
            return Ok(());
        };
        let open = matches!(&self.links, Links::Multi { rets, .. } if rets.link.is_some());
        if open {
            self.close_rets(RET_DRAIN)?;
            windows.next_edge += windows.closed_for;
        } else {
            self.open_rets()?;
            windows.next_edge += windows.open_for;
        }
        // A late edge does not make the next window shorter.
        windows.next_edge = windows.next_edge.max(std::time::Instant::now());
        self.windows = Some(windows);
        Ok(())
    }

    /// Attaches the `RET` probes again, for a window of `--returns sampled`.
    fn open_rets(&mut self) -> anyhow::Result<()> {
        let Links::Multi { rets, .. } = &mut self.links else {
            anyhow::bail!(NO_SAMPLING);
        };
        if rets.link.is_some() || rets.sites.is_empty() {
            return Ok(());
        }
        rets.link = Some(rets.attach()?);
        self.rets_closed.set(0, 0, 0)?;
        Ok(())
    }

    /// Whether probes attached for [`Scope::NextProcess`] serve process `pid`: it claimed them
    /// by hitting one first, or none has yet and it claims them now. Two processes of the file
    /// starting in the same instant could both count into them until this settles it.
    pub fn claim(&mut self, pid: u32) -> bool {
        match self.claimed_by() {
            None => self.claimed_tgid.set(0, u64::from(pid), 0).is_ok(),
            Some(owner) => owner == pid,
        }
    }

    /// The process that claimed probes attached for [`Scope::NextProcess`], if one has.
    pub fn claimed_by(&self) -> Option<u32> {
        let pid = self.claimed_tgid.get(&0, 0).ok()?;
        u32::try_from(pid).ok().filter(|&pid| pid != 0)
    }

    /// The loaded object, for programs attached elsewhere than at probe points (the CPU
    /// sampler's perf events): they detach with it.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

impl KernelCounts {
    /// The calls the kernel saw enter and not return: still running, or unwound by a panic.
    pub fn open_calls(&self) -> anyhow::Result<Vec<(OpenCall, CallStart)>> {
        let mut open: Vec<_> = self.call_starts.iter().collect::<Result<_, _>>()?;
        for goroutine in self.goroutine_calls.iter() {
            let (g, calls) = goroutine?;
            open.extend(calls.inline().iter().map(|held| {
                (
                    OpenCall {
                        g,
                        depth: held.depth,
                    },
                    held.start,
                )
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

    /// Under [`Programs::Params`], the first `functions` traced functions' parameters as the
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

    /// Under [`Programs::Params`], what the first `functions` traced functions' calls
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

    /// Under [`Programs::CountingByCaller`], each traced function's calls per caller (by
    /// run-time return address) and the time of those that returned, summed over CPUs.
    pub fn callers(&self) -> anyhow::Result<Vec<(CallerKey, CallerStats)>> {
        let mut out = Vec::new();
        for entry in self.callers.iter() {
            let (key, per_cpu) = entry?;
            let total = per_cpu
                .iter()
                .fold(CallerStats::default(), |t, s| CallerStats {
                    calls: t.calls + s.calls,
                    total_ns: t.total_ns + s.total_ns,
                });
            out.push((key, total));
        }
        Ok(out)
    }

    /// Under [`Programs::Params`], the pointers the kernel could not place by
    /// [`AddressRanges`], counted so far, summed over CPUs.
    pub fn unplaced(&self) -> anyhow::Result<Vec<(Unplaced, u64)>> {
        let mut out = Vec::new();
        for entry in self.unplaced.iter() {
            let (key, per_cpu) = entry?;
            out.push((key, per_cpu.iter().sum()));
        }
        Ok(out)
    }

    /// What the counting probes counted, per (stack, caller, type), summed over CPUs.
    pub fn alloc_sites(&self) -> anyhow::Result<Vec<(AllocKey, AllocStats)>> {
        let mut sites = Vec::new();
        for entry in self.alloc_sites.iter() {
            let (key, per_cpu) = entry?;
            let total = per_cpu
                .iter()
                .fold(AllocStats::default(), |t, s| AllocStats {
                    objects: t.objects + s.objects,
                    bytes: if key.counted == COUNTED_STACK_GROWTH {
                        t.bytes.max(s.bytes)
                    } else {
                        t.bytes + s.bytes
                    },
                });
            sites.push((key, total));
        }
        Ok(sites)
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

/// Which programs run at the probe points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Programs {
    /// Record entries and returns, an event each; and count and time calls in the kernel.
    Tracing,
    /// Count and time calls in the kernel only ([`KernelCounts::call_stats`]): no event per call.
    Counting,
    /// Count and time every call, and send whole (entry and return) only the calls this
    /// picks, decided in the kernel at the return.
    Tail(TailCapture),
    /// Count and time calls in the kernel, per caller too ([`KernelCounts::callers`]): no event
    /// per call.
    CountingByCaller,
    /// Count and time calls, and classify their parameters, in the kernel
    /// ([`KernelCounts::param_stats`], [`KernelCounts::call_heap`]): no event per call.
    Params,
    /// An empty program everywhere: what a uprobe costs before escapade does any work.
    Empty,
}

/// Which calls tail capture sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TailCapture {
    /// Calls that took at least this long; 0 for none.
    pub slower_than_ns: u64,
    /// Calls that returned a non-nil error as their last result.
    pub errors: bool,
}

/// Which processes the probes serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The running process of this PID.
    Process(u32),
    /// The next process to run the file: the probes wait in the file, and the first process
    /// to hit one claims them (see [`Attached::claim`]). It runs its first instruction
    /// with them in place.
    NextProcess,
}

impl Scope {
    /// The PID the kernel filters on, 0 for every process.
    fn pid(self) -> u32 {
        match self {
            Scope::Process(pid) => pid,
            Scope::NextProcess => 0,
        }
    }
}

/// Loads the probes, fills their maps and attaches them. `memory` is where the process's
/// memory regions lie (see [`AddressRanges`]), for [`Programs::Params`]: in
/// place before the first probe fires.
pub fn attach(
    scope: Scope,
    exe: &Path,
    offsets: GoOffsets,
    points: &[ProbePoint],
    programs: Programs,
    memory: &[AddressRange],
) -> anyhow::Result<Attached> {
    anyhow::ensure!(
        points.len() <= MAX_PROBES as usize,
        "{} probe points exceed escapade's limit of {MAX_PROBES}: name fewer functions",
        points.len()
    );
    raise_memlock_limit();
    // The allocator's probes report only goroutines inside traced calls, which entries and
    // returns then keep track of.
    let params = programs == Programs::Params;
    let track_calls = u32::from(!params && points.iter().any(|p| p.kind == ProbeKind::Allocating));
    let send_calls = u32::from(!matches!(
        programs,
        Programs::Counting | Programs::CountingByCaller | Programs::Params
    ));
    let callers = programs == Programs::CountingByCaller;
    // The params maps hold a slot per traced function (and parameter), per CPU: only when
    // asked for.
    let functions = points
        .iter()
        .filter(|p| matches!(p.kind, ProbeKind::Entry | ProbeKind::Return))
        .map(|p| p.config.function + 1)
        .max()
        .unwrap_or(1);
    // Maps are preallocated kernel memory (~90 MB for all of them at full size, per
    // session): each is full-size only when some probe here uses it.
    let sized = |used: bool, n: u32| if used { n } else { 1 };
    let params_entries = |n: u32| sized(params, n);
    let has = |kind: ProbeKind| points.iter().any(|p| p.kind == kind);
    let on_rets = points
        .iter()
        .any(|p| p.kind == ProbeKind::Return && p.flags & COOKIE_AT_RETURN_SITE == 0);
    let return_sites = points
        .iter()
        .filter(|p| p.flags & COOKIE_AT_RETURN_SITE != 0)
        .count();
    anyhow::ensure!(
        return_sites <= MAX_FAST_RETURNS as usize,
        "the traced functions have more than {MAX_FAST_RETURNS} direct call sites: name fewer, \
         or use --entries-only"
    );
    let tail = match programs {
        Programs::Tail(tail) => tail,
        _ => TailCapture::default(),
    };
    anyhow::ensure!(
        points
            .iter()
            .all(|p| p.config.function < MAX_TRACED_FUNCTIONS),
        "more than {MAX_TRACED_FUNCTIONS} traced functions: name fewer"
    );
    let mut ebpf = EbpfLoader::new()
        .override_global("TARGET_TGID", &scope.pid(), true)
        .override_global("TRACK_CALLS", &track_calls, true)
        .override_global("SEND_CALLS", &send_calls, true)
        .override_global("TAIL_SLOWER_THAN_NS", &tail.slower_than_ns, true)
        .override_global("TAIL_ERRORS", &u32::from(tail.errors), true)
        .override_global("PARAMS_IN_KERNEL", &u32::from(params), true)
        .override_global("COUNT_CALLERS", &u32::from(callers), true)
        .map_max_entries("CALLERS", sized(callers, MAX_CALLERS))
        .map_max_entries(
            "ACTIVE_CALLS",
            sized(track_calls != 0, MAX_ACTIVE_GOROUTINES),
        )
        .map_max_entries("CALL_STARTS", sized(has(ProbeKind::Return), MAX_OPEN_CALLS))
        .map_max_entries(
            "INNERMOST_CALL",
            sized(has(ProbeKind::Return), MAX_ACTIVE_GOROUTINES),
        )
        .map_max_entries("LAST_RET", sized(on_rets, MAX_ACTIVE_GOROUTINES))
        .map_max_entries("FAST_RETURNS", (return_sites as u32).max(1))
        .map_max_entries(
            "SAMPLED_LIVE",
            sized(
                has(ProbeKind::SampledMalloc) || has(ProbeKind::FreeSpecial),
                MAX_LIVE_SAMPLES,
            ),
        )
        .map_max_entries("PARAM_STATS", params_entries(functions * MAX_PARAMS as u32))
        .map_max_entries("CALL_HEAP", params_entries(functions))
        .map_max_entries("OPEN_PARAMS", params_entries(MAX_OPEN_CALLS))
        .map_max_entries("UNPLACED", params_entries(MAX_UNPLACED))
        .map_max_entries(
            "HELD_ENTRIES",
            sized(tail != TailCapture::default(), MAX_HELD_ENTRIES),
        )
        .load(PROBES)
        .context("loading the eBPF programs")?;

    {
        let mut go_offsets: Array<_, GoOffsets> =
            Array::try_from(ebpf.map_mut("GO_OFFSETS").context("map GO_OFFSETS")?)?;
        go_offsets.set(0, offsets, 0)?;
    }
    {
        let mut configs: Array<_, ProbeConfig> =
            Array::try_from(ebpf.map_mut("PROBE_CONFIGS").context("map PROBE_CONFIGS")?)?;
        for (id, point) in points.iter().enumerate() {
            configs.set(id as u32, point.config, 0)?;
        }
    }
    {
        let mut fast_returns: HashMap<_, u64, u8> =
            HashMap::try_from(ebpf.map_mut("FAST_RETURNS").context("map FAST_RETURNS")?)?;
        let sites = points
            .iter()
            .filter(|p| p.flags & COOKIE_AT_RETURN_SITE != 0)
            .map(|p| p.config.return_site);
        for site in sites {
            fast_returns.insert(site, 0, 0)?;
        }
    }

    {
        let mut ranges: Array<_, AddressRange> = Array::try_from(
            ebpf.map_mut("ADDRESS_RANGES")
                .context("map ADDRESS_RANGES")?,
        )?;
        write_address_ranges(&mut ranges, memory)?;
    }

    let groups: Vec<Group> = ATTACH_ORDER
        .into_iter()
        .map(|kind| Group {
            program: program_for(programs, kind),
            kind,
            sites: points
                .iter()
                .enumerate()
                .filter(|(_, p)| p.kind == kind)
                .map(|(id, p)| Site {
                    addr: p.addr,
                    file_offset: p.file_offset,
                    cookie: id as u64 | p.flags,
                })
                .collect(),
        })
        .filter(|g| !g.sites.is_empty())
        .collect();
    let multi = if std::env::var_os(PERF_EVENT_UPROBES).is_some() {
        Err(anyhow::anyhow!("{PERF_EVENT_UPROBES} is set"))
    } else {
        attach_multi(&ebpf, exe, scope.pid(), &groups)
    };
    let links = match multi {
        Ok(links) => links,
        Err(e) => {
            tracing::debug!("one perf event per uprobe, slower to detach: {e:#}");
            attach_perf_events(&mut ebpf, exe, scope, &groups)?
        }
    };

    let events = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS")?)?;
    let counters = PerCpuArray::try_from(
        ebpf.take_map("PROBE_COUNTERS")
            .context("map PROBE_COUNTERS")?,
    )?;
    let alloc_sites =
        PerCpuHashMap::try_from(ebpf.take_map("ALLOC_SITES").context("map ALLOC_SITES")?)?;
    let alloc_stacks =
        HashMap::try_from(ebpf.take_map("ALLOC_STACKS").context("map ALLOC_STACKS")?)?;
    let sampled_live =
        HashMap::try_from(ebpf.take_map("SAMPLED_LIVE").context("map SAMPLED_LIVE")?)?;
    let gc_cycles = HashMap::try_from(ebpf.take_map("GC_CYCLES").context("map GC_CYCLES")?)?;
    let claimed_tgid = Array::try_from(ebpf.take_map("CLAIMED_TGID").context("map CLAIMED_TGID")?)?;
    let call_stats = PerCpuArray::try_from(ebpf.take_map("CALL_STATS").context("map CALL_STATS")?)?;
    let call_starts = HashMap::try_from(ebpf.take_map("CALL_STARTS").context("map CALL_STARTS")?)?;
    let goroutine_calls = HashMap::try_from(
        ebpf.take_map("INNERMOST_CALL")
            .context("map INNERMOST_CALL")?,
    )?;
    let rets_closed = Array::try_from(ebpf.take_map("RETS_CLOSED").context("map RETS_CLOSED")?)?;
    let entries_detached = Array::try_from(
        ebpf.take_map("ENTRIES_DETACHED")
            .context("map ENTRIES_DETACHED")?,
    )?;
    let open_via_ret =
        PerCpuArray::try_from(ebpf.take_map("OPEN_VIA_RET").context("map OPEN_VIA_RET")?)?;
    let param_stats =
        PerCpuArray::try_from(ebpf.take_map("PARAM_STATS").context("map PARAM_STATS")?)?;
    let call_heap = PerCpuArray::try_from(ebpf.take_map("CALL_HEAP").context("map CALL_HEAP")?)?;
    let address_ranges = Array::try_from(
        ebpf.take_map("ADDRESS_RANGES")
            .context("map ADDRESS_RANGES")?,
    )?;
    let unplaced = PerCpuHashMap::try_from(ebpf.take_map("UNPLACED").context("map UNPLACED")?)?;
    let callers = PerCpuHashMap::try_from(ebpf.take_map("CALLERS").context("map CALLERS")?)?;
    Ok(Attached {
        counts: KernelCounts {
            counters,
            alloc_sites,
            alloc_stacks,
            sampled_live,
            gc_cycles,
            call_stats,
            call_starts,
            goroutine_calls,
            param_stats,
            call_heap,
            unplaced,
            callers,
        },
        claimed_tgid,
        rets_closed,
        entries_detached,
        open_via_ret,
        windows: None,
        address_ranges: Some(AddressRanges(address_ranges)),
        ebpf,
        links,
        events: Some(events),
    })
}

fn write_address_ranges<T: std::borrow::BorrowMut<MapData>>(
    map: &mut Array<T, AddressRange>,
    ranges: &[AddressRange],
) -> anyhow::Result<()> {
    for i in 0..MAX_ADDRESS_RANGES {
        let range = ranges
            .get(i as usize)
            .copied()
            .unwrap_or(AddressRange::UNUSED);
        map.set(i, range, 0)?;
    }
    Ok(())
}

/// Set, escapade attaches one perf event per uprobe even where the kernel has `uprobe_multi`
/// links: what it does on kernels before 6.6, here to test that path.
pub const PERF_EVENT_UPROBES: &str = "ESCAPADE_PERF_EVENT_UPROBES";

/// The order probes go in. Returns first: a call that starts between the two would otherwise
/// show an entry that never returns; this way it shows as a return without entry, like any
/// call in flight. Frees before samples: a sample taken between the two would show as never
/// freed.
const ATTACH_ORDER: [ProbeKind; 10] = [
    ProbeKind::Return,
    ProbeKind::Allocated,
    ProbeKind::Allocating,
    ProbeKind::Entry,
    ProbeKind::Malloc,
    ProbeKind::Newproc,
    ProbeKind::GcCycle,
    ProbeKind::StackGrowth,
    ProbeKind::FreeSpecial,
    ProbeKind::SampledMalloc,
];

/// The probe points of one kind, which one program serves.
struct Group {
    program: &'static str,
    kind: ProbeKind,
    sites: Vec<Site>,
}

struct Site {
    /// Link-time address, for messages.
    addr: u64,
    file_offset: u64,
    /// The probe id (its index in `PROBE_CONFIGS`) and its `COOKIE_*` flags.
    cookie: u64,
}

/// How the uprobes are held.
enum Links {
    /// One link per kind of probe: detaching one waits one grace period however many uprobes
    /// it holds. The return probes' link stays until the end, to see calls in flight return.
    Multi {
        entries: Vec<MultiLink>,
        _returns: Vec<MultiLink>,
        /// The probes on the traced functions' `RET`s, in a link of their own so that
        /// `--returns sampled` can detach and attach them in windows.
        rets: RetProbes,
    },
    /// One perf event per uprobe (kernels before 6.6); the return probes' detach with the
    /// eBPF object.
    PerfEvents {
        entries: Vec<(&'static str, UProbeLinkId)>,
    },
}

const NO_SAMPLING: &str = "--returns sampled needs uprobe_multi links (Linux 6.6 or later): \
     without them, detaching the RET probes takes 0.1 s a probe";

/// The program of the `RET` probes, their sites and their link as attached.
type RetGroup = (&'static str, Vec<(u64, u64)>, Option<MultiLink>);

/// The `RET` probes' link, and what attaching it again takes.
struct RetProbes {
    programs: MultiPrograms,
    program: &'static str,
    exe: std::path::PathBuf,
    pid: u32,
    /// (file offset, cookie) of each `RET` probe.
    sites: Vec<(u64, u64)>,
    link: Option<MultiLink>,
}

impl RetProbes {
    fn attach(&self) -> anyhow::Result<MultiLink> {
        self.programs
            .attach(self.program, &self.exe, self.pid, &self.sites)
            .with_context(|| format!("attaching the RET probes' {} link", self.program))
    }
}

fn program_for(programs: Programs, kind: ProbeKind) -> &'static str {
    match (programs, kind) {
        (Programs::Empty, _) => "go_empty",
        (_, ProbeKind::Entry) => "go_entry",
        (_, ProbeKind::Return) => "go_return",
        (_, ProbeKind::Malloc) => "go_malloc",
        (_, ProbeKind::Newproc) => "go_newproc",
        (_, ProbeKind::GcCycle) => "go_gc",
        (_, ProbeKind::StackGrowth) => "go_copystack",
        (_, ProbeKind::Allocating) => "go_allocating",
        (_, ProbeKind::Allocated) => "go_allocated",
        (_, ProbeKind::SampledMalloc) => "go_mprof_malloc",
        (_, ProbeKind::FreeSpecial) => "go_free_special",
    }
}

/// Every group in one `uprobe_multi` link, the `RET` probes in one of their own. On failure
/// nothing stays attached, so that the caller can fall back to perf events.
fn attach_multi(ebpf: &Ebpf, exe: &Path, pid: u32, groups: &[Group]) -> anyhow::Result<Links> {
    let mut names: Vec<&'static str> = groups.iter().map(|g| g.program).collect();
    names.sort_unstable();
    names.dedup();
    let programs = MultiPrograms::load(PROBES, ebpf, &names)?;
    let (mut entries, mut returns) = (Vec::new(), Vec::new());
    let mut rets: Option<RetGroup> = None;
    for group in groups {
        let (on_rets, sites): (Vec<_>, Vec<_>) = group
            .sites
            .iter()
            .map(|s| (s.file_offset, s.cookie))
            .partition(|&(_, cookie)| {
                group.kind == ProbeKind::Return && cookie & COOKIE_AT_RETURN_SITE == 0
            });
        let attach = |sites: &[(u64, u64)]| {
            programs
                .attach(group.program, exe, pid, sites)
                .with_context(|| format!("attaching {} uprobe_multi link", group.program))
        };
        let linked = (!sites.is_empty()).then(|| attach(&sites)).transpose();
        let linked_rets = linked.and_then(|link| {
            let rets = (!on_rets.is_empty())
                .then(|| attach(&on_rets))
                .transpose()?;
            Ok((link, rets))
        });
        let (link, ret_link) = match linked_rets {
            Ok(links) => links,
            Err(e) => {
                let earlier_rets = rets.and_then(|(_, _, link): RetGroup| link);
                let all = entries.into_iter().chain(returns).chain(earlier_rets);
                uprobe_multi::close_together(all.collect());
                return Err(e);
            }
        };
        match (link, group.kind) {
            (Some(link), ProbeKind::Return) => returns.push(link),
            (Some(link), _) => entries.push(link),
            (None, _) => {}
        }
        if group.kind == ProbeKind::Return {
            rets = Some((group.program, on_rets, ret_link));
        }
    }
    let (program, sites, link) = rets.unwrap_or(("go_return", Vec::new(), None));
    Ok(Links::Multi {
        entries,
        _returns: returns,
        rets: RetProbes {
            programs,
            program,
            exe: exe.to_path_buf(),
            pid,
            sites,
            link,
        },
    })
}

fn attach_perf_events(
    ebpf: &mut Ebpf,
    exe: &Path,
    scope: Scope,
    groups: &[Group],
) -> anyhow::Result<Links> {
    let scope = match scope {
        Scope::Process(pid) => {
            UProbeScope::OneProcess(NonZeroU32::new(pid).context("PID 0 is not a process")?)
        }
        Scope::NextProcess => UProbeScope::AllProcesses,
    };
    // Load every program before attaching any, so the returns-then-entries gap stays short.
    for group in groups {
        let program = uprobe_program(ebpf, group.program)?;
        if program.fd().is_err() {
            program
                .load()
                .with_context(|| format!("loading program {}", group.program))?;
        }
    }
    let mut entries = Vec::new();
    for group in groups {
        let program = uprobe_program(ebpf, group.program)?;
        for site in &group.sites {
            let attach_point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(site.file_offset),
                cookie: Some(site.cookie),
            };
            let link = program.attach(attach_point, exe, scope).with_context(|| {
                format!(
                    "attaching a uprobe at {:#x} in {}",
                    site.addr,
                    exe.display()
                )
            })?;
            if group.kind != ProbeKind::Return {
                entries.push((group.program, link));
            }
        }
    }
    Ok(Links::PerfEvents { entries })
}

fn uprobe_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut UProbe> {
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
        .try_into()?)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer; failure only matters on old kernels.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if ret != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
