//! Hot paths (`escapade hot`): CPU samples joined to the lifetimes of traced calls'
//! parameters. A path is the chain of traced functions in a sampled stack, outermost first;
//! its score is `S = w_cpu * CPU + w_plo * PLO`, where CPU is the share of the target's samples
//! whose chain starts with the path and PLO the mean, over the path's complete occurrences, of
//! the intersection of its parameters' lifetimes divided by their union.

use std::collections::{HashMap, HashSet};

use probe_common::CallEvent;
use serde::Serialize;

use crate::cpu::CpuProfile;
use crate::model::records::{CallModel, CallRecord, Symbols};
use crate::probes::plan::Traced;
use crate::sink::EventSink;
use crate::tracee::gobin::{Frame, GoBinary};

/// Parameter lifetime overlap of one occurrence: the length of the intersection of the
/// lifetimes `[start, end)` divided by the length of their union. 0 when there are none, or
/// they cover no time.
pub fn plo(lifetimes: &[(u64, u64)]) -> f64 {
    match overlap(lifetimes) {
        (_, 0) => 0.0,
        (intersection, union) => intersection as f64 / union as f64,
    }
}

/// The lengths of the intersection and of the union of the lifetimes `[start, end)`, by a
/// sweep over the sorted endpoints (O(n log n)).
fn overlap(lifetimes: &[(u64, u64)]) -> (u64, u64) {
    let mut edges: Vec<(u64, i64)> = lifetimes
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end.max(start), -1)])
        .collect();
    // Ends before starts at the same instant: touching lifetimes do not overlap.
    edges.sort_unstable();
    let all = lifetimes.len() as i64;
    let (mut live, mut union, mut intersection) = (0i64, 0u64, 0u64);
    let mut last = 0;
    for (at, change) in edges {
        let span = at - last;
        if live > 0 {
            union += span;
        }
        if live == all {
            intersection += span;
        }
        live += change;
        last = at;
    }
    (intersection, union)
}

/// One traced call whose return is still awaited, and the occurrences finished inside it.
struct Open {
    function: u32,
    start_ns: u64,
    /// Chains of calls that returned inside this one, innermost function first, with the
    /// lifetimes of their parameters; completed once every call around them returns.
    pending: Vec<Chain>,
}

struct Chain {
    /// Function indices, innermost first.
    functions: Vec<u32>,
    lifetimes: Vec<(u64, u64)>,
}

/// Chains kept inside one running call until it returns; a call running that long on a busy
/// path gets its occurrences counted as `dropped` past this (a chain takes about 150 bytes).
const MAX_PENDING: usize = 1 << 16;

/// Occurrences per path of function indices, outermost first.
#[derive(Debug, Default)]
pub struct Occurrences {
    pub by_path: HashMap<Vec<u32>, Totals>,
    /// Occurrences given up past [`MAX_PENDING`].
    pub dropped: u64,
}

/// What the occurrences of one path add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub count: u64,
    pub plo_sum: f64,
    /// Nanoseconds in which every lifetime of an occurrence was live, summed.
    pub intersection_ns: u64,
}

/// Follows each goroutine's traced calls into path occurrences: an occurrence is a call
/// together with the traced calls around it on its goroutine, complete once the outermost
/// returns.
pub struct PathTracker {
    /// Per traced function, whether its parameters have a lifetime: functions without
    /// parameters add none (without DWARF, parameters are unknown and each call counts).
    has_params: Vec<bool>,
    stacks: HashMap<u64, Vec<Open>>,
    pub occurrences: Occurrences,
    pub calls: u64,
    /// Functions with a call that both began and ended while escapade watched.
    completed: HashSet<u32>,
    /// The first and the last time a call began or ended: what escapade watched.
    watched: Option<(u64, u64)>,
}

impl PathTracker {
    pub fn new(has_params: Vec<bool>) -> PathTracker {
        PathTracker {
            has_params,
            stacks: HashMap::new(),
            occurrences: Occurrences::default(),
            calls: 0,
            completed: HashSet::new(),
            watched: None,
        }
    }

    /// Whether each traced function of a plan has parameters, as [`PathTracker::new`] takes it.
    fn params_of(traced: &[Traced]) -> Vec<bool> {
        traced
            .iter()
            .map(|t| {
                t.function
                    .signature
                    .as_ref()
                    .is_none_or(|s| !s.params.is_empty())
            })
            .collect()
    }

