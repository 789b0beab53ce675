//! Where a session's probes go, as points `attach` loads: each traced function's entry and
//! returns ([`Plan`]), the runtime's counting probes ([`counting_probes`]), and the allocator's
//! probes of `escapade params`, all laid by one [`Placer`]. Each point's [`PointOwner`] says
//! whose its hits are.

use std::collections::HashMap;

use anyhow::Context as _;
use probe_common::{
    COOKIE_AT_CALL_SITE, COOKIE_AT_RETURN_SITE, COOKIE_RETURNS_AT_SITES,
    COOKIE_SKIP_IF_BELOW_OR_EQUAL, CallEvent, INT_ARG_REGS, MAX_STACK_WORDS, MAX_STRING_CAPTURES,
    ProbeConfig, RESULT_DISCARDED, RESULT_IN_REGISTER, RESULT_ON_STACK, ResultSource,
    STRING_CAPTURE_BYTES, StringCapture,
};

use super::placement::{
    self, EntryProbe, NoReturnSite, Placement, ResultWord, ResultsNeeded, SlowReason,
};
use crate::tracee::gobin::abi::{Location, Reg};
use crate::tracee::gobin::types::TypeKind;
use crate::tracee::gobin::{Function, GoBinary, Param};

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

/// What a probe point serves, which says whose events and counts its hits are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointOwner {
    /// The traced function `Plan::traced[i]`: its entry, returns and own allocator calls.
    Traced(usize),
    /// The runtime function `CountingProbes::placed[i]`.
    Counting(usize),
    /// The allocator's entry, which serves every traced call that allocates.
    Allocator,
}

impl PointOwner {
    /// The traced function's index, for a point of one.
    pub fn traced(self) -> Option<usize> {
        match self {
            PointOwner::Traced(index) => Some(index),
            PointOwner::Counting(_) | PointOwner::Allocator => None,
        }
    }

    /// The index the kernel counts the point's calls under (`ProbeConfig::function`): the
    /// runtime's probes count no calls, and say 0.
    pub fn kernel_function(self) -> u32 {
        self.traced().map_or(0, |index| index as u32)
    }
}

/// One uprobe to attach.
#[derive(Clone, Debug)]
pub struct ProbePoint {
    pub owner: PointOwner,
    pub kind: ProbeKind,
    /// Link-time address of the probed instruction.
    pub addr: u64,
    /// File offset of that instruction, as the kernel wants it.
    pub file_offset: u64,
    /// `COOKIE_*` placement flags.
    pub flags: u64,
    /// What the probe does there; its `function` is the owner's, which `attach` writes.
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
    fn choose(
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

/// Lays the probe points of one binary, whatever they serve: a function's code decoded, its
/// entry probe placed as the mode says, each probed address found in the file.
pub struct Placer<'b> {
    pub binary: &'b GoBinary,
    pub mode: PlacementMode,
}

impl Placer<'_> {
    /// `function`'s code, and where its probes can sit.
    pub fn decode(&self, function: &Function) -> anyhow::Result<(Vec<u8>, Placement)> {
        let code = self
            .binary
            .code(function)
            .with_context(|| format!("reading the code of {}", function.name))?;
        let placed = placement::place(&code, function.entry)
            .with_context(|| format!("disassembling {}", function.name))?;
        Ok((code, placed))
    }

    /// Where `function`'s entry probe goes, and where its `RET`s are probed.
    pub fn place(&self, function: &Function) -> anyhow::Result<(EntrySite, Vec<u64>)> {
        let (_, placed) = self.decode(function)?;
        let entry = EntrySite::choose(self.binary, function, placed.entry, self.mode)?;
        Ok((entry, placed.returns))
    }

    /// A probe of `kind` for `owner` at `addr` in `function`, placed as `flags` say.
    pub fn point(
        &self,
        function: &str,
        owner: PointOwner,
        kind: ProbeKind,
        (addr, flags): (u64, u64),
        config: ProbeConfig,
    ) -> anyhow::Result<ProbePoint> {
        let file_offset = self
            .binary
            .file_offset(addr)
            .with_context(|| format!("{function}: {addr:#x} is not in the file"))?;
        Ok(ProbePoint {
            owner,
            kind,
            addr,
            file_offset,
            flags,
            config,
        })
    }

