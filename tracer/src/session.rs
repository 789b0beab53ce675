//! One tracing session against one process: open the target, plan where probes go, and pump
//! the attached probes' events until the caller's stop, or the target's exit.

use std::time::Duration;

use anyhow::Context as _;
use std::collections::HashMap;

use probe_common::{
    COOKIE_AT_CALL_SITE, COOKIE_AT_RETURN_SITE, COOKIE_SKIP_IF_BELOW_OR_EQUAL, INT_ARG_REGS,
    MAX_STACK_WORDS, ProbeConfig, RESULT_DISCARDED, RESULT_IN_REGISTER, RESULT_ON_STACK,
    ResultSource, STRING_CAPTURE_BYTES,
};

use crate::attach::{Attached, KernelCounts, ProbeKind, ProbePoint};
use crate::decode::Captures;
use crate::placement::{self, EntryProbe, NoReturnSite, ResultWord, ResultsNeeded, SlowReason};
use crate::ringbuf::{EventReader, POLL_INTERVAL};
use crate::sink::EventSink;
use crate::status::StatusLine;
use crate::target::gobin::abi::{Location, Reg};
use crate::target::gobin::{Function, GoBinary};
use crate::target::process::Process;

/// A running Go process and the model of its binary.
pub struct Target {
    pub process: Process,
    /// Shared by the processes of one build (the agent keeps it per file).
    pub binary: std::sync::Arc<GoBinary>,
    /// Runtime address minus link-time address (non-zero for PIE).
    pub bias: u64,
}

impl Target {
    /// The process `pid`, its binary described by `symbols` when given (`--symbols`).
    pub fn open(pid: u32, symbols: Option<&std::path::Path>) -> anyhow::Result<Target> {
        Target::open_with(pid, |exe| {
            Ok(std::sync::Arc::new(GoBinary::open(exe, symbols)?))
        })
    }

    /// The process `pid`, its binary modelled by `model` from the path of its executable.
    pub fn open_with(
        pid: u32,
        model: impl FnOnce(&std::path::Path) -> anyhow::Result<std::sync::Arc<GoBinary>>,
    ) -> anyhow::Result<Target> {
        let process = Process::open(pid)?;
        let binary = model(&process.exe)
            .with_context(|| format!("PID {pid} runs {}", process.exe_target.display()))?;
        let bias = process.load_bias(binary.is_pie, binary.first_load_vaddr)?;
        Ok(Target {
            process,
            binary,
            bias,
        })
    }
}

/// Where entry probes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementMode {
    /// On the stack-check branch where the function has one (emulated by the kernel, ~0.5 us).
    Fast,
    /// As `fast`, and functions without a stack check are probed on their direct `CALL` sites
    /// (emulated) instead of their first instruction; calls through func values and
    /// interfaces are then not seen.
    Callsites,
    /// On every function's first instruction (single-stepped, ~10 us): for comparison.
    Entry,
}

/// Where a traced function's entry is probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntrySite {
    /// In the function itself.
    Function(EntryProbe),
    /// On each direct `CALL` to it, at these addresses.
    CallSites(Vec<u64>),
}

impl EntrySite {
    /// Where `function`'s entry probe goes under `mode`, given where `placement` would put it.
    pub fn choose(
        binary: &GoBinary,
        function: &Function,
        placed: EntryProbe,
        mode: PlacementMode,
    ) -> anyhow::Result<EntrySite> {
        Ok(match (mode, placed) {
            (PlacementMode::Entry, _) => EntrySite::Function(EntryProbe::FirstInstruction {
                addr: function.entry,
                reason: SlowReason::Forced,
            }),
            (
                PlacementMode::Callsites,
                e @ EntryProbe::FirstInstruction {
                    reason: SlowReason::NoStackCheck,
                    ..
                },
            ) => {
                let (text, text_addr) =
                    binary.text().context("reading .text to find call sites")?;
                let sites = placement::call_sites(&text, text_addr, function.entry);
                if sites.is_empty() {
                    EntrySite::Function(e)
                } else {
                    EntrySite::CallSites(sites)
                }
            }
            (_, e) => EntrySite::Function(e),
        })
    }

