//! Loads the embedded eBPF object, fills its maps for one process, and attaches a uprobe at
//! every probe point: through one `uprobe_multi` link per kind of probe where the kernel has
//! them (6.6+), else one perf event per probe. Dropping [`Attached`] detaches everything.
//! [`load`] and [`load_program`] are its first steps on their own, which `escapade doctor`
//! takes in every configuration the commands use, attaching nothing.

use std::num::NonZeroU32;
use std::path::Path;

use anyhow::Context as _;
use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope};
use aya::{Ebpf, EbpfLoader};
use probe_common::{
    AddressRange, COOKIE_AT_RETURN_SITE, EVENTS_BYTES, EVERY_PROCESS, GoOffsets,
    MAX_ACTIVE_GOROUTINES, MAX_ADDRESS_RANGES, MAX_ALLOC_SITES, MAX_ALLOC_STACKS, MAX_CALLERS,
    MAX_DEEP_CALLS, MAX_FAST_RETURNS, MAX_HELD_ENTRIES, MAX_LIVE_SAMPLES, MAX_OPEN_CALLS,
    MAX_PARAMS, MAX_PROBES, MAX_TRACED_FUNCTIONS, MAX_UNPLACED, ProbeConfig,
};

use super::plan::{PointOwner, ProbeKind, ProbePoint};
use super::snapshot::{KernelCounts, borrow, take};
use super::uprobe_multi::{self, MultiLink, MultiPrograms};
use crate::kernel::bpf::{Refused, aya_load_error};
use crate::kernel::features::{UprobeLinks, uprobe_links};

pub(crate) static PROBES: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-ebpf"));

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

    /// Lets go of what the probes keep for the processes that `exited`, where they serve every
    /// process of their file ([`Scope::EveryProcess`]).
    pub fn forget_exited(&mut self, exited: impl Fn(u32) -> bool) -> anyhow::Result<()> {
        self.counts.forget_exited(exited)
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
    /// Every process that runs the file, those to come included, each counted from its first
    /// instruction into the same maps.
    EveryProcess,
}

impl Scope {
    /// The PID the kernel filters on, 0 for every process.
    fn pid(self) -> u32 {
        match self {
            Scope::Process(pid) => pid,
            Scope::NextProcess | Scope::EveryProcess => 0,
        }
    }

    /// The probes' `TARGET_TGID`.
    fn tgid(self) -> u32 {
        match self {
            Scope::EveryProcess => EVERY_PROCESS,
            scope => scope.pid(),
        }
    }
}

/// A ring buffer's size is a power-of-two number of pages.
const SMALLEST_RING_BYTES: u32 = 4096;

