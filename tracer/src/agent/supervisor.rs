//! One target's life in the agent: find the processes its selector matches, attach to each
//! (planned from that process's own executable, so a binary replaced on disk is planned
//! afresh), count what the probes see into the shared metrics, and detach when the process
//! exits or the agent stops.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use std::time::{Duration, Instant};

use probe_common::{CallEvent, CallStats};
use prometheus_client::metrics::counter::Counter;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use super::config::{AllocMode, RecordConfig, Selector, TargetConfig};
use super::discover::Processes;
use super::lease::Lease;
use super::metrics::{CallLatency, SiteLabels};
use super::models::{AgentModels, Models};
use super::retention;
use super::state::{LiveProfile, ProcessStatus, Shared, lock_profile};
use crate::cpu::Sampler;
use crate::export::CallSites;
use crate::export::pprof::scale;
use crate::hints::without_dwarf;
use crate::model::allocs::{self, AllocReport};
use crate::model::decode::Decoder;
use crate::model::records::{CallModel, FunctionInfo, Symbols};
use crate::probes::attach::{Attached, Programs, Scope, attach};
use crate::probes::plan::{
    CountingProbes, PlacementMode, Plan, PlanOptions, ProbePoint, RuntimeProbe, counting_probes,
};
use crate::probes::snapshot::{Counters, KernelCounts};
use crate::record::live::{CpuSampling, RecordSink};
use crate::record::writer::Writer;
use crate::record::{AllocSettings, Header};
use crate::session::{self, Ended};
use crate::sink::EventSink;
use crate::tracee::Target;
use crate::tracee::clock::WallClock;
use crate::tracee::gobin::GoBinary;
use crate::tracee::memprofile::MemProfileRate;
use crate::views::Output;
use crate::views::text::site_text;
use crate::views::trace::TraceView;

/// How soon to look again when probes could not wait in the file (a writer had it open).
const RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// How often to look at the processes when nothing happens, for a target's processes the
/// view of the node has not changed for (a process that exited unseen lets go of probes
/// waiting in its file).
const IDLE_INTERVAL: Duration = Duration::from_secs(2);
/// How often a session folds the kernel's counts into the metrics.
const FOLD_INTERVAL: Duration = Duration::from_secs(1);

/// What every target's supervisor shares with the others.
#[derive(Clone)]
pub struct Node {
    /// The agent's view of the node's processes.
    pub processes: watch::Receiver<Processes>,
    pub models: AgentModels,
}

/// Runs until `stop` turns true, then detaches from every process of the target.
pub async fn supervise(
    config: TargetConfig,
    shared: Arc<Shared>,
    node: Node,
    stop: watch::Receiver<bool>,
) {
    let Node {
        mut processes,
        models: agent_models,
    } = node;
    shared.add_target(&config.name, config.selector.to_string());
    let sites = shared.site_labels(&config.name);
    let writing = Writing::default();
    let mut models = Models::new(agent_models);
    let mut running: HashMap<u32, tokio::task::JoinHandle<()>> = HashMap::new();
    // Processes that could not be traced are not retried until they exit.
    let mut failed: HashSet<u32> = HashSet::new();
    let mut scan_stop = stop.clone();
    let mut ahead: Option<Ahead> = None;
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel();
    // A writer opening a file the probes wait in breaks their lease, with this signal.
    let mut lease_breaks = signal(SignalKind::io())
        .map_err(|e| tracing::warn!("no probes ahead of new processes: handling SIGIO: {e}"))
        .ok();
    loop {
        if ahead.as_ref().is_some_and(|a| a.lease.broken()) {
            // Detaches, then lets the writer go.
            ahead = None;
        }
        running.retain(|_, task| !task.is_finished());
        let pids = processes.borrow_and_update().matching(&config.selector);
        failed.retain(|pid| pids.contains(pid));
        let mut sleep = IDLE_INTERVAL;
        if pids.is_empty() && running.is_empty() && lease_breaks.is_some() {
            if let Selector::Exe(exe) = &config.selector {
                models.load(exe, config.symbols.as_deref()).await;
            }
            if !rearm(&mut ahead, &config, &mut models).await {
                sleep = RETRY_INTERVAL;
            }
        }
        for pid in pids {
            if running.contains_key(&pid) || failed.contains(&pid) {
                continue;
            }
            let exe = PathBuf::from(format!("/proc/{pid}/exe"));
            models.load(&exe, config.symbols.as_deref()).await;
            match PlannedProcess::open(pid, &config, &mut models, &mut ahead) {
                Ok(planned) => {
                    let task =
                        planned.run(shared.clone(), sites.clone(), writing.clone(), stop.clone());
                    let ended = ended_tx.clone();
                    let task = async move {
                        task.await;
                        let _ = ended.send(());
                    };
                    running.insert(pid, tokio::task::spawn_local(task));
                }
                Err(error) => {
                    failed.insert(pid);
                    let error = format!("{error:#}");
                    tracing::warn!("target {}: {error}", config.name);
                    shared.failed(&config.name, error);
                }
            }
        }
        shared.probes_ahead(&config.name, ahead.is_some());
        let changed = async {
            // The sender goes only as the agent stops, which `stop` says.
            if processes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = changed => {}
            // To attach ahead of the next process as soon as the last one is gone.
            _ = ended_rx.recv() => {}
            _ = lease_broken(&mut lease_breaks) => {}
            _ = scan_stop.wait_for(|stop| *stop) => break,
        }
    }
    for (_, task) in running {
        let _ = task.await;
    }
}