    /// The probed addresses and the cookie flags that tell the probe how it is placed.
    pub fn points(&self) -> Vec<(u64, u64)> {
        match self {
            EntrySite::Function(probe @ EntryProbe::StackCheckBranch { .. }) => {
                vec![(probe.addr(), COOKIE_SKIP_IF_BELOW_OR_EQUAL)]
            }
            EntrySite::Function(probe) => vec![(probe.addr(), 0)],
            EntrySite::CallSites(sites) => {
                sites.iter().map(|&a| (a, COOKIE_AT_CALL_SITE)).collect()
            }
        }
    }

    /// Whether the kernel emulates the probed instruction rather than single-stepping it.
    pub fn is_fast(&self) -> bool {
        match self {
            EntrySite::Function(probe) => probe.is_fast(),
            EntrySite::CallSites(_) => true,
        }
    }
}

impl std::fmt::Display for EntrySite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntrySite::Function(probe) => probe.fmt(f),
            EntrySite::CallSites(sites) => write!(
                f,
                "fast: {} direct call sites (calls through func values are not seen)",
                sites.len()
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlanOptions {
    /// Bytes of each string argument to copy; 0 copies none.
    pub capture_strings: u32,
    pub placement: PlacementMode,
    /// Probe entries only: no results or durations, and no `RET` probes, which the kernel
    /// single-steps (~10 us a call).
    pub entries_only: bool,
    pub returns: ReturnsMode,
    /// Probe the `RET`s for calls whose caller discards a result, so that its value is seen.
    pub exact_results: bool,
}

impl Default for PlanOptions {
    /// Fast entries and every return, no strings copied.
    fn default() -> Self {
        PlanOptions {
            capture_strings: 0,
            placement: PlacementMode::Fast,
            entries_only: false,
            returns: ReturnsMode::All,
            exact_results: false,
        }
    }
}

/// Which calls' returns the probes see.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReturnsMode {
    /// Every call's: at its return site in the caller where it has one (emulated, ~0.5 us),
    /// else on the function's `RET`s (single-stepped, ~10 us), which stay probed only where
    /// some call needs them: a call site without a return site, or a function whose address
    /// is taken (func values, interfaces, method values).
    All,
    /// Only at return sites: the `RET`s are not probed, and the kernel counts the other calls
    /// as not observed.
    Direct,
    /// Only on the `RET`s, as before return sites: for benchmarks.
    Rets,
    /// As `All`, with the `RET` probes attached only in windows that add up to this share of
    /// the time; the kernel counts the calls that needed them between
    /// windows as not observed (see `Attached::sample_rets`).
    Sampled { percent: f64 },
}

/// How a traced function's returns are probed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReturnProbes {
    /// Direct call sites whose return is probed in the caller.
    pub sites: usize,
    /// `RET`s probed.
    pub rets: usize,
    /// Why the `RET`s are probed (or, with `--returns direct`, would be), if they are.
    pub rets_needed: Option<String>,
}

impl ReturnProbes {
    pub fn any(&self) -> bool {
        self.sites + self.rets > 0
    }
}

impl std::fmt::Display for ReturnProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.sites, self.rets) {
            (0, 0) => f.write_str("none")?,
            (sites, 0) => write!(f, "fast: {sites} return sites")?,
            (0, rets) => write!(f, "slow: {rets} RETs")?,
            (sites, rets) => write!(f, "{sites} return sites (fast) and {rets} RETs (slow)")?,
        }
        match &self.rets_needed {
            Some(why) => write!(f, " ({why})"),
            None => Ok(()),
        }
    }
}

/// A function being traced and how its probes sit.
#[derive(Clone, Debug)]
pub struct Traced {
    pub function: Function,
    pub entry: EntrySite,
    pub returns: ReturnProbes,
    pub captures: Captures,
}

pub struct Plan {
    pub traced: Vec<Traced>,
    pub points: Vec<ProbePoint>,
}

