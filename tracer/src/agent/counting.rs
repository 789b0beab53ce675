//! The agent's sink: what the kernel counts and times, folded into the metrics and the live
//! profile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use probe_common::{CallEvent, CallStats};
use prometheus_client::metrics::counter::Counter;

use super::config::TargetConfig;
use super::executable::{Probes, programs};
use super::metrics::{CallLatency, SiteLabels};
use super::recording::Recording;
use super::state::{LiveProfile, Shared, lock_profile};
use crate::export::pprof::scale;
use crate::model::allocs::{self, AllocReport};
use crate::model::decode::Decoder;
use crate::model::records::CallModel;
use crate::probes::attach::Programs;
use crate::probes::plan::RuntimeProbe;
use crate::probes::snapshot::{Counters, KernelCounts};
use crate::record::live::CpuSampling;
use crate::session::Ended;
use crate::sink::EventSink;
use crate::tracee::Target;
use crate::tracee::clock::WallClock;
use crate::tracee::gobin::GoBinary;
use crate::views::text::site_text;

/// How often a session folds the kernel's counts into the metrics.
const FOLD_INTERVAL: Duration = Duration::from_secs(1);

/// Probe hits not yet added to the metrics.
#[derive(Default)]
struct Hits {
    emulated: u64,
    single_stepped: u64,
}

/// What the kernel had counted at the last fold, to add only what is new.
#[derive(Default)]
struct Folded {
    /// Per site label: estimated objects and bytes.
    sites: HashMap<String, (u64, u64)>,
    goroutines: HashMap<String, u64>,
    gc_cycles: u64,
    /// The newest GC cycle already observed, by its end time.
    gc_last_end_ns: u64,
    /// Allocator, goroutine-creation and stack-growth probe hits.
    counted_hits: u64,
}

struct AllocCounting<'a> {
    /// Whether the GC cycle probe is single-stepped (on `RET`s) rather than emulated.
    gc_single_stepped: bool,
    decoder: Decoder<'a>,
    /// Sampled mode's `MemProfileRate`; None in exact mode.
    rate: Option<u64>,
    clock: WallClock,
    sites: Arc<Mutex<SiteLabels>>,
    last: Folded,
}

/// How a traced function's probes sit, for the probe-hit metrics.
struct Probed {
    /// The entry probe is on an instruction the kernel emulates.
    fast_entry: bool,
    /// Its `RET`s are probed (single-stepped).
    rets: bool,
}

/// The agent's sink: folds what the kernel counts and times into the metrics and the live
/// profile once a second, and hands each call's events, when there are any, to the recording.
pub(super) struct Counting<'a> {
    name: String,
    /// The calls per caller from each call's events, when a recording needs them anyway.
    model: Option<CallModel<'a>>,
    /// Else from the kernel's counts per caller: the binary and bias that name the callers.
    callers: Option<(&'a GoBinary, u64)>,
    /// Per traced function: its calls counter, duration histogram, and how it is probed.
    calls: Vec<(Counter, CallLatency, Probed)>,
    /// What the kernel had counted and timed of each traced function at the last fold.
    folded_calls: Vec<CallStats>,
    allocs: Option<AllocCounting<'a>>,
    shared: Arc<Shared>,
    profile: Arc<Mutex<LiveProfile>>,
    recording: Option<Recording<'a>>,
    cpu: Option<CpuSampling<'a>>,
    hits: Hits,
    /// The probes' counters at the last fold.
    counters: Counters,
    last_fold: Instant,
}

impl EventSink for Counting<'_> {
    fn event(&mut self, event: &CallEvent) -> anyhow::Result<()> {
        if let Some(recording) = self.recording.as_mut() {
            recording.event(event)?;
        }
        let Some(model) = self.model.as_mut() else {
            return Ok(());
        };
        let mut profile = lock_profile(&self.profile);
        let Some(record) = model.record(event, &mut profile.symbols) else {
            return Ok(());
        };
        profile.calls.add(&record);
        drop(profile);
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    fn checkpoint(&mut self, counts: &KernelCounts) -> anyhow::Result<()> {
        let fold = self.last_fold.elapsed() >= FOLD_INTERVAL;
        if fold {
            self.fold(counts)?;
        }
        if let Some(recording) = self.recording.as_mut() {
            recording.checkpoint(counts, fold)?;
        }
        Ok(())
    }
}