async fn lease_broken(breaks: &mut Option<Signal>) {
    match breaks {
        Some(breaks) => _ = breaks.recv().await,
        None => std::future::pending().await,
    }
}

/// Keeps probes attached ahead of the target's next process while none runs: for the file at
/// its path now, and not claimed by a process that has come and gone unseen.
/// Returns false while a writer has the file open (armed again as soon as it is done).
async fn rearm(ahead: &mut Option<Ahead>, config: &TargetConfig, models: &mut Models) -> bool {
    if let (Some(a), Selector::Exe(exe)) = (ahead.as_ref(), &config.selector) {
        let current = models
            .get(exe, config.symbols.as_deref())
            .is_ok_and(|binary| Arc::ptr_eq(&binary, &a.binary));
        // A live claimant not among the target's processes (the same file under another
        // path) would claim new probes at once too.
        let claimant_gone = a
            .attached
            .claimed_by()
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if current && !claimant_gone {
            return true;
        }
    }
    // Detach the old probes before attaching new ones.
    *ahead = None;
    match Ahead::arm(config, models).await {
        Ok(armed) => {
            *ahead = armed;
            true
        }
        Err(error) => {
            tracing::debug!("target {}: no probes ahead: {error:#}", config.name);
            let busy = error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::WouldBlock);
            !busy
        }
    }
}

/// What to probe in one binary for a target's config: the same for each of its processes.
struct Probes {
    plan: Plan,
    counting: Option<CountingProbes>,
    /// What the binary cannot give that the config asks for.
    notes: Vec<String>,
}

impl Probes {
    fn plan(binary: &GoBinary, config: &TargetConfig) -> anyhow::Result<Probes> {
        let plan = if config.functions.is_empty() {
            Plan {
                traced: Vec::new(),
                points: Vec::new(),
            }
        } else {
            let functions = binary.resolve(&config.functions)?;
            let options = PlanOptions {
                capture_strings: config.capture_strings,
                ..PlanOptions::default()
            };
            Plan::new(binary, functions, &options)?
        };
        let notes = without_dwarf(binary.has_dwarf())
            .into_iter()
            .map(|what| format!("{what} (`symbols = FILE` in the target's config)"))
            .collect();
        let counting = match config.allocs {
            AllocMode::Off => None,
            AllocMode::Sampled => Some(counting_probes(binary, PlacementMode::Fast, false)?),
            AllocMode::Exact => Some(counting_probes(binary, PlacementMode::Fast, true)?),
        };
        Ok(Probes {
            plan,
            counting,
            notes,
        })
    }

    /// The call probes first (events carry their index, which the plan's points keep), then
    /// the counting probes.
    fn points(&self) -> Vec<ProbePoint> {
        let counting = self.counting.iter().flat_map(|c| c.points.iter());
        self.plan.points.iter().chain(counting).cloned().collect()
    }
}

/// Probes attached to an `exe` target's file while none of its processes runs, so that the
/// next one runs its first instruction with them in place (non-PIE builds, whose addresses
/// are known before the process exists).
struct Ahead {
    binary: Arc<GoBinary>,
    probes: Probes,
    /// Dropped before the lease: the probes go before a writer may change the file.
    attached: Attached,
    lease: Lease,
}

