//! Hot paths (`escapade hot`): CPU samples joined to the lifetimes of traced calls'
//! parameters. A path is the chain of traced functions in a sampled stack, outermost first;
//! its score is `S = w_cpu * CPU + w_plo * PLO`, where CPU is the share of the target's samples
//! whose chain starts with the path and PLO the mean, over the path's complete occurrences, of
//! the intersection of its parameters' lifetimes divided by their union.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use probe_common::CallEvent;
use serde::Serialize;

use crate::cpu::CpuProfile;
use crate::gobin::{Frame, GoBinary};
use crate::model::{CallModel, CallRecord, Symbols};
use crate::session::{Ended, EventSink, Traced};

/// Parameter lifetime overlap of one occurrence: the length of the intersection of the
/// lifetimes `[start, end)` divided by the length of their union, by a sweep over the sorted
/// endpoints (O(n log n)). 0 when there are none, or they cover no time.
pub fn plo(lifetimes: &[(u64, u64)]) -> f64 {
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
    if union == 0 {
        0.0
    } else {
        intersection as f64 / union as f64
    }
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

/// Chains kept per goroutine while its outermost traced call runs; a call running that long
/// on a busy path gets its occurrences counted as `dropped` past this.
const MAX_PENDING: usize = 1 << 20;

/// An occurrence count and PLO total per path of function indices, outermost first.
#[derive(Debug, Default)]
pub struct Occurrences {
    pub by_path: HashMap<Vec<u32>, (u64, f64)>,
    /// Occurrences given up past [`MAX_PENDING`].
    pub dropped: u64,
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
}

impl PathTracker {
    pub fn new(has_params: Vec<bool>) -> PathTracker {
        PathTracker {
            has_params,
            stacks: HashMap::new(),
            occurrences: Occurrences::default(),
            calls: 0,
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

    fn leave(&mut self, goid: u64, function: u32, end_ns: u64) {
        let Some(stack) = self.stacks.get_mut(&goid) else {
            return;
        };
        // Calls above this one never returned: a panic unwound them, and what ran inside
        // them with it.
        let Some(at) = stack.iter().rposition(|o| o.function == function) else {
            return;
        };
        stack.truncate(at + 1);
        let Some(open) = stack.pop() else { return };
        self.calls += 1;
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
                    let slot = self.occurrences.by_path.entry(path).or_default();
                    slot.0 += 1;
                    slot.1 += plo(&chain.lifetimes);
                }
            }
        }
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

/// One row of the view.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PathRow {
    /// Traced functions, outermost first.
    pub path: Vec<String>,
    /// Samples whose chain of traced functions starts with this path.
    pub samples: u64,
    pub cpu: f64,
    /// Mean over the occurrences; 0 when none completed while escapade watched.
    pub plo: f64,
    pub occurrences: u64,
    pub score: f64,
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
    let traced: HashSet<&str> = functions.iter().map(String::as_str).collect();
    let mut samples: HashMap<Vec<String>, u64> = HashMap::new();
    let mut untraced = 0;
    for stack in &profile.stacks {
        let mut chain: Vec<String> = stack
            .pcs
            .iter()
            .flat_map(|&pc| frames(pc))
            .map(|f| f.function)
            .filter(|f| traced.contains(f.as_str()))
            .collect();
        chain.reverse();
        if chain.is_empty() {
            untraced += stack.samples;
        }
        for depth in 1..=chain.len() {
            *samples.entry(chain[..depth].to_vec()).or_default() += stack.samples;
        }
    }
    let occurrences: HashMap<Vec<String>, (u64, f64)> = tracker
        .occurrences
        .by_path
        .iter()
        .filter_map(|(path, &total)| {
            let names: Option<Vec<String>> = path
                .iter()
                .map(|&f| functions.get(f as usize).cloned())
                .collect();
            names.map(|n| (n, total))
        })
        .collect();
    let total = profile.samples();
    let mut rows: Vec<PathRow> = samples
        .into_iter()
        .map(|(path, samples)| {
            let cpu = if total == 0 {
                0.0
            } else {
                samples as f64 / total as f64
            };
            let (occurrences, plo_sum) = occurrences.get(&path).copied().unwrap_or_default();
            let plo = if occurrences == 0 {
                0.0
            } else {
                plo_sum / occurrences as f64
            };
            PathRow {
                score: weights.cpu * cpu + weights.plo * plo,
                path,
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

/// Prints the top `top` rows as a table, or with `json` one line per path and a summary.
pub fn write(
    view: &HotView,
    ended: Ended,
    json: bool,
    top: usize,
    mut out: impl Write,
) -> std::io::Result<()> {
    let rows = &view.rows[..view.rows.len().min(top)];
    if json {
        for row in rows {
            let mut line = serde_json::to_value(row)?;
            line["type"] = "path".into();
            writeln!(out, "{line}")?;
        }
        let summary = serde_json::json!({
            "type": "hot_summary",
            "ended": ended,
            "paths": view.rows.len(),
            "samples": view.samples,
            "without_stack": view.without_stack,
            "untraced": view.untraced,
            "hz": view.hz,
            "weights": view.weights,
            "calls": view.calls,
            "dropped_occurrences": view.dropped_occurrences,
        });
        writeln!(out, "{summary}")?;
        return out.flush();
    }
    let names: Vec<String> = rows.iter().map(|r| r.path.join(" > ")).collect();
    let width = names.iter().map(String::len).max().unwrap_or(0).max(4);
    writeln!(
        out,
        "{:width$}  {:>8}  {:>6}  {:>5}  {:>11}  {:>5}",
        "path", "samples", "cpu", "plo", "occurrences", "score"
    )?;
    for (row, name) in rows.iter().zip(&names) {
        writeln!(
            out,
            "{name:width$}  {:>8}  {:>5.1}%  {:>5.2}  {:>11}  {:>5.2}",
            row.samples,
            row.cpu * 100.0,
            row.plo,
            row.occurrences,
            row.score
        )?;
    }
    writeln!(
        out,
        "{} of {} paths; {} samples at {} Hz ({} in no traced function, {} without a stack), \
         {} traced calls; score = {} CPU + {} PLO",
        rows.len(),
        view.rows.len(),
        view.samples,
        view.hz,
        view.untraced,
        view.without_stack,
        view.calls,
        view.weights.cpu,
        view.weights.plo,
    )?;
    out.flush()
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

    /// The paths of `profile`'s samples in `binary`, scored with what the session saw.
    pub fn view(&self, profile: &CpuProfile, binary: &GoBinary, weights: Weights) -> HotView {
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
        let got = |p: &[u32]| t.occurrences.by_path[p];
        assert_eq!(got(&[0]), (1, 1.0));
        assert_eq!(got(&[0, 1]), (1, 1.0 / 3.0));
        assert_eq!(got(&[0, 2]), (1, 1.0));
        assert_eq!(got(&[0, 2, 1]).0, 1);
        assert!((got(&[0, 2, 1]).1 - 2.0 / 30.0).abs() < 1e-9);
        assert_eq!(t.calls, 4);
    }
}