/// Whose calls a sink counts.
#[derive(Clone, Copy)]
pub(super) enum Counted<'a> {
    /// One process, whose memory decodes its events and allocations.
    Process(&'a Target),
    /// Every process of a non-PIE binary (no load bias): their calls, from the kernel's counts.
    File(&'a GoBinary),
}

impl<'a> Counting<'a> {
    /// Counts what `probes` see in `counted`, for `config`'s target; `rate` is the heap
    /// profiler's in sampled mode.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &TargetConfig,
        probes: &'a Probes,
        counted: Counted<'a>,
        rate: Option<u64>,
        shared: &Arc<Shared>,
        sites: Arc<Mutex<SiteLabels>>,
        profile: Arc<Mutex<LiveProfile>>,
        recording: Option<Recording<'a>>,
        cpu: Option<CpuSampling<'a>>,
    ) -> Counting<'a> {
        let by_event = programs(config) == Programs::Tracing;
        let (binary, bias, process) = match counted {
            Counted::Process(target) => (&*target.binary, target.bias, Some(target)),
            Counted::File(binary) => (binary, 0, None),
        };
        Counting {
            name: config.name.clone(),
            model: process
                .filter(|_| by_event && !probes.plan.traced.is_empty())
                .map(|target| CallModel::new(Decoder::of(target), &probes.plan, false)),
            callers: (!by_event).then_some((binary, bias)),
            calls: probes
                .plan
                .traced
                .iter()
                .map(|t| {
                    let labels = vec![
                        ("target", config.name.clone()),
                        ("function", t.function.name.clone()),
                    ];
                    (
                        shared.metrics.calls.get_or_create(&labels).clone(),
                        shared.metrics.call_duration.get_or_create(&labels).clone(),
                        Probed {
                            fast_entry: t.entry.is_fast(),
                            rets: t.returns.rets > 0,
                        },
                    )
                })
                .collect(),
            folded_calls: vec![CallStats::default(); probes.plan.traced.len()],
            allocs: probes
                .counting
                .as_ref()
                .zip(process)
                .map(|(counting, target)| AllocCounting {
                    // Where no direct call to mProf_Flush was found, the GC probe sits on RETs.
                    gc_single_stepped: counting
                        .placed
                        .iter()
                        .any(|(_, probe)| matches!(probe, RuntimeProbe::Returns(_))),
                    decoder: Decoder::of(target),
                    rate,
                    clock: WallClock::now(),
                    sites,
                    last: Folded::default(),
                }),
            shared: shared.clone(),
            profile,
            recording,
            cpu,
            hits: Hits::default(),
            counters: Counters::default(),
            last_fold: Instant::now(),
        }
    }

    /// The last fold, once the session has ended, and the recording's end.
    pub fn finish(
        mut self,
        counts: &KernelCounts,
        ended: Ended,
        malformed: u64,
    ) -> anyhow::Result<()> {
        self.fold(counts)?;
        match self.recording {
            Some(recording) => recording.finish(counts, ended, malformed),
            None => Ok(()),
        }
    }

    /// Adds what the kernel counted since the last fold to the metrics.
    fn fold(&mut self, counts: &KernelCounts) -> anyhow::Result<()> {
        let read_at = Instant::now();
        self.last_fold = read_at;
        let counters = counts.counters();
        let metrics = &self.shared.metrics;
        metrics
            .events
            .inc_by(counters.events.saturating_sub(self.counters.events));
        metrics
            .events_dropped
            .inc_by(counters.dropped.saturating_sub(self.counters.dropped));
        self.counters = counters;
        // Calls as the kernel counted and timed them: none lost with the events.
        let now = counts.call_stats(self.calls.len())?;
        for (((calls, latency, probed), was), now) in
            self.calls.iter().zip(&self.folded_calls).zip(&now)
        {
            let entries = now.entries.saturating_sub(was.entries);
            let mut new = *now;
            new.returns = now.returns.saturating_sub(was.returns);
            new.caller_returns = now.caller_returns.saturating_sub(was.caller_returns);
            new.total_ns = now.total_ns.saturating_sub(was.total_ns);
            for (n, was) in new.latency.iter_mut().zip(&was.latency) {
                *n = n.saturating_sub(*was);
            }
            calls.inc_by(entries);
            latency.add(&new);
            if probed.fast_entry {
                self.hits.emulated += entries;
            } else {
                self.hits.single_stepped += entries;
            }
            self.hits.emulated += new.caller_returns;
            // Where the RETs are probed every call that returns hits one, also those a return
            // site closes.
            if probed.rets {
                self.hits.single_stepped += new.returns;
            }
        }
        self.folded_calls = now;
        if let Some((binary, bias)) = self.callers {
            let callers = counts.callers()?;
            let mut profile = lock_profile(&self.profile);
            for (key, stats) in callers {
                // A return address: the call is the instruction before it.
                let caller_pc = key.return_addr.wrapping_sub(bias).wrapping_sub(1);
                profile.symbols.learn(binary, caller_pc);
                profile.calls.counts.insert(
                    (key.function as usize, caller_pc),
                    (stats.calls, stats.total_ns),
                );
            }
        }
        if let Some(allocs) = self.allocs.as_mut() {
            let report = allocs::view(counts, &allocs.clock, &mut allocs.decoder)?;
            let counted = allocs.fold(&self.name, &self.shared, &report, &mut self.hits);
            self.hits.emulated += counted;
            let mut profile = lock_profile(&self.profile);
            for pc in report.stacks.iter().flat_map(|s| &s.pcs) {
                profile.symbols.learn(allocs.decoder.binary, *pc);
            }
            profile.allocs = Some(report);
        }
        if let Some(cpu) = &self.cpu {
            let samples = cpu.sampler.profile(counts, cpu.binary, cpu.bias)?;
            let mut profile = lock_profile(&self.profile);
            for pc in samples.stacks.iter().flat_map(|s| &s.pcs) {
                profile.symbols.learn(cpu.binary, *pc);
            }
            profile.cpu = Some(samples);
        }
        lock_profile(&self.profile).folded = read_at;
        let hits = std::mem::take(&mut self.hits);
        metrics.probe_hits(&self.name, hits.emulated, hits.single_stepped);
        Ok(())
    }
}