impl Ahead {
    /// Attaches ahead of the next process of `config`'s file, if the target names one.
    async fn arm(config: &TargetConfig, models: &mut Models) -> anyhow::Result<Option<Ahead>> {
        let Selector::Exe(exe) = &config.selector else {
            return Ok(None);
        };
        let lease = Lease::take(exe)
            .with_context(|| format!("taking a read lease on {}", exe.display()))?;
        // Read after the lease is held: the file cannot change unseen from here on.
        let binary = models.get(exe, config.symbols.as_deref())?;
        if binary.is_pie {
            return Ok(None);
        }
        let (exe, config) = (exe.clone(), config.clone());
        // The verifier takes seconds over a big program: not on the thread that drains every
        // session and answers HTTP.
        tokio::task::spawn_blocking(move || {
            let probes = Probes::plan(&binary, &config)?;
            let attached = attach(
                Scope::NextProcess,
                &exe,
                binary.go_offsets(0),
                &probes.points(),
                programs(&config),
                &[],
                config.cpu_hz != 0,
            )?;
            Ok(Some(Ahead {
                binary,
                probes,
                attached,
                lease,
            }))
        })
        .await?
    }
}

/// A process of the target, opened and planned, not attached yet (its `run` attaches and runs a
/// [`session::Session`] on it).
struct PlannedProcess {
    target: Target,
    config: TargetConfig,
    probes: Probes,
    /// The heap profiler's sampling rate (sampled mode), when it could be checked.
    rate: Option<MemProfileRate>,
    /// What this process cannot give that its target's config asks for.
    notes: Vec<String>,
    /// The probes attached ahead of this process, when it was the one to run next.
    ahead: Option<Attached>,
}

impl PlannedProcess {
    /// Opens process `pid`, with the probes attached ahead of it if it is the process they
    /// wait for (or claimed, being the only one that runs the file).
    fn open(
        pid: u32,
        config: &TargetConfig,
        models: &mut Models,
        ahead: &mut Option<Ahead>,
    ) -> anyhow::Result<PlannedProcess> {
        let target = Target::open_with(pid, |exe| models.get(exe, config.symbols.as_deref()))?;
        let (probes, ahead) = match ahead
            .take_if(|a| Arc::ptr_eq(&a.binary, &target.binary) && a.attached.claim(pid))
        {
            Some(a) => (a.probes, Some(a.attached)),
            None => (Probes::plan(&target.binary, config)?, None),
        };
        let mut notes = probes.notes.clone();
        // GC cycles and goroutines are still counted when the program sampled nothing: a
        // daemon says what it misses rather than refusing the target.
        let rate = match config.allocs {
            AllocMode::Sampled => {
                MemProfileRate::prepare(&target.binary, &target.process, target.bias, None)
                    .map_err(|e| notes.push(format!("allocations not sampled: {e:#}")))
                    .ok()
            }
            AllocMode::Exact | AllocMode::Off => None,
        };
        Ok(PlannedProcess {
            target,
            config: config.clone(),
            probes,
            rate,
            notes,
            ahead,
        })
    }

    async fn run(
        mut self,
        shared: Arc<Shared>,
        sites: Arc<Mutex<SiteLabels>>,
        writing: Writing,
        mut stop: watch::Receiver<bool>,
    ) {
        let name = self.config.name.clone();
        let pid = self.target.process.pid;
        let ahead = self.ahead.take();
        if let Err(error) = self
            .attach_and_count(ahead, &shared, sites, writing, &mut stop)
            .await
        {
            let error = format!("PID {pid}: {error:#}");
            tracing::warn!("target {name}: {error}");
            shared.failed(&name, error);
        }
        shared.detached(&name, pid);
    }

