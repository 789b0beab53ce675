//! The `trace` view: one line per entry and return, then a summary, live or from a recording.

use std::fmt::Write as _;
use std::io::Write;

use probe_common::{CallEvent, CallStats};
use serde::Serialize;
use serde_json::json;

use super::Output;
use super::text::{duration_text, ended_text, frame_text, value_text, wall_time};
use crate::model::decode::{Decoder, Value};
use crate::model::records::{CallModel, CallRecord, FunctionInfo, ParamInfo, Symbols, TraceTotals};
use crate::probes::plan::Plan;
use crate::probes::snapshot::Counters;
use crate::record::reader::Visitor;
use crate::session::Ended;
use crate::sink::EventSink;
use crate::tracee::gobin::arginfo;

#[derive(Clone, Copy, Debug, Default, Serialize)]
struct FunctionStats {
    entries: u64,
    returns: u64,
    paired: u64,
    total_ns: u64,
}

impl FunctionStats {
    /// The kernel's count: each return it counted closed an entry it saw.
    fn of_kernel(calls: &CallStats) -> FunctionStats {
        FunctionStats {
            entries: calls.entries,
            returns: calls.returns,
            paired: calls.returns,
            total_ns: calls.total_ns,
        }
    }
}

/// Of the returns the kernel counted, those seen on the function's own `RET`s.
fn returns_at_ret(calls: &CallStats) -> u64 {
    calls.returns.saturating_sub(calls.caller_returns)
}

/// Latency quantiles from the kernel's log2 histogram: the upper bound, in ns, of the bucket
/// holding each of p50, p90 and p99 (a call in bucket `i` took under `2^(i+1)` ns).
fn quantiles(calls: &CallStats) -> Option<[u64; 3]> {
    let total: u64 = calls.latency.iter().sum();
    let below = |q: f64| {
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        let bucket = calls.latency.iter().position(|&n| {
            seen += n;
            seen >= rank
        })?;
        Some(1u64 << (bucket + 1))
    };
    (total > 0).then_some(())?;
    Some([below(0.5)?, below(0.9)?, below(0.99)?])
}

/// The live `trace` view: probe events modelled into records, rendered as they come.
pub struct TracePrinter<'a, W: Write> {
    model: CallModel<'a>,
    symbols: Symbols,
    view: TraceView<W>,
}

impl<'a, W: Write> TracePrinter<'a, W> {
    pub fn new(decoder: Decoder<'a>, plan: &'a Plan, out: Output<W>, quiet: bool) -> Self {
        let functions = plan.traced.iter().map(FunctionInfo::of).collect();
        TracePrinter {
            model: CallModel::new(decoder, plan, !quiet),
            symbols: Symbols::default(),
            view: TraceView::new(functions, out, quiet),
        }
    }

    /// The end-of-run summary: calls per function, where each probe sits, events and losses,
    /// and the calls as the kernel counted and timed them.
    /// `still_running`: the calls the kernel holds open that the target still runs (see
    /// [`crate::model::calls::still_running`]).
    pub fn summary(
        self,
        ended: Ended,
        counters: Counters,
        malformed: u64,
        kernel: &[CallStats],
        still_running: u64,
    ) -> std::io::Result<()> {
        let totals = TraceTotals {
            ended: Some(ended),
            counters,
            malformed,
            pairing: self.model.pairing(),
        };
        self.view
            .summary(&totals, Some(kernel), Some(still_running))
    }
}

impl<W: Write> EventSink for TracePrinter<'_, W> {
    fn event(&mut self, event: &CallEvent) -> anyhow::Result<()> {
        if let Some(record) = self.model.record(event, &mut self.symbols) {
            self.view.call(&record, &self.symbols)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(self.view.flush()?)
    }

    fn prints_events(&self) -> bool {
        !self.view.quiet
    }
}

/// Renders [`CallRecord`]s, live or read back from a recording: a line per entry and return
/// (text or JSON), then a summary.
pub struct TraceView<W: Write> {
    functions: Vec<FunctionInfo>,
    stats: Vec<FunctionStats>,
    /// Count calls but print only the summary.
    quiet: bool,
    out: Output<W>,
}