    pub fn call(&mut self, record: &CallRecord) {
        let (CallRecord::Entry { wall_ns, .. } | CallRecord::Return { wall_ns, .. }) = *record;
        self.watched = Some(self.watched.map_or((wall_ns, wall_ns), |(first, last)| {
            (first.min(wall_ns), last.max(wall_ns))
        }));
        match *record {
            CallRecord::Entry {
                wall_ns,
                goid,
                function,
                ..
            } => self.stacks.entry(goid).or_default().push(Open {
                function,
                start_ns: wall_ns,
                pending: Vec::new(),
            }),
            CallRecord::Return {
                wall_ns,
                goid,
                function,
                duration_ns: Some(_),
                ..
            } => self.leave(goid, function, wall_ns),
            // Running since before escapade attached: no lifetime to measure.
            CallRecord::Return {
                duration_ns: None, ..
            } => {}
        }
    }

    /// How many occurrences `path` (function indices, outermost first) had, and their mean
    /// PLO. Calls that began before escapade attached and never returned while it watched
    /// (`main.main`, a goroutine's endless loop) have no entry to open an occurrence with: a
    /// path starting with such calls counts the occurrences of the rest of it, and when one of
    /// them has parameters, its lifetime spans what escapade watched.
    pub fn occurrences_of(&self, path: &[u32]) -> (u64, f64) {
        let mean = |t: &Totals| t.plo_sum / t.count as f64;
        if let Some(totals) = self.occurrences.by_path.get(path) {
            return (totals.count, mean(totals));
        }
        for split in 1..path.len() {
            let (running, rest) = path.split_at(split);
            if running.iter().any(|f| self.completed.contains(f)) {
                break;
            }
            let Some(totals) = self.occurrences.by_path.get(rest) else {
                continue;
            };
            let spans_all = running
                .iter()
                .any(|&f| self.has_params.get(f as usize).copied() == Some(true));
            let plo = match self.watched {
                // Its lifetime holds every other one: it is their union.
                Some((first, last)) if spans_all && last > first => {
                    totals.intersection_ns as f64 / totals.count as f64 / (last - first) as f64
                }
                _ => mean(totals),
            };
            return (totals.count, plo);
        }
        (0, 0.0)
    }

    /// Ends the calls still running as escapade stops watching, at the last time it saw, so
    /// that what ran inside them counts (a goroutine's loop entered after attaching).
    pub fn finish(&mut self) {
        let Some((_, last)) = self.watched else {
            return;
        };
        let goids: Vec<u64> = self.stacks.keys().copied().collect();
        for goid in goids {
            while let Some(top) = self.stacks.get(&goid).and_then(|s| s.last()) {
                let function = top.function;
                self.close(goid, function, last);
            }
        }
    }

    fn leave(&mut self, goid: u64, function: u32, end_ns: u64) {
        if self.close(goid, function, end_ns) {
            self.calls += 1;
            self.completed.insert(function);
        }
    }

    /// Ends the innermost running call of `function` on `goid` at `end_ns`; false when there
    /// is none.
    fn close(&mut self, goid: u64, function: u32, end_ns: u64) -> bool {
        let Some(stack) = self.stacks.get_mut(&goid) else {
            return false;
        };
        // Calls above this one never returned: a panic unwound them, and what ran inside
        // them with it.
        let Some(at) = stack.iter().rposition(|o| o.function == function) else {
            return false;
        };
        stack.truncate(at + 1);
        let Some(open) = stack.pop() else {
            return false;
        };
        let lifetime = (open.start_ns, end_ns);
        let has_params = self.has_params.get(function as usize).copied() == Some(true);
        let mut chains = open.pending;
        chains.push(Chain {
            functions: Vec::new(),
            lifetimes: Vec::new(),
        });
        for chain in &mut chains {
            chain.functions.push(function);
            if has_params {
                chain.lifetimes.push(lifetime);
            }
        }
        match stack.last_mut() {
            Some(parent) => {
                let room = MAX_PENDING.saturating_sub(parent.pending.len());
                self.occurrences.dropped += chains.len().saturating_sub(room) as u64;
                parent.pending.extend(chains.into_iter().take(room));
            }
            None => {
                self.stacks.remove(&goid);
                for chain in chains {
                    let mut path = chain.functions;
                    path.reverse();
                    let (intersection, union) = overlap(&chain.lifetimes);
                    let totals = self.occurrences.by_path.entry(path).or_default();
                    totals.count += 1;
                    totals.intersection_ns += intersection;
                    if union > 0 {
                        totals.plo_sum += intersection as f64 / union as f64;
                    }
                }
            }
        }
        true
    }
}