impl Plan {
    pub fn new(
        binary: &GoBinary,
        functions: Vec<Function>,
        opts: &PlanOptions,
    ) -> anyhow::Result<Plan> {
        let mut placed = Vec::new();
        for function in functions {
            let code = binary
                .code(&function)
                .with_context(|| format!("reading the code of {}", function.name))?;
            let place = placement::place(&code, function.entry)
                .with_context(|| format!("disassembling {}", function.name))?;
            let entry = EntrySite::choose(binary, &function, place.entry, opts.placement)?;
            placed.push((function, place.returns, entry));
        }
        let mut sites = if opts.entries_only {
            ReturnSites::default()
        } else {
            ReturnSites::find(binary, &placed, opts)?
        };
        let mut traced = Vec::new();
        let mut points = Vec::new();
        for (function, rets, entry) in placed {
            let (params, stack_bytes) = match (&function.signature, &function.traceback) {
                (Some(s), _) => (&s.params[..], s.stack_bytes),
                (None, Some(layout)) => (&[][..], layout.stack_bytes()),
                (None, None) => (&[][..], 0),
            };
            let captures = if opts.capture_strings > 0 {
                Captures::plan(params)
            } else {
                Captures::default()
            };
            let index = traced.len();
            let (mut return_sites, mut rets_needed) = sites.take(function.entry);
            if opts.returns == ReturnsMode::Rets {
                return_sites.clear();
                rets_needed = Some("--returns rets".into());
            }
            let rets: &[u64] = match (&rets_needed, opts.returns) {
                (Some(_), ReturnsMode::All | ReturnsMode::Rets | ReturnsMode::Sampled { .. })
                    if !opts.entries_only =>
                {
                    &rets
                }
                _ => &[],
            };
            // Under `--returns direct` a function without return sites is timed too: its
            // entries are then counted as unobserved.
            let timed = !opts.entries_only
                && (!return_sites.is_empty()
                    || !rets.is_empty()
                    || opts.returns == ReturnsMode::Direct);
            let config = ProbeConfig {
                stack_words: (stack_bytes.div_ceil(8) as u32).min(MAX_STACK_WORDS as u32),
                string_bytes: opts.capture_strings.min(STRING_CAPTURE_BYTES as u32),
                strings: captures.configs,
                function: index as u32,
                timed: u32::from(timed),
                ret_probed: u32::from(!rets.is_empty()),
                error_word: error_word(&function),
                ..ProbeConfig::default()
            };
            let file_offset = |addr: u64| {
                binary
                    .file_offset(addr)
                    .with_context(|| format!("{}: {addr:#x} is not in the file", function.name))
            };
            for (addr, flags) in entry.points() {
                points.push(ProbePoint {
                    function: index,
                    kind: ProbeKind::Entry,
                    addr,
                    file_offset: file_offset(addr)?,
                    flags,
                    config,
                });
            }
            // Strings are captured at entry only.
            let at_return = ProbeConfig {
                string_bytes: 0,
                strings: Default::default(),
                ..config
            };
            for &ret in rets {
                points.push(ProbePoint {
                    function: index,
                    kind: ProbeKind::Return,
                    addr: ret,
                    file_offset: file_offset(ret)?,
                    flags: 0,
                    config: at_return,
                });
            }
            for site in &return_sites {
                points.push(ProbePoint {
                    function: index,
                    kind: ProbeKind::Return,
                    addr: site.probe,
                    file_offset: file_offset(site.probe)?,
                    flags: COOKIE_AT_RETURN_SITE,
                    config: ProbeConfig {
                        return_site: site.returns_to,
                        results: site.sources,
                        ..at_return
                    },
                });
            }
            traced.push(Traced {
                function,
                entry,
                returns: ReturnProbes {
                    sites: return_sites.len(),
                    rets: rets.len(),
                    rets_needed,
                },
                captures,
            });
        }
        Ok(Plan { traced, points })
    }
}

/// A return site as the probe there is configured.
struct PlannedSite {
    returns_to: u64,
    probe: u64,
    sources: [ResultSource; INT_ARG_REGS],
}

/// The return sites of the traced functions' direct calls, and which functions need their
/// `RET`s probed all the same.
#[derive(Default)]
struct ReturnSites {
    by_callee: HashMap<u64, (Vec<PlannedSite>, Option<String>)>,
}