/// A parameter with its value, as a JSON line shows it.
#[derive(Serialize)]
struct ArgView<'a> {
    #[serde(flatten)]
    param: &'a ParamInfo,
    value: &'a Value,
}

impl<W: Write> TraceView<W> {
    pub fn new(functions: Vec<FunctionInfo>, out: Output<W>, quiet: bool) -> Self {
        TraceView {
            stats: vec![FunctionStats::default(); functions.len()],
            functions,
            quiet,
            out,
        }
    }

    /// Lets the lines printed so far reach their reader.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// The end-of-run summary: calls per function, where each probe sits, events and losses.
    /// With `kernel` (live sessions, and recordings that hold it), each function's counts, mean,
    /// latency quantiles and where its returns were seen come from the kernel's.
    /// `still_running` replaces the calls the kernel's counts leave open (entries without a
    /// return, which include calls a panic unwound) where the target was asked which still run.
    pub fn summary(
        mut self,
        totals: &TraceTotals,
        kernel: Option<&[CallStats]>,
        still_running: Option<u64>,
    ) -> std::io::Result<()> {
        let rows: Vec<SummaryRow> = self
            .functions
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let kernel = kernel.and_then(|k| k.get(i));
                // The kernel's counts, which lose nothing to a full ring buffer; from a
                // recording without them, what its events show.
                let stats = kernel.map_or(self.stats[i], FunctionStats::of_kernel);
                (f, stats, kernel)
            })
            .collect();
        // Calls entered and not returned, by the same count as the rows'.
        let in_flight = match (still_running, kernel) {
            (Some(running), _) => running,
            // A function without a return probe has no returns to wait for.
            (None, Some(_)) => rows
                .iter()
                .filter(|(f, _, _)| f.return_probes > 0)
                .filter_map(|(_, _, k)| {
                    k.map(|k| k.entries.saturating_sub(k.returns + k.unobserved))
                })
                .sum(),
            (None, None) => totals.pairing.in_flight,
        };
        self.out.row(
            |out| write_summary(&rows, totals, in_flight, out),
            || Ok(summary_json(&rows, totals, in_flight)),
        )?;
        self.out.flush()?;
        super::warn_lost_events(totals.counters.dropped, "");
        Ok(())
    }
}

/// A recording's calls, read back, as they were shown live.
impl<W: Write> Visitor for TraceView<W> {
    /// Counts `record` and prints its line.
    fn call(&mut self, record: &CallRecord, symbols: &Symbols) -> std::io::Result<()> {
        let index = record.function();
        let (Some(function), Some(stats)) = (self.functions.get(index), self.stats.get_mut(index))
        else {
            return Ok(());
        };
        match record {
            CallRecord::Entry { .. } => stats.entries += 1,
            CallRecord::Return { duration_ns, .. } => {
                stats.returns += 1;
                if let Some(d) = duration_ns {
                    stats.paired += 1;
                    stats.total_ns += d;
                }
            }
        }
        if self.quiet {
            return Ok(());
        }
        match record {
            CallRecord::Entry {
                wall_ns,
                goid,
                tid,
                args: values,
                words,
                caller_pc,
                return_addr,
                sp,
                ..
            } => {
                let args: Vec<_> = function.params.iter().zip(values).collect();
                let caller = symbols.frame(*caller_pc);
                self.out.row(
                    |out| {
                        let caller =
                            caller.map_or_else(String::new, |f| format!(" from {}", frame_text(f)));
                        writeln!(
                            out,
                            "{} g{goid:<5} -> {}({}){caller}",
                            wall_time(*wall_ns),
                            function.name,
                            if words.is_empty() {
                                args_text(&args)
                            } else {
                                arginfo::text(words)
                            },
                        )
                    },
                    || {
                        Ok(json!({
                            "type": "entry",
                            "time_ns": wall_ns,
                            "goid": goid,
                            "tid": tid,
                            "function": function.name,
                            "args": args_json(&args),
                            "words": arginfo::json(words),
                            "caller": caller,
                            "return_addr": format!("{return_addr:#x}"),
                            "sp": format!("{sp:#x}"),
                        }))
                    },
                )
            }
            CallRecord::Return {
                wall_ns,
                goid,
                tid,
                results,
                duration_ns,
                ..
            } => {
                let results: Vec<_> = function.results.iter().zip(results).collect();
                self.out.row(
                    |out| {
                        let took = duration_ns
                            .map(|d| format!(" in {}", duration_text(d)))
                            .unwrap_or_default();
                        writeln!(
                            out,
                            "{} g{goid:<5} <- {}{took} = ({})",
                            wall_time(*wall_ns),
                            function.name,
                            args_text(&results),
                        )
                    },
                    || {
                        Ok(json!({
                            "type": "return",
                            "time_ns": wall_ns,
                            "goid": goid,
                            "tid": tid,
                            "function": function.name,
                            "results": args_json(&results),
                            "duration_ns": duration_ns,
                        }))
                    },
                )
            }
        }
    }
}