/// How much CPU and PLO weigh in the score (`--weights`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Weights {
    pub cpu: f64,
    pub plo: f64,
}

impl Default for Weights {
    fn default() -> Weights {
        Weights { cpu: 0.6, plo: 0.4 }
    }
}

/// One row of the view; its JSON line, in this order, is tagged `"type":"path"`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename = "path")]
pub struct PathRow {
    /// Traced functions, outermost first.
    pub path: Vec<String>,
    /// Samples whose chain of traced functions starts with this path.
    pub samples: u64,
    #[serde(serialize_with = "four_decimals")]
    pub cpu: f64,
    /// Mean over the occurrences; 0 when none completed while escapade watched.
    #[serde(serialize_with = "four_decimals")]
    pub plo: f64,
    pub occurrences: u64,
    #[serde(serialize_with = "four_decimals")]
    pub score: f64,
}

/// Shares and scores to four decimals: more is noise from sampling.
fn four_decimals<S: serde::Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((value * 1e4).round() / 1e4)
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HotView {
    /// Highest score first.
    pub rows: Vec<PathRow>,
    pub samples: u64,
    pub without_stack: u64,
    /// Samples in no traced function.
    pub untraced: u64,
    pub hz: u64,
    pub weights: Weights,
    /// Completed traced calls, and path occurrences given up (see [`MAX_PENDING`]).
    pub calls: u64,
    pub dropped_occurrences: u64,
}

/// Joins samples to occurrences. `frames` resolves a link-time code address to its frames,
/// innermost first; `functions` names the traced functions by index.
pub fn build(
    profile: &CpuProfile,
    frames: impl Fn(u64) -> Vec<Frame>,
    functions: &[String],
    tracker: &PathTracker,
    weights: Weights,
) -> HotView {
    let index: HashMap<&str, u32> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| (f.as_str(), i as u32))
        .collect();
    let mut samples: HashMap<Vec<u32>, u64> = HashMap::new();
    let mut untraced = 0;
    for stack in &profile.stacks {
        let mut chain: Vec<u32> = stack
            .pcs
            .iter()
            .flat_map(|&pc| frames(pc))
            .filter_map(|f| index.get(f.function.as_str()).copied())
            .collect();
        chain.reverse();
        if chain.is_empty() {
            untraced += stack.samples;
        }
        for depth in 1..=chain.len() {
            *samples.entry(chain[..depth].to_vec()).or_default() += stack.samples;
        }
    }
    let total = profile.samples();
    let mut rows: Vec<PathRow> = samples
        .into_iter()
        .map(|(path, samples)| {
            let cpu = if total == 0 {
                0.0
            } else {
                samples as f64 / total as f64
            };
            let (occurrences, plo) = tracker.occurrences_of(&path);
            PathRow {
                score: weights.cpu * cpu + weights.plo * plo,
                path: path
                    .iter()
                    .map(|&f| functions[f as usize].clone())
                    .collect(),
                samples,
                cpu,
                plo,
                occurrences,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.samples.cmp(&a.samples))
            .then_with(|| a.path.cmp(&b.path))
    });
    HotView {
        rows,
        samples: total,
        without_stack: profile.without_stack,
        untraced,
        hz: profile.hz,
        weights,
        calls: tracker.calls,
        dropped_occurrences: tracker.occurrences.dropped,
    }
}

/// `escapade hot`'s session: each traced call into the path tracker.
pub struct HotSink<'a> {
    model: CallModel<'a>,
    symbols: Symbols,
    tracker: PathTracker,
    /// The traced functions' names, by index.
    names: Vec<String>,
}