    async fn attach_and_count(
        &self,
        ahead: Option<Attached>,
        shared: &Arc<Shared>,
        sites: Arc<Mutex<SiteLabels>>,
        writing: Writing,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let target = &self.target;
        let mut probes: Vec<(String, String)> = self
            .probes
            .plan
            .traced
            .iter()
            .map(|t| (t.function.name.clone(), t.entry.to_string()))
            .collect();
        let mut settings = None;
        if let Some(counting) = &self.probes.counting {
            let placed: Vec<(String, String)> = counting
                .placed
                .iter()
                .map(|(f, p)| (f.clone(), p.to_string()))
                .collect();
            probes.extend(placed.iter().cloned());
            settings = Some(AllocSettings {
                mem_profile_rate: self.rate.as_ref().map(|r| r.in_effect),
                probes: placed,
            });
        }
        let attached_ahead = ahead.is_some();
        let mut attached = match ahead {
            Some(attached) => attached,
            None => {
                // The verifier takes seconds over a big program: not on the thread that
                // drains every session and answers HTTP.
                let (pid, exe) = (target.process.pid, target.process.exe.clone());
                let offsets = target.binary.go_offsets(target.bias);
                let (points, programs) = (self.probes.points(), programs(&self.config));
                let samples_cpu = self.config.cpu_hz != 0;
                tokio::task::spawn_blocking(move || {
                    attach(
                        Scope::Process(pid),
                        &exe,
                        offsets,
                        &points,
                        programs,
                        &[],
                        samples_cpu,
                    )
                })
                .await??
            }
        };
        let mut notes = self.notes.clone();
        let cpu = match self.config.cpu_hz {
            0 => None,
            hz => Sampler::start(&mut attached, hz)
                .map_err(|e| notes.push(format!("CPU not sampled: {e:#}")))
                .ok()
                .map(|sampler| CpuSampling {
                    sampler,
                    binary: &target.binary,
                    bias: target.bias,
                }),
        };
        let functions: Vec<FunctionInfo> = self
            .probes
            .plan
            .traced
            .iter()
            .map(FunctionInfo::of)
            .collect();
        let mut symbols = Symbols::default();
        for t in &self.probes.plan.traced {
            symbols.learn(&target.binary, t.function.entry);
        }
        let header = Header {
            allocs: settings,
            cpu_hz: cpu.as_ref().map(|_| self.config.cpu_hz),
            capture_strings: self.config.capture_strings,
            ..Header::for_target(target, functions.clone())
        };
        let decoder = || Decoder::new(&target.binary, &target.process, target.bias);
        let recording = match &self.config.record {
            // The CPU samples go to the live profile's sampler, not into the file: its header
            // must not promise them.
            Some(record) => Some(Recording::start(
                &self.config.name,
                record,
                Header {
                    cpu_hz: None,
                    ..header.clone()
                },
                functions,
                &self.probes.plan,
                self.probes.counting.is_some().then(decoder),
                decoder,
                &symbols,
                writing,
            )?),
            None => None,
        };
        let profile = Arc::new(Mutex::new(LiveProfile {
            header,
            symbols,
            calls: CallSites::default(),
            allocs: None,
            cpu: None,
            started: Instant::now(),
            folded: Instant::now(),
        }));
        shared.attached(
            &self.config.name,
            ProcessStatus {
                pid: target.process.pid,
                binary: target.process.exe_target.display().to_string(),
                build_id: target.binary.build.build_id.clone(),
                go_version: target.binary.build.go_version.clone(),
                probes,
                notes,
                attached_ahead,
                attached_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            },
            profile.clone(),
        );
        let by_event = programs(&self.config) == Programs::Tracing;
        let mut sink = Counting {
            name: self.config.name.clone(),
            model: (by_event && !self.probes.plan.traced.is_empty())
                .then(|| CallModel::new(decoder(), &self.probes.plan, false)),
            callers: (!by_event).then_some((&*target.binary, target.bias)),
            calls: self
                .probes
                .plan
                .traced
                .iter()
                .map(|t| {
                    let labels = vec![
                        ("target", self.config.name.clone()),
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
            folded_calls: vec![CallStats::default(); self.probes.plan.traced.len()],
            allocs: self.probes.counting.as_ref().map(|counting| AllocCounting {
                // Where no direct call to mProf_Flush was found, the GC probe sits on RETs.
                gc_single_stepped: counting
                    .placed
                    .iter()
                    .any(|(_, probe)| matches!(probe, RuntimeProbe::Returns(_))),
                decoder: decoder(),
                rate: self.rate.as_ref().map(|r| r.in_effect),
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
        };
        let stopped = async {
            let _ = stop.wait_for(|stop| *stop).await;
            Ended::Interrupted
        };
        let mut pump = session::Session::new(target, attached)?;
        let run = pump.run(stopped, &mut sink, None).await;
        if let Some(rate) = &self.rate {
            rate.restore(&target.process, target.bias)?;
        }
        let (ended, malformed) = run?;
        sink.fold(pump.counts())?;
        if let Some(recording) = sink.recording {
            recording.finish(pump.counts(), ended, malformed)?;
        }
        Ok(())
    }
}

/// The recordings a target's sessions are writing now, which retention keeps.
type Writing = Arc<Mutex<HashSet<PathBuf>>>;

/// A process's recording, kept within its target's bounds.
struct Recording<'a> {
    sink: RecordSink<'a, TraceView<std::io::Sink>>,
    config: RecordConfig,
    current: BeingWritten,
}

/// The file a session writes now, registered in its target's `Writing` until dropped: a
/// session that ends in an error, before `Recording::finish`, must not leave its file kept
/// from retention forever.
struct BeingWritten {
    writing: Writing,
    path: PathBuf,
}

impl BeingWritten {
    fn register(writing: Writing, path: PathBuf) -> BeingWritten {
        lock(&writing).insert(path.clone());
        BeingWritten { writing, path }
    }

    /// The session went on in `path` (a recording rotated).
    fn moved_to(&mut self, path: PathBuf) {
        let mut writing = lock(&self.writing);
        writing.remove(&self.path);
        writing.insert(path.clone());
        self.path = path;
    }

    /// Every file being written, this one included.
    fn all(&self) -> Vec<PathBuf> {
        lock(&self.writing).iter().cloned().collect()
    }
}

impl Drop for BeingWritten {
    fn drop(&mut self) {
        lock(&self.writing).remove(&self.path);
    }
}

impl<'a> Recording<'a> {
    #[allow(clippy::too_many_arguments)]
    fn start(
        name: &str,
        config: &RecordConfig,
        header: Header,
        functions: Vec<FunctionInfo>,
        plan: &'a Plan,
        allocs: Option<Decoder<'a>>,
        decoder: impl Fn() -> Decoder<'a>,
        symbols: &Symbols,
        writing: Writing,
    ) -> anyhow::Result<Recording<'a>> {
        std::fs::create_dir_all(&config.dir).with_context(|| {
            format!("creating the recording directory {}", config.dir.display())
        })?;
        let path = config.dir.join(format!(
            "{name}-{}-{}.esc",
            header.pid,
            header.started_ns / 1_000_000_000
        ));
        let writer = Writer::create(&path, header, Some(config.rotate))?;
        let mut known = Symbols::default();
        for (pc, frames) in symbols.all() {
            known.insert(pc, frames);
        }
        let sink = RecordSink::new(
            (!plan.traced.is_empty()).then(|| CallModel::new(decoder(), plan, true)),
            TraceView::new(functions, Output::Discard, true),
            writer,
            allocs,
            None,
            None,
            known,
        );
        Ok(Recording {
            sink,
            config: config.clone(),
            current: BeingWritten::register(writing, path),
        })
    }

    /// Deletes what the target's directory holds beyond its bounds.
    fn prune(&mut self) -> anyhow::Result<()> {
        let now = self.sink.writing();
        if now != self.current.path {
            self.current.moved_to(now.to_path_buf());
        }
        prune_dir(&self.config, &self.current.all())
    }

    fn finish(self, counts: &KernelCounts, ended: Ended, malformed: u64) -> anyhow::Result<()> {
        let Recording {
            sink,
            config,
            current,
        } = self;
        sink.finish(counts, ended, malformed)?;
        // The last file is whole now: a candidate for retention like any other.
        let writing = current.writing.clone();
        drop(current);
        let writing: Vec<PathBuf> = lock(&writing).iter().cloned().collect();
        prune_dir(&config, &writing)
    }
}

fn prune_dir(config: &RecordConfig, writing: &[PathBuf]) -> anyhow::Result<()> {
    let deleted = retention::prune(&config.dir, config.keep_total, config.keep_age, writing)
        .with_context(|| format!("pruning {}", config.dir.display()))?;
    for gone in deleted {
        tracing::debug!("deleted {} (retention)", gone.display());
    }
    Ok(())
}

/// Poisoning would only mean a panic elsewhere mid-update; the set stays usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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

/// Which programs a target's probes run: the kernel counts and times calls, per caller too,
/// and sends an event per call only for a recording, which keeps every call.
fn programs(config: &TargetConfig) -> Programs {
    if config.record.is_some() {
        Programs::Tracing
    } else {
        Programs::CountingByCaller
    }
}

/// The agent's sink: folds what the kernel counts and times into the metrics and the live
/// profile once a second, and hands each call's events, when there are any, to the recording.
struct Counting<'a> {
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
            recording.sink.event(event)?;
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
            recording.sink.checkpoint(counts)?;
            // At each new file, and now and then for the files that grow old.
            if fold || recording.sink.writing() != recording.current.path {
                recording.prune()?;
            }
        }
        Ok(())
    }
}

impl Counting<'_> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A session that ends in an error drops its recording without `finish`: its file must
    /// not stay kept from retention.
    #[test]
    fn a_recording_dropped_unfinished_is_no_longer_being_written() {
        let writing = Writing::default();
        let mut current = BeingWritten::register(writing.clone(), "/d/api-1.esc".into());
        current.moved_to("/d/api-1.esc.1".into());
        assert_eq!(current.all(), vec![PathBuf::from("/d/api-1.esc.1")]);
        drop(current);
        assert!(lock(&writing).is_empty());
    }
}