/// A function's line of the summary: its counts, and the kernel's when there are.
type SummaryRow<'a> = (&'a FunctionInfo, FunctionStats, Option<&'a CallStats>);

fn write_summary(
    rows: &[SummaryRow],
    totals: &TraceTotals,
    in_flight: u64,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let counters = &totals.counters;
    let pairing = &totals.pairing;
    let dropped = counters.dropped;
    let why = totals
        .ended
        .map_or("the recording stops short: escapade was killed", ended_text);
    writeln!(out, "\nescapade: detached ({why})")?;
    let width = rows
        .iter()
        .map(|(f, _, _)| f.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    // Where returns were seen, in columns only when a probe saw any elsewhere than on
    // the function's RET, or missed some.
    let at_sites = rows
        .iter()
        .any(|(_, _, k)| k.is_some_and(|k| k.caller_returns > 0));
    let unobserved = rows
        .iter()
        .any(|(_, _, k)| k.is_some_and(|k| k.unobserved > 0));
    let seen = |[at_site, at_ret, missed]: [String; 3]| {
        let mut cells = String::new();
        if at_sites {
            let _ = write!(cells, "  {at_site:>9}  {at_ret:>9}");
        }
        if unobserved {
            let _ = write!(cells, "  {missed:>10}");
        }
        cells
    };
    writeln!(
        out,
        "  {:width$}  {:>9}  {:>9}{}  {:>10}  {:>9}  {:>9}  {:>9}  entry probe",
        "function",
        "calls",
        "returns",
        seen(["at site", "at RET", "unobserved"].map(String::from)),
        "mean",
        "p50",
        "p90",
        "p99"
    )?;
    for (f, s, kernel) in rows {
        let mean = s
            .total_ns
            .checked_div(s.paired)
            .map_or_else(|| "-".into(), duration_text);
        let [p50, p90, p99] = match kernel.and_then(quantiles) {
            Some(q) => q.map(|below| format!("<{}", duration_text(below))),
            None => ["-".to_string(), "-".to_string(), "-".to_string()],
        };
        let seen = seen(match kernel {
            Some(k) => [k.caller_returns, returns_at_ret(k), k.unobserved].map(|n| n.to_string()),
            None => ["-", "-", "-"].map(String::from),
        });
        writeln!(
            out,
            "  {:width$}  {:>9}  {:>9}{seen}  {:>10}  {p50:>9}  {p90:>9}  {p99:>9}  {}",
            f.name, s.entries, s.returns, mean, f.entry_probe
        )?;
    }
    if at_sites {
        writeln!(
            out,
            "  at site: returns seen in the caller, at the call's return site; at RET: \
                 seen on the function's own RET"
        )?;
    }
    if unobserved {
        writeln!(
            out,
            "  unobserved: calls whose return no probe sees (not observed: called \
                 indirectly, from a site without a return-site probe)"
        )?;
    }
    writeln!(
        out,
        "  events {}, dropped {dropped}, stack-growth retries {}, read errors {}, \
             returns without entry {}, unwound {}, repeated hits {}, still running {}",
        counters.events,
        counters.morestack,
        counters.read_errors,
        pairing.unmatched_returns,
        pairing.unwound,
        pairing.repeated_hits,
        in_flight,
    )
}

fn summary_json(rows: &[SummaryRow], totals: &TraceTotals, in_flight: u64) -> serde_json::Value {
    let counters = &totals.counters;
    let pairing = &totals.pairing;
    let functions: Vec<_> = rows
        .iter()
        .map(|(f, s, kernel)| {
            let q = kernel.and_then(quantiles);
            json!({
                "function": f.name,
                "entries": s.entries,
                "returns": s.returns,
                "paired": s.paired,
                "total_ns": s.total_ns,
                "p50_below_ns": q.map(|q| q[0]),
                "p90_below_ns": q.map(|q| q[1]),
                "p99_below_ns": q.map(|q| q[2]),
                "latency_log2_ns": kernel.map(|k| k.latency.to_vec()),
                "returns_at_return_site": kernel.map(|k| k.caller_returns),
                "returns_at_ret": kernel.map(returns_at_ret),
                "unobserved": kernel.map(|k| k.unobserved),
                "entry_probe": f.entry_probe,
                "fast": f.fast,
                "return_probes": f.return_probes,
            })
        })
        .collect();
    json!({
        "type": "summary",
        "ended": totals.ended,
        "functions": functions,
        "events": counters.events,
        "dropped": counters.dropped,
        "morestack_retries": counters.morestack,
        "read_errors": counters.read_errors,
        "malformed": totals.malformed + pairing.unknown_probe,
        "unmatched_returns": pairing.unmatched_returns,
        "unwound": pairing.unwound,
        "repeated_hits": pairing.repeated_hits,
        "in_flight": in_flight,
    })
}

fn args_json(args: &[(&ParamInfo, &Value)]) -> serde_json::Value {
    serde_json::Value::Array(
        args.iter()
            .map(|(param, value)| json!(ArgView { param, value }))
            .collect(),
    )
}

fn args_text(args: &[(&ParamInfo, &Value)]) -> String {
    let mut s = String::new();
    for (i, (p, value)) in args.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(
            s,
            "{} {} [{}] = {}",
            p.name,
            p.type_name,
            p.location,
            value_text(value)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary of one function, `main.f`, as the kernel counted its calls.
    fn summary(json: bool, kernel: CallStats) -> String {
        let function = FunctionInfo {
            name: "main.f".into(),
            entry: 0x401000,
            params: Vec::new(),
            results: Vec::new(),
            entry_probe: "fast".into(),
            fast: true,
            return_probes: 1,
            return_probe: "fast: 1 return sites".into(),
        };
        let mut out = Vec::new();
        TraceView::new(vec![function], Output::new(json, &mut out), true)
            .summary(&TraceTotals::default(), Some(&[kernel]), None)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Tests against real probes see every return on the RET: these are the other cases.
    #[test]
    fn where_returns_were_seen_shows_when_not_all_on_the_ret() {
        let all_on_ret = CallStats {
            entries: 5,
            returns: 5,
            ..CallStats::default()
        };
        let text = summary(false, all_on_ret);
        assert!(
            !text.contains("at RET") && !text.contains("unobserved"),
            "{text}"
        );

        let mixed = CallStats {
            entries: 10,
            returns: 7,
            caller_returns: 4,
            unobserved: 2,
            ..CallStats::default()
        };
        let text = summary(false, mixed);
        let header = text.lines().find(|l| l.contains("function")).unwrap();
        let row = text.lines().find(|l| l.contains("main.f")).unwrap();
        let cells = |line: &str| -> Vec<String> {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        };
        assert_eq!(
            cells(header)[..6],
            [
                "function",
                "calls",
                "returns",
                "at site",
                "at RET",
                "unobserved"
            ],
            "{text}"
        );
        assert_eq!(
            cells(row)[..6],
            ["main.f", "10", "7", "4", "3", "2"],
            "{text}"
        );
        assert!(
            text.contains("\n  unobserved: calls whose return no probe sees"),
            "{text}"
        );
        assert!(text.contains("still running 1\n"), "{text}");

        let json: serde_json::Value = serde_json::from_str(&summary(true, mixed)).unwrap();
        let f = &json["functions"][0];
        assert_eq!(f["returns_at_return_site"], 4, "{json}");
        assert_eq!(f["returns_at_ret"], 3, "{json}");
        assert_eq!(f["unobserved"], 2, "{json}");
        assert_eq!(json["in_flight"], 1, "{json}");
    }
}