/// What the probes are built with: the values of their globals, which the verifier reads as
/// constants (so each set of values is a program of its own to it), and the size of each map.
pub struct LoadConfig {
    tgid: u32,
    track_calls: u32,
    send_calls: u32,
    tail_slower_than_ns: u64,
    tail_errors: u32,
    params: u32,
    callers: u32,
    /// Maps' entries, by name; the rest keep the object's sizes.
    sizes: Vec<(&'static str, u32)>,
}

impl LoadConfig {
    /// For `programs` at `points` in `scope`; `samples_cpu` when a [`crate::cpu::Sampler`]
    /// will be started on the result, which needs its maps full-size.
    pub fn new(
        scope: Scope,
        programs: Programs,
        points: &[ProbePoint],
        samples_cpu: bool,
    ) -> LoadConfig {
        // The allocator's probes report only goroutines inside traced calls, which entries
        // and returns then keep track of.
        let params = programs == Programs::Params;
        let track_calls = !params && points.iter().any(|p| p.kind == ProbeKind::Allocating);
        let callers = programs == Programs::CountingByCaller;
        // The params maps hold a slot per traced function (and parameter), per CPU: only
        // when asked for.
        let functions = points
            .iter()
            .filter(|p| matches!(p.kind, ProbeKind::Entry | ProbeKind::Return))
            .map(|p| p.owner.kernel_function() + 1)
            .max()
            .unwrap_or(1);
        // Arrays and LRU maps are preallocated kernel memory (~90 MB for all of them at
        // full size, per session): each is full-size only when some probe here uses it.
        // (Hash maps take memory by use: `SIZED_BY_USE` in the probes.)
        let sized = |used: bool, n: u32| if used { n } else { 1 };
        let params_entries = |n: u32| sized(params, n);
        let has = |kind: ProbeKind| points.iter().any(|p| p.kind == kind);
        let counts_runtime = points
            .iter()
            .any(|p| matches!(p.owner, PointOwner::Counting(_)));
        let on_rets = points
            .iter()
            .any(|p| p.kind == ProbeKind::Return && p.flags & COOKIE_AT_RETURN_SITE == 0);
        let return_sites = points
            .iter()
            .filter(|p| p.flags & COOKIE_AT_RETURN_SITE != 0)
            .count();
        let tail = match programs {
            Programs::Tail(tail) => tail,
            _ => TailCapture::default(),
        };
        let send_calls = !matches!(
            programs,
            Programs::Counting | Programs::CountingByCaller | Programs::Params
        );
        LoadConfig {
            tgid: scope.tgid(),
            track_calls: track_calls.into(),
            send_calls: send_calls.into(),
            tail_slower_than_ns: tail.slower_than_ns,
            tail_errors: tail.errors.into(),
            params: params.into(),
            callers: callers.into(),
            sizes: vec![
                // Only calls are sent as events; a session that sends none still reads the
                // ring buffer, at its smallest: one page.
                (
                    "EVENTS",
                    if send_calls || tail != TailCapture::default() {
                        EVENTS_BYTES
                    } else {
                        SMALLEST_RING_BYTES
                    },
                ),
                // Per CPU, a slot per traced function: sized to the functions, since a
                // node's many CPUs multiply every slot left empty.
                ("CALL_STATS", functions),
                ("PROBE_CONFIGS", (points.len() as u32).max(1)),
                ("CALLERS", sized(callers, MAX_CALLERS)),
                ("ALLOC_SITES", sized(counts_runtime, MAX_ALLOC_SITES)),
                // The CPU sampler keeps its stacks there too.
                (
                    "ALLOC_STACKS",
                    sized(counts_runtime || samples_cpu, MAX_ALLOC_STACKS),
                ),
                ("CPU_SAMPLES", sized(samples_cpu, MAX_ALLOC_STACKS)),
                ("ACTIVE_CALLS", sized(track_calls, MAX_ACTIVE_GOROUTINES)),
                ("CALL_STARTS", sized(has(ProbeKind::Return), MAX_DEEP_CALLS)),
                (
                    "INNERMOST_CALL",
                    sized(has(ProbeKind::Return), MAX_ACTIVE_GOROUTINES),
                ),
                ("LAST_RET", sized(on_rets, MAX_ACTIVE_GOROUTINES)),
                ("FAST_RETURNS", (return_sites as u32).max(1)),
                (
                    "SAMPLED_LIVE",
                    sized(
                        has(ProbeKind::SampledMalloc) || has(ProbeKind::FreeSpecial),
                        MAX_LIVE_SAMPLES,
                    ),
                ),
                ("PARAM_STATS", params_entries(functions * MAX_PARAMS as u32)),
                ("CALL_HEAP", params_entries(functions)),
                ("OPEN_PARAMS", params_entries(MAX_OPEN_CALLS)),
                ("UNPLACED", params_entries(MAX_UNPLACED)),
                (
                    "HELD_ENTRIES",
                    sized(tail != TailCapture::default(), MAX_HELD_ENTRIES),
                ),
            ],
        }
    }