impl AllocCounting<'_> {
    /// Adds the allocation view's news to the metrics; returns the emulated probe hits it
    /// implies (the allocator, goroutine-creation and stack-growth probes), and adds the
    /// single-stepped ones (a GC cycle's `RET`) to `hits`.
    fn fold(
        &mut self,
        target: &str,
        shared: &Shared,
        report: &AllocReport,
        hits: &mut Hits,
    ) -> u64 {
        let metrics = &shared.metrics;
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let mut now: HashMap<String, (u64, u64)> = HashMap::new();
        // Most bytes first, so the biggest sites get the labels of their own.
        for site in &report.sites {
            let label = sites.label(&site_text(&site.site));
            let (objects, bytes) = scale(site.objects, site.bytes, self.rate);
            let total = now.entry(label).or_default();
            total.0 += objects.max(0) as u64;
            total.1 += bytes.max(0) as u64;
        }
        for (label, &(objects, bytes)) in &now {
            let (was_objects, was_bytes) = self.last.sites.get(label).copied().unwrap_or_default();
            let labels = vec![("target", target.to_string()), ("site", label.clone())];
            metrics
                .alloc_objects
                .get_or_create(&labels)
                .inc_by(objects.saturating_sub(was_objects));
            metrics
                .alloc_bytes
                .get_or_create(&labels)
                .inc_by(bytes.saturating_sub(was_bytes));
        }
        self.last.sites = now;

        let mut goroutines: HashMap<String, u64> = HashMap::new();
        let mut growths = 0;
        for g in &report.goroutines {
            *goroutines
                .entry(sites.label(&site_text(&g.site)))
                .or_default() += g.count;
            growths += g.stack_growths;
        }
        for (label, &count) in &goroutines {
            let was = self.last.goroutines.get(label).copied().unwrap_or_default();
            metrics
                .goroutines_created
                .get_or_create(&vec![
                    ("target", target.to_string()),
                    ("site", label.clone()),
                ])
                .inc_by(count.saturating_sub(was));
        }
        self.last.goroutines = goroutines;

        let target_label = vec![("target", target.to_string())];
        let cycles = report.gc_cycles.saturating_sub(self.last.gc_cycles);
        metrics
            .gc_cycles
            .get_or_create(&target_label)
            .inc_by(cycles);
        if self.gc_single_stepped {
            hits.single_stepped += cycles;
        } else {
            hits.emulated += cycles;
        }
        self.last.gc_cycles = report.gc_cycles;
        let pauses = metrics.gc_pause.get_or_create(&target_label);
        for cycle in report
            .gc
            .iter()
            .filter(|c| c.end_ns > self.last.gc_last_end_ns)
        {
            if let Some(pause) = cycle.pause_ns {
                pauses.observe(pause as f64 / 1e9);
            }
        }
        if let Some(newest) = report.gc.iter().map(|c| c.end_ns).max() {
            self.last.gc_last_end_ns = self.last.gc_last_end_ns.max(newest);
        }

        let counted = report.objects + report.goroutines_created + growths;
        let new_hits = counted.saturating_sub(self.last.counted_hits);
        self.last.counted_hits = counted;
        new_hits
    }
}