impl<'a> HotSink<'a> {
    /// `model` should not decode values: only times are needed.
    pub fn new(model: CallModel<'a>, traced: &[Traced]) -> HotSink<'a> {
        HotSink {
            model,
            symbols: Symbols::default(),
            tracker: PathTracker::new(PathTracker::params_of(traced)),
            names: traced.iter().map(|t| t.function.name.clone()).collect(),
        }
    }

    /// The paths of `profile`'s samples in `binary`, scored with what the session saw; calls
    /// still running end now.
    pub fn view(&mut self, profile: &CpuProfile, binary: &GoBinary, weights: Weights) -> HotView {
        self.tracker.finish();
        build(
            profile,
            |pc| binary.symbolize_inlined(pc),
            &self.names,
            &self.tracker,
            weights,
        )
    }
}

impl EventSink for HotSink<'_> {
    fn event(&mut self, event: &CallEvent) -> anyhow::Result<()> {
        if let Some(record) = self.model.record(event, &mut self.symbols) {
            self.tracker.call(&record);
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_lifetimes_overlap_by_the_inner_over_the_outer() {
        // Outer 30 ms, inner 10 ms inside it.
        let plo = plo(&[(0, 30_000_000), (10_000_000, 20_000_000)]);
        assert!((plo - 1.0 / 3.0).abs() < 1e-9, "{plo}");
    }

    #[test]
    fn disjoint_siblings_do_not_overlap() {
        assert_eq!(plo(&[(0, 10), (10, 20)]), 0.0);
        assert_eq!(plo(&[(0, 10), (15, 20)]), 0.0);
        // Partly overlapping: 5 of 20.
        assert_eq!(plo(&[(0, 10), (5, 20)]), 0.25);
        assert_eq!(plo(&[(3, 9)]), 1.0);
        assert_eq!(plo(&[]), 0.0);
    }

    fn entry(goid: u64, function: u32, wall_ns: u64) -> CallRecord {
        CallRecord::Entry {
            wall_ns,
            goid,
            tid: 1,
            function,
            args: Vec::new(),
            words: Vec::new(),
            caller_pc: 0,
            return_addr: 0,
            sp: 0,
        }
    }

    fn ret(goid: u64, function: u32, wall_ns: u64) -> CallRecord {
        CallRecord::Return {
            wall_ns,
            goid,
            tid: 1,
            function,
            results: Vec::new(),
            duration_ns: Some(1),
        }
    }

    #[test]
    fn occurrences_complete_when_the_outermost_call_returns() {
        let mut t = PathTracker::new(vec![true, true, false]);
        t.call(&entry(1, 0, 0));
        t.call(&entry(1, 1, 10));
        t.call(&ret(1, 1, 20));
        // A function without parameters adds no lifetime.
        t.call(&entry(1, 2, 21));
        t.call(&entry(1, 1, 22));
        t.call(&ret(1, 1, 24));
        t.call(&ret(1, 2, 25));
        assert!(t.occurrences.by_path.is_empty());
        t.call(&ret(1, 0, 30));
        let got = |p: &[u32]| t.occurrences_of(p);
        assert_eq!(got(&[0]), (1, 1.0));
        assert_eq!(got(&[0, 1]), (1, 1.0 / 3.0));
        assert_eq!(got(&[0, 2]), (1, 1.0));
        assert_eq!(got(&[0, 2, 1]).0, 1);
        assert!((got(&[0, 2, 1]).1 - 2.0 / 30.0).abs() < 1e-9);
        assert_eq!(t.calls, 4);
        // Function 2 completed calls: a path starting with it is not one whose start was
        // missed.
        assert_eq!(got(&[2, 0, 1]), (0, 0.0));
    }

    #[test]
    fn calls_still_running_end_when_escapade_stops_watching() {
        let mut t = PathTracker::new(vec![true, true]);
        t.call(&entry(1, 0, 0));
        t.call(&entry(1, 1, 10));
        t.call(&ret(1, 1, 20));
        assert!(t.occurrences.by_path.is_empty());
        t.finish();
        assert_eq!(t.occurrences_of(&[0]), (1, 1.0));
        assert_eq!(t.occurrences_of(&[0, 1]), (1, 0.5));
        // Only function 1 returned.
        assert_eq!(t.calls, 1);
    }

    #[test]
    fn calls_running_since_before_attaching_enclose_the_rest() {
        // Function 0 (without parameters) and 1 (with) never return; 2 runs inside them.
        let mut t = PathTracker::new(vec![false, true, true]);
        t.call(&entry(1, 2, 0));
        t.call(&ret(1, 2, 10));
        t.call(&entry(1, 2, 90));
        t.call(&ret(1, 2, 100));
        assert_eq!(t.occurrences_of(&[2]), (2, 1.0));
        assert_eq!(t.occurrences_of(&[0, 2]), (2, 1.0));
        // Function 1's parameters live through all 100 ns watched: 10 of them overlap.
        assert_eq!(t.occurrences_of(&[0, 1, 2]), (2, 0.1));
        assert_eq!(t.occurrences_of(&[1, 0]), (0, 0.0));
    }
}