    /// The probes of `kind` for `owner` on `function`'s entry, as `entry` sits.
    pub fn entry_points(
        &self,
        function: &str,
        owner: PointOwner,
        kind: ProbeKind,
        entry: &EntrySite,
        config: ProbeConfig,
    ) -> anyhow::Result<Vec<ProbePoint>> {
        entry
            .points()
            .into_iter()
            .map(|at| self.point(function, owner, kind, at, config))
            .collect()
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

/// Which string parameters the probe copies bytes of, and from which words.
#[derive(Clone, Debug, Default)]
pub struct Captures {
    /// (parameter index, slot) for each capture.
    slots: Vec<(usize, usize)>,
    pub configs: [StringCapture; MAX_STRING_CAPTURES],
}

impl Captures {
    /// Plans captures for the first string parameters that sit whole in registers or in the
    /// copied part of the stack.
    pub fn plan(params: &[Param]) -> Captures {
        let mut c = Captures::default();
        for (index, p) in params.iter().enumerate() {
            if c.slots.len() == MAX_STRING_CAPTURES {
                break;
            }
            if p.ty.kind != TypeKind::String {
                continue;
            }
            let words = match &p.location {
                Location::Registers(pieces) => match (pieces[0].reg, pieces[1].reg) {
                    (Reg::Int(a), Reg::Int(b)) => Some((a as usize, b as usize)),
                    _ => None,
                },
                Location::Stack { offset }
                    if offset % 8 == 0 && offset / 8 + 1 < MAX_STACK_WORDS as u64 =>
                {
                    let w = INT_ARG_REGS + (*offset / 8) as usize;
                    Some((w, w + 1))
                }
                _ => None,
            };
            if let Some((ptr, len)) = words {
                let slot = c.slots.len();
                c.configs[slot] = StringCapture {
                    ptr_word: ptr as u8,
                    len_word: len as u8,
                    enabled: 1,
                    _pad: 0,
                };
                c.slots.push((index, slot));
            }
        }
        c
    }

    /// The string the probe copied for parameter `param`, if it was captured.
    pub fn text(&self, event: &CallEvent, param: usize) -> Option<String> {
        let (_, slot) = self.slots.iter().find(|(p, _)| *p == param)?;
        let len = event.string_lens[*slot] as usize;
        Some(String::from_utf8_lossy(&event.strings[*slot][..len]).into_owned())
    }
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
        let placer = Placer {
            binary,
            mode: opts.placement,
        };
        let mut placed = Vec::new();
        for function in functions {
            let (entry, rets) = placer.place(&function)?;
            placed.push((function, rets, entry));
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
                timed: u32::from(timed),
                ret_probed: u32::from(!rets.is_empty()),
                error_word: error_word(&function),
                ..ProbeConfig::default()
            };
            let owner = PointOwner::Traced(index);
            let name = &function.name;
            let returns_at_sites = if rets_needed.is_none() && !return_sites.is_empty() {
                COOKIE_RETURNS_AT_SITES
            } else {
                0
            };
            let entries = placer.entry_points(name, owner, ProbeKind::Entry, &entry, config)?;
            points.extend(entries.into_iter().map(|point| ProbePoint {
                flags: point.flags | returns_at_sites,
                ..point
            }));
            // Strings are captured at entry only.
            let at_return = ProbeConfig {
                string_bytes: 0,
                strings: Default::default(),
                ..config
            };
            for &ret in rets {
                points.push(placer.point(name, owner, ProbeKind::Return, (ret, 0), at_return)?);
            }
            for site in &return_sites {
                let config = ProbeConfig {
                    return_site: site.returns_to,
                    results: site.sources,
                    ..at_return
                };
                let at = (site.probe, COOKIE_AT_RETURN_SITE);
                points.push(placer.point(name, owner, ProbeKind::Return, at, config)?);
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
    let placer = Placer { binary, mode };
    for (name, kind) in allocations.into_iter().chain(others).chain(stack_growth) {
        let function = binary.resolve(std::slice::from_ref(&name))?.remove(0);
        let owner = PointOwner::Counting(sites.len());
        let config = ProbeConfig::default();
        let probe = if kind == ProbeKind::GcCycle {
            let (code, placed) = placer.decode(&function)?;
            let flush = binary.resolve(&[GC_RECORD_DONE.to_string()])?.remove(0);
            let (probe, at) = match placement::call_sites(&code, function.entry, flush.entry)[..] {
                [call] => (RuntimeProbe::AtCall(GC_RECORD_DONE), vec![call]),
                // A runtime that calls it elsewhere: the returns, where the record is complete
                // too but, the GC's locks released, may hold the next cycle's first times.
                _ => (RuntimeProbe::Returns(placed.returns.len()), placed.returns),
            };
            for addr in at {
                points.push(placer.point(&name, owner, kind, (addr, 0), config)?);
            }
            probe
        } else {
            let (entry, _) = placer.place(&function)?;
            points.extend(placer.entry_points(&name, owner, kind, &entry, config)?);
            RuntimeProbe::Entry(entry)
        };
        sites.push((name, probe));
    }
    Ok(CountingProbes {
        placed: sites,
        points,
    })
}