impl ReturnSites {
    /// The return sites of `functions` (each with its `RET`s and entry probe).
    fn find(
        binary: &GoBinary,
        functions: &[(Function, Vec<u64>, EntrySite)],
        opts: &PlanOptions,
    ) -> anyhow::Result<Self> {
        let needed: HashMap<u64, ResultsNeeded> = functions
            .iter()
            .map(|(f, _, _)| (f.entry, results_needed(f)))
            .collect();
        let (text, text_addr) = binary
            .text()
            .context("reading .text to find the traced functions' call sites")?;
        let entries: Vec<u64> = functions.iter().map(|(f, _, _)| f.entry).collect();
        let indirect = binary.called_indirectly(&entries)?;
        // A return site on a CALL that carries an entry probe would see the next call's entry
        // before its own return, whichever the kernel runs first.
        let entry_probes: std::collections::HashSet<u64> = functions
            .iter()
            .filter_map(|(_, _, entry)| match entry {
                EntrySite::CallSites(sites) => Some(sites.iter().copied()),
                EntrySite::Function(_) => None,
            })
            .flatten()
            .collect();
        let mut by_callee: HashMap<u64, (Vec<PlannedSite>, Vec<NoReturnSite>, usize)> =
            HashMap::new();
        for (callee, _call, site) in placement::return_sites(&text, text_addr, &needed) {
            let site = site.and_then(|s| {
                if entry_probes.contains(&s.probe) {
                    Err(NoReturnSite::EntryProbeThere)
                } else {
                    Ok(s)
                }
            });
            let (planned, slow, discarding) = by_callee.entry(callee).or_default();
            match site {
                Ok(site) if site.results.contains(&ResultWord::Discarded) && opts.exact_results => {
                    *discarding += 1;
                }
                Ok(site) => planned.push(PlannedSite {
                    returns_to: site.returns_to,
                    probe: site.probe,
                    sources: sources(&needed[&callee], &site.results),
                }),
                Err(why) => slow.push(why),
            }
        }
        let by_callee = entries
            .iter()
            .map(|&entry| {
                let (planned, slow, discarding) = by_callee.remove(&entry).unwrap_or_default();
                let mut why = Vec::new();
                if indirect.contains(&entry) {
                    why.push(
                        "its address is taken: called through func values or interfaces"
                            .to_string(),
                    );
                }
                if planned.is_empty() && slow.is_empty() && discarding == 0 {
                    why.push("no direct call sites".to_string());
                }
                if !slow.is_empty() {
                    why.push(format!(
                        "{} call sites without a return site, e.g. {}",
                        slow.len(),
                        slow[0]
                    ));
                }
                if discarding > 0 {
                    why.push(format!(
                        "{discarding} call sites discard a result (--results exact)"
                    ));
                }
                let why = (!why.is_empty()).then(|| why.join("; "));
                (entry, (planned, why))
            })
            .collect();
        Ok(ReturnSites { by_callee })
    }

    /// The return sites of the function at `entry`, and why its `RET`s are needed, if they are
    /// (none of either when no sites were looked for: `--entries-only`).
    fn take(&mut self, entry: u64) -> (Vec<PlannedSite>, Option<String>) {
        self.by_callee.remove(&entry).unwrap_or_default()
    }
}

/// The result registers and stack bytes a return site must still hold for `function`'s results
/// to be read there. Without DWARF results are not decoded: nothing needs holding.
fn results_needed(function: &Function) -> ResultsNeeded {
    let mut needed = ResultsNeeded::default();
    let Some(sig) = &function.signature else {
        return needed;
    };
    let mut stack: Option<std::ops::Range<u64>> = None;
    for result in &sig.results {
        match &result.location {
            Location::Registers(pieces) => {
                for p in pieces {
                    if let Reg::Int(i) = p.reg {
                        needed.registers.push((i as usize, p.size));
                    }
                }
            }
            Location::Stack { offset } => {
                let end = offset + result.ty.size;
                stack = Some(match stack {
                    Some(s) => s.start.min(*offset)..s.end.max(end),
                    None => *offset..end,
                });
            }
            Location::Nowhere => {}
        }
    }
    // One entry per register, as wide as its widest piece.
    needed
        .registers
        .sort_unstable_by_key(|&(r, bytes)| (r, std::cmp::Reverse(bytes)));
    needed.registers.dedup_by_key(|&mut (r, _)| r);
    needed.stack = stack.unwrap_or(0..0);
    needed
}

/// 1 + the integer register holding the type word of `function`'s last result when that is an
/// `error` (non-nil when the word is); 0 otherwise, or without DWARF to tell.
fn error_word(function: &Function) -> u32 {
    let last = function.signature.as_ref().and_then(|s| s.results.last());
    match last.map(|r| (r.ty.name.as_str(), &r.location)) {
        Some(("error", Location::Registers(pieces))) => match pieces.first().map(|p| p.reg) {
            Some(Reg::Int(i)) => u32::from(i) + 1,
            _ => 0,
        },
        _ => 0,
    }
}