    /// The same globals with every map at its smallest: enough for the verifier, which
    /// does not look at sizes, without taking the memory of a session.
    pub fn smallest(mut self) -> LoadConfig {
        for (map, entries) in &mut self.sizes {
            *entries = match *map {
                "EVENTS" => SMALLEST_RING_BYTES,
                _ => 1,
            };
        }
        self
    }
}

/// Creates the maps of the embedded object for `config`; its programs are loaded one by one
/// ([`load_program`]), for the links they are attached with.
pub fn load(config: &LoadConfig) -> anyhow::Result<Ebpf> {
    raise_memlock_limit();
    let mut loader = EbpfLoader::new();
    loader
        .override_global("TARGET_TGID", &config.tgid, true)
        .override_global("TRACK_CALLS", &config.track_calls, true)
        .override_global("SEND_CALLS", &config.send_calls, true)
        .override_global("TAIL_SLOWER_THAN_NS", &config.tail_slower_than_ns, true)
        .override_global("TAIL_ERRORS", &config.tail_errors, true)
        .override_global("PARAMS_IN_KERNEL", &config.params, true)
        .override_global("COUNT_CALLERS", &config.callers, true);
    for &(map, entries) in &config.sizes {
        loader.map_max_entries(map, entries);
    }
    loader.load(PROBES).context("loading the eBPF object")
}

/// The programs that run at probe points of `kinds` for `programs`, each once.
pub fn program_names(programs: Programs, kinds: &[ProbeKind]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = kinds.iter().map(|&k| program_for(programs, k)).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Loads program `name` of `ebpf` into the kernel as `links` need it, without attaching it:
/// what `attach` does, for `escapade doctor`. A `uprobe_multi` link takes only a program
/// loaded for one, which `attach` loads apart from aya's.
pub fn load_program(ebpf: &mut Ebpf, name: &'static str, links: UprobeLinks) -> anyhow::Result<()> {
    match links {
        UprobeLinks::Multi => MultiPrograms::load(PROBES, ebpf, &[name]).map(drop),
        UprobeLinks::PerfEvents => load_uprobe_program(ebpf, name),
    }
}

/// Loads the probes, fills their maps and attaches them. `memory` is where the process's
/// memory regions lie (see [`AddressRanges`]), for [`Programs::Params`]: in
/// place before the first probe fires. `samples_cpu` when a [`crate::cpu::Sampler`] will be
/// started on the result, which needs its maps full-size.
pub fn attach(
    scope: Scope,
    exe: &Path,
    offsets: GoOffsets,
    points: &[ProbePoint],
    programs: Programs,
    memory: &[AddressRange],
    samples_cpu: bool,
) -> anyhow::Result<Attached> {
    anyhow::ensure!(
        points.len() <= MAX_PROBES as usize,
        "{} probe points exceed escapade's limit of {MAX_PROBES}: name fewer functions",
        points.len()
    );
    let return_sites = points
        .iter()
        .filter(|p| p.flags & COOKIE_AT_RETURN_SITE != 0)
        .count();
    anyhow::ensure!(
        return_sites <= MAX_FAST_RETURNS as usize,
        "the traced functions have more than {MAX_FAST_RETURNS} direct call sites: name fewer, \
         or use --entries-only"
    );
    anyhow::ensure!(
        points
            .iter()
            .all(|p| p.owner.kernel_function() < MAX_TRACED_FUNCTIONS),
        "more than {MAX_TRACED_FUNCTIONS} traced functions: name fewer"
    );
    let mut ebpf = load(&LoadConfig::new(scope, programs, points, samples_cpu))?;

    let mut go_offsets: Array<_, GoOffsets> = borrow(&mut ebpf, "GO_OFFSETS")?;
    go_offsets.set(0, offsets, 0)?;
    let mut configs: Array<_, ProbeConfig> = borrow(&mut ebpf, "PROBE_CONFIGS")?;
    for (id, point) in points.iter().enumerate() {
        let config = ProbeConfig {
            function: point.owner.kernel_function(),
            ..point.config
        };
        configs.set(id as u32, config, 0)?;
    }
    let mut fast_returns: HashMap<_, u64, u8> = borrow(&mut ebpf, "FAST_RETURNS")?;
    let sites = points
        .iter()
        .filter(|p| p.flags & COOKIE_AT_RETURN_SITE != 0)
        .map(|p| p.config.return_site);
    for site in sites {
        fast_returns.insert(site, 0, 0)?;
    }
    let mut ranges: Array<_, AddressRange> = borrow(&mut ebpf, "ADDRESS_RANGES")?;
    write_address_ranges(&mut ranges, memory)?;

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
    let links = match uprobe_links() {
        UprobeLinks::Multi => match attach_multi(&ebpf, exe, scope.pid(), &groups) {
            Ok(links) => links,
            // The perf events' programs would be refused the same way, after as long.
            Err(e) if e.downcast_ref::<Refused>().is_some() => return Err(e),
            Err(e) => {
                tracing::debug!("one perf event per uprobe, slower to detach: {e:#}");
                attach_perf_events(&mut ebpf, exe, scope, &groups)?
            }
        },
        UprobeLinks::PerfEvents => attach_perf_events(&mut ebpf, exe, scope, &groups)?,
    };

    let events = take(&mut ebpf, "EVENTS")?;
    let counts = KernelCounts::take(&mut ebpf)?;
    let claimed_tgid = take(&mut ebpf, "CLAIMED_TGID")?;
    let rets_closed = take(&mut ebpf, "RETS_CLOSED")?;
    let entries_detached = take(&mut ebpf, "ENTRIES_DETACHED")?;
    let open_via_ret = take(&mut ebpf, "OPEN_VIA_RET")?;
    let address_ranges = AddressRanges(take(&mut ebpf, "ADDRESS_RANGES")?);
    Ok(Attached {
        counts,
        claimed_tgid,
        rets_closed,
        entries_detached,
        open_via_ret,
        windows: None,
        address_ranges: Some(address_ranges),
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
        Scope::NextProcess | Scope::EveryProcess => UProbeScope::AllProcesses,
    };
    // Load every program before attaching any, so the returns-then-entries gap stays short.
    for group in groups {
        load_uprobe_program(ebpf, group.program)?;
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

/// Loads program `name` of `ebpf` for perf-event uprobes, unless it is already.
fn load_uprobe_program(ebpf: &mut Ebpf, name: &'static str) -> anyhow::Result<()> {
    let program = uprobe_program(ebpf, name)?;
    if program.fd().is_err() {
        program.load().map_err(|e| aya_load_error(name, e))?;
    }
    Ok(())
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