/// The probe's configuration for where each needed result register's value is.
fn sources(needed: &ResultsNeeded, words: &[ResultWord]) -> [ResultSource; INT_ARG_REGS] {
    let mut sources = [ResultSource::default(); INT_ARG_REGS];
    for (&(register, _), word) in needed.registers.iter().zip(words) {
        sources[register] = match *word {
            ResultWord::Register(r) if r == register => ResultSource::default(),
            ResultWord::Register(r) => ResultSource {
                kind: RESULT_IN_REGISTER,
                at: r as u32,
            },
            ResultWord::Stack(at) => ResultSource {
                kind: RESULT_ON_STACK,
                at: at as u32,
            },
            ResultWord::Discarded => ResultSource {
                kind: RESULT_DISCARDED,
                at: 0,
            },
        };
    }
    sources
}

/// Allocators the Go 1.27 compiler calls instead of `runtime.mallocgc` for small objects of a
/// known size class.
pub const SIZE_SPECIALIZED_MALLOCS: &str = "runtime.mallocgc*SC*";

/// Where a runtime function's probes sit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeProbe {
    Entry(EntrySite),
    /// On its direct call to this function (emulated).
    AtCall(&'static str),
    /// On each of its `RET` instructions (single-stepped: for functions that run rarely).
    Returns(usize),
}

impl std::fmt::Display for RuntimeProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeProbe::Entry(site) => site.fmt(f),
            RuntimeProbe::AtCall(callee) => write!(f, "fast: on its call to {callee}"),
            RuntimeProbe::Returns(n) => write!(f, "slow: on its {n} RET instructions"),
        }
    }
}

/// The probes of `escapade allocs`.
pub struct CountingProbes {
    /// Each probed runtime function and where its probes sit.
    pub placed: Vec<(String, RuntimeProbe)>,
    pub points: Vec<ProbePoint>,
}

/// What `runtime.gcMarkTermination` calls once the cycle's record (times, pause, heap sizes,
/// `numgc`) is complete and the world has restarted, but before it releases the locks that let
/// the next cycle start and overwrite the record. The kernel emulates the `CALL`, so unlike a
/// single-stepped `RET` no preemption signal can make the probe fire twice.
const GC_RECORD_DONE: &str = "runtime.mProf_Flush";

/// The probes of `escapade allocs`, entries placed like a traced function's: every allocation
/// (`runtime.mallocgc`) when `exact`, else the objects the runtime's heap profiler samples
/// (`runtime.mProf_Malloc`) and their frees (`runtime.freeSpecial`); and in both modes,
/// goroutine creations (`runtime.newproc1`), stack growths (`runtime.copystack`, when DWARF
/// or the per-version layouts say where a goroutine keeps its `go` statement) and GC cycles
/// (`runtime.gcMarkTermination`'s call to [`GC_RECORD_DONE`], once per cycle).
pub fn counting_probes(
    binary: &GoBinary,
    mode: PlacementMode,
    exact: bool,
) -> anyhow::Result<CountingProbes> {
    let mut sites = Vec::new();
    let mut points = Vec::new();
    let allocations: Vec<(String, ProbeKind)> = if exact {
        let mut functions = vec!["runtime.mallocgc".to_string()];
        functions.extend(binary.functions_named(SIZE_SPECIALIZED_MALLOCS));
        functions
            .into_iter()
            .map(|f| (f, ProbeKind::Malloc))
            .collect()
    } else {
        vec![
            ("runtime.mProf_Malloc".into(), ProbeKind::SampledMalloc),
            ("runtime.freeSpecial".into(), ProbeKind::FreeSpecial),
        ]
    };
    let vars = &binary.runtime_vars;
    let stack_growth = match (vars.g_gopc, vars.g_startpc) {
        (Some(_), Some(_)) => Some(("runtime.copystack".to_string(), ProbeKind::StackGrowth)),
        _ => None,
    };
    let others = [
        ("runtime.newproc1".to_string(), ProbeKind::Newproc),
        ("runtime.gcMarkTermination".to_string(), ProbeKind::GcCycle),
    ];
    for (name, kind) in allocations.into_iter().chain(others).chain(stack_growth) {
        let function = binary.resolve(std::slice::from_ref(&name))?.remove(0);
        let code = binary
            .code(&function)
            .with_context(|| format!("reading the code of {name}"))?;
        let placed = placement::place(&code, function.entry)
            .with_context(|| format!("disassembling {name}"))?;
        let (probe, at) = if kind == ProbeKind::GcCycle {
            let flush = binary.resolve(&[GC_RECORD_DONE.to_string()])?.remove(0);
            match placement::call_sites(&code, function.entry, flush.entry)[..] {
                [call] => (RuntimeProbe::AtCall(GC_RECORD_DONE), vec![(call, 0)]),
                // A runtime that calls it elsewhere: the returns, where the record is complete
                // too but, the GC's locks released, may hold the next cycle's first times.
                _ => {
                    let at = placed.returns.iter().map(|&a| (a, 0)).collect();
                    (RuntimeProbe::Returns(placed.returns.len()), at)
                }
            }
        } else {
            let entry = EntrySite::choose(binary, &function, placed.entry, mode)?;
            let at = entry.points();
            (RuntimeProbe::Entry(entry), at)
        };
        for (addr, flags) in at {
            points.push(ProbePoint {
                function: sites.len(),
                kind,
                addr,
                file_offset: binary
                    .file_offset(addr)
                    .with_context(|| format!("{name} is not in the file"))?,
                flags,
                config: ProbeConfig::default(),
            });
        }
        sites.push((name, probe));
    }
    Ok(CountingProbes {
        placed: sites,
        points,
    })
}

/// Why a session stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    Interrupted,
    Deadline,
    TargetExited,
}

/// One target's probes, attached, and the pump that drains their ring buffer into a sink.
/// Each session owns its own eBPF object (maps, globals and links, none pinned or shared), and
/// nothing it does is process-wide: sessions against different processes run side by side in
/// one process, on one runtime, each stopped by its own future.
pub struct Session<'t> {
    target: &'t Target,
    attached: Attached,
    reader: EventReader,
}

impl<'t> Session<'t> {
    /// A session of `attached`, the probes in `target`'s process. Needs a tokio runtime, which
    /// the ring buffer is registered with.
    pub fn new(target: &'t Target, mut attached: Attached) -> anyhow::Result<Session<'t>> {
        let events = attached
            .take_events()
            .context("the event ring buffer was already taken")?;
        Ok(Session {
            target,
            attached,
            reader: EventReader::new(events)?,
        })
    }

    /// What the probes counted so far.
    pub fn counts(&self) -> &KernelCounts {
        self.attached.counts()
    }

    /// Pumps events into `sink` until `stop` says why to stop, or the target exits, keeping
    /// `status` up to date; then detaches the entry probes, after which the session holds
    /// what the kernel counted. Returns why it stopped, and the malformed events so far.
    pub async fn run(
        &mut self,
        stop: impl std::future::Future<Output = Ended>,
        sink: &mut impl EventSink,
        mut status: Option<StatusLine>,
    ) -> anyhow::Result<(Ended, u64)> {
        let Session {
            target,
            attached,
            reader,
        } = self;
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        let ended = loop {
            tokio::select! {
                why = &mut stop => break why,
                _ = tick.tick() => {
                    reader.drain(sink)?;
                    sink.checkpoint(attached.counts())?;
                    if let Some(status) = status.as_mut() {
                        status.tick(&attached.counts().counters(), sink.status());
                    }
                    if !target.process.alive() {
                        break Ended::TargetExited;
                    }
                }
                readable = reader.readable() => {
                    readable?;
                    reader.drain(sink)?;
                }
                _ = until(attached.next_ret_edge()) => attached.ret_edge()?,
            }
            // A drain can take long when the sink is slower than the probes: let the runtime
            // see the clock and signals before going on, or the deadline and Ctrl-C wait for
            // tokio's budget of 128 drains to run out.
            tokio::task::yield_now().await;
        };
        if let Some(status) = status.as_mut() {
            status.clear();
        }
        // Let calls in flight return before the return probes go too, draining on both sides
        // of the detach, which can take a while.
        reader.drain(sink)?;
        attached.detach_entries()?;
        reader.drain(sink)?;
        tokio::time::sleep(POLL_INTERVAL).await;
        reader.drain(sink)?;
        Ok((ended, reader.malformed))
    }
}

/// A command's one session: until Ctrl-C or `duration`, with a status line on a terminal.
/// Ctrl-C is the command's to handle: a caller running several sessions gives each its own
/// stop instead ([`Session::run`]).
pub async fn run_command(
    session: &mut Session<'_>,
    duration: Option<Duration>,
    sink: &mut impl EventSink,
) -> anyhow::Result<(Ended, u64)> {
    let stop = async {
        let deadline = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Ended::Interrupted,
            _ = deadline => Ended::Deadline,
        }
    };
    let status = StatusLine::on_terminal(sink.prints_events());
    session.run(stop, sink, status).await
}

/// Waits until `at`, or forever.
async fn until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
