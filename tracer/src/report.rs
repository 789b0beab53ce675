//! The views: `trace` (one line per entry and return, as text or JSON lines, then a summary)
//! and `allocs` (the top allocation sites), live or from a recording.

mod params;

pub use params::{ParamsMeta, write_params};

use std::fmt::Write as _;
use std::io::Write;

use probe_common::{CallEvent, CallStats};
use serde::Serialize;
use serde_json::json;

use crate::allocs::AllocReport;
use crate::cpu::CpuProfile;
use crate::decode::{Decoder, Value};
use crate::model::{CallModel, CallRecord, FunctionInfo, ParamInfo, Symbols, TraceTotals};
use crate::probes::plan::Plan;
use crate::probes::snapshot::Counters;
use crate::session::Ended;
use crate::sink::EventSink;
use crate::target::gobin::{Frame, arginfo};

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
    pub fn new(decoder: Decoder<'a>, plan: &'a Plan, json: bool, quiet: bool, out: W) -> Self {
        let functions = plan.traced.iter().map(FunctionInfo::of).collect();
        TracePrinter {
            model: CallModel::new(decoder, plan, !quiet),
            symbols: Symbols::default(),
            view: TraceView::new(functions, json, quiet, out),
        }
    }

    /// The end-of-run summary: calls per function, where each probe sits, events and losses,
    /// and the calls as the kernel counted and timed them.
    /// `still_running`: the calls the kernel holds open that the target still runs (see
    /// [`crate::calls::still_running`]).
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
    json: bool,
    /// Count calls but print only the summary.
    quiet: bool,
    out: W,
}

/// A parameter with its value, as a JSON line shows it.
#[derive(Serialize)]
struct ArgView<'a> {
    #[serde(flatten)]
    param: &'a ParamInfo,
    value: &'a Value,
}

impl<W: Write> TraceView<W> {
    pub fn new(functions: Vec<FunctionInfo>, json: bool, quiet: bool, out: W) -> Self {
        TraceView {
            stats: vec![FunctionStats::default(); functions.len()],
            functions,
            json,
            quiet,
            out,
        }
    }

    /// Counts `record` and prints its line.
    pub fn call(&mut self, record: &CallRecord, symbols: &Symbols) -> std::io::Result<()> {
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
                if self.json {
                    let line = json!({
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
                    });
                    writeln!(self.out, "{line}")
                } else {
                    let caller = caller
                        .map(|f| format!(" from {}", frame_text(f)))
                        .unwrap_or_default();
                    writeln!(
                        self.out,
                        "{} g{goid:<5} -> {}({}){caller}",
                        wall_time(*wall_ns),
                        function.name,
                        if words.is_empty() {
                            args_text(&args)
                        } else {
                            arginfo::text(words)
                        },
                    )
                }
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
                if self.json {
                    let line = json!({
                        "type": "return",
                        "time_ns": wall_ns,
                        "goid": goid,
                        "tid": tid,
                        "function": function.name,
                        "results": args_json(&results),
                        "duration_ns": duration_ns,
                    });
                    writeln!(self.out, "{line}")
                } else {
                    let took = duration_ns
                        .map(|d| format!(" in {}", duration_text(d)))
                        .unwrap_or_default();
                    writeln!(
                        self.out,
                        "{} g{goid:<5} <- {}{took} = ({})",
                        wall_time(*wall_ns),
                        function.name,
                        args_text(&results),
                    )
                }
            }
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
        let counters = &totals.counters;
        let pairing = &totals.pairing;
        let dropped = counters.dropped;
        let rows: Vec<(&FunctionInfo, FunctionStats, Option<&CallStats>)> = self
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
            (None, None) => pairing.in_flight,
        };
        if self.json {
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
            let line = json!({
                "type": "summary",
                "ended": totals.ended,
                "functions": functions,
                "events": counters.events,
                "dropped": dropped,
                "morestack_retries": counters.morestack,
                "read_errors": counters.read_errors,
                "malformed": totals.malformed + pairing.unknown_probe,
                "unmatched_returns": pairing.unmatched_returns,
                "unwound": pairing.unwound,
                "repeated_hits": pairing.repeated_hits,
                "in_flight": in_flight,
            });
            writeln!(self.out, "{line}")?;
        } else {
            let why = totals
                .ended
                .map_or("the recording stops short: escapade was killed", ended_text);
            writeln!(self.out, "\nescapade: detached ({why})")?;
            let width = self
                .functions
                .iter()
                .map(|f| f.name.len())
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
                self.out,
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
            for (f, s, kernel) in &rows {
                let mean = s
                    .total_ns
                    .checked_div(s.paired)
                    .map_or_else(|| "-".into(), duration_text);
                let [p50, p90, p99] = match kernel.and_then(quantiles) {
                    Some(q) => q.map(|below| format!("<{}", duration_text(below))),
                    None => ["-".to_string(), "-".to_string(), "-".to_string()],
                };
                let seen = seen(match kernel {
                    Some(k) => {
                        [k.caller_returns, returns_at_ret(k), k.unobserved].map(|n| n.to_string())
                    }
                    None => ["-", "-", "-"].map(String::from),
                });
                writeln!(
                    self.out,
                    "  {:width$}  {:>9}  {:>9}{seen}  {:>10}  {p50:>9}  {p90:>9}  {p99:>9}  {}",
                    f.name, s.entries, s.returns, mean, f.entry_probe
                )?;
            }
            if at_sites {
                writeln!(
                    self.out,
                    "  at site: returns seen in the caller, at the call's return site; at RET: \
                     seen on the function's own RET"
                )?;
            }
            if unobserved {
                writeln!(
                    self.out,
                    "  unobserved: calls whose return no probe sees (not observed: called \
                     indirectly, from a site without a return-site probe)"
                )?;
            }
            writeln!(
                self.out,
                "  events {}, dropped {dropped}, stack-growth retries {}, read errors {}, \
                 returns without entry {}, unwound {}, repeated hits {}, still running {}",
                counters.events,
                counters.morestack,
                counters.read_errors,
                pairing.unmatched_returns,
                pairing.unwound,
                pairing.repeated_hits,
                in_flight,
            )?;
        }
        self.out.flush()?;
        if dropped > 0 {
            eprintln!(
                "escapade: warning: {dropped} events were lost because the ring buffer was full; \
                 trace fewer functions"
            );
        }
        Ok(())
    }
}

fn ended_text(ended: Ended) -> &'static str {
    match ended {
        Ended::Interrupted => "interrupted",
        Ended::Deadline => "duration reached",
        Ended::TargetExited => "target exited",
    }
}

fn args_json(args: &[(&ParamInfo, &Value)]) -> serde_json::Value {
    serde_json::Value::Array(
        args.iter()
            .map(|(param, value)| json!(ArgView { param, value }))
            .collect(),
    )
}

/// HH:MM:SS.micros in UTC.
fn wall_time(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        day / 3600,
        day / 60 % 60,
        day % 60,
        ns / 1000 % 1_000_000
    )
}

fn duration_text(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

fn frame_text(f: &Frame) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => {
            let short = file.rsplit('/').next().unwrap_or(file);
            format!("{} ({short}:{line})", f.function)
        }
        _ => f.function.clone(),
    }
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

pub fn value_text(v: &Value) -> String {
    match v {
        Value::Bool { value } => value.to_string(),
        Value::Int { value } => value.to_string(),
        Value::Uint { value } => value.to_string(),
        Value::Float { value } => value.to_string(),
        Value::Complex { real, imag } => format!("({real}{imag:+}i)"),
        Value::Pointer { addr: 0, .. } => "nil".into(),
        Value::Pointer { addr, region } => format!("{addr:#x} ({region})"),
        Value::String {
            len, text: Some(t), ..
        } if (t.len() as u64) < *len => {
            format!("{t:?}... (len {len})")
        }
        Value::String { text: Some(t), .. } => format!("{t:?}"),
        Value::String {
            addr, len, region, ..
        } => {
            format!("string(len {len} at {addr:#x} {region})")
        }
        Value::Slice {
            addr,
            len,
            cap,
            region,
        } => {
            format!("slice(len {len} cap {cap} at {addr:#x} {region})")
        }
        Value::Interface {
            dynamic_type: None,
            data: 0,
            ..
        } => "nil".into(),
        Value::Interface {
            dynamic_type, data, ..
        } => {
            format!("{}({data:#x})", dynamic_type.as_deref().unwrap_or("?"))
        }
        Value::Struct { fields } => {
            let inner: Vec<String> = fields
                .iter()
                .map(|(n, v)| format!("{n}: {}", value_text(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        Value::Array { elems } => {
            let inner: Vec<String> = elems.iter().map(value_text).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Unreadable { reason } => format!("<{reason}>"),
        Value::Discarded => "<discarded>".into(),
    }
}

/// A site as the views name it: function (file:line).
pub fn site_text(site: &Option<Frame>) -> String {
    site.as_ref()
        .map_or_else(|| "(runtime only)".into(), frame_text)
}

fn write_boxing(report: &AllocReport, top: usize, out: &mut impl Write) -> std::io::Result<()> {
    if report.boxing.is_empty() {
        return Ok(());
    }
    writeln!(out, "\n  values boxed into interfaces")?;
    writeln!(
        out,
        "  {:>10}  {:>12}  {:<50}  via",
        "objects", "bytes", "site"
    )?;
    for b in report.boxing.iter().take(top) {
        let what = match &b.type_name {
            Some(t) => format!("{} ({t})", b.via),
            None => b.via.clone(),
        };
        writeln!(
            out,
            "  {:>10}  {:>12}  {:<50}  {what}",
            b.objects,
            b.bytes,
            site_text(&b.site)
        )?;
    }
    Ok(())
}

fn write_goroutines(
    report: &AllocReport,
    meta: &AllocsMeta,
    top: usize,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(out, "\n  goroutines: {} created", report.goroutines_created)?;
    if !meta.probes.iter().any(|(f, _)| f == "runtime.copystack") {
        writeln!(
            out,
            "  (stack growth not measured: the binary has no DWARF, and escapade's table of \
             runtime layouts lacks its Go version, to say where a goroutine keeps its go \
             statement)"
        )?;
    }
    if report.goroutines.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "  {:>10}  {:>9}  {:>8}  {:>9}  {:<50}  runs",
        "created", "starts at", "growths", "max stack", "go statement"
    )?;
    let size = |b: Option<u64>| b.map_or_else(|| "-".into(), bytes_text);
    for g in report.goroutines.iter().take(top) {
        writeln!(
            out,
            "  {:>10}  {:>9}  {:>8}  {:>9}  {:<50}  {}",
            g.count,
            size(g.initial_stack_bytes),
            g.stack_growths,
            size(g.max_stack_bytes),
            site_text(&g.site),
            g.function.as_deref().unwrap_or("?"),
        )?;
    }
    Ok(())
}

/// The GC cycles in the style of `GODEBUG=gctrace=1`, most recent last.
fn write_gc(report: &AllocReport, out: &mut impl Write) -> std::io::Result<()> {
    /// Enough to see the recent rhythm; --json has them all.
    const SHOWN: usize = 10;
    let pauses: Vec<u64> = report.gc.iter().filter_map(|c| c.pause_ns).collect();
    write!(out, "\n  GC: {} cycles", report.gc_cycles)?;
    if let Some(max) = pauses.iter().max() {
        write!(
            out,
            ", stop-the-world pauses {} in all, at most {}",
            duration_text(pauses.iter().sum()),
            duration_text(*max)
        )?;
    }
    writeln!(out)?;
    let skipped = report.gc.len().saturating_sub(SHOWN);
    if skipped > 0 {
        writeln!(out, "  ... {skipped} earlier cycles (--json)")?;
    }
    for c in &report.gc[skipped..] {
        let number = c.number.map_or_else(|| "?".into(), |n| n.to_string());
        let cycle = c
            .start_ns
            .map(|s| format!("  took {}", duration_text(c.end_ns.saturating_sub(s))))
            .unwrap_or_default();
        let pause = c
            .pause_ns
            .map(|p| format!("  paused {}", duration_text(p)))
            .unwrap_or_default();
        let heap = match (
            c.heap_start_bytes,
            c.heap_mark_end_bytes,
            c.heap_marked_bytes,
            c.heap_goal_bytes,
        ) {
            (Some(start), Some(end), Some(marked), Some(goal)) => format!(
                "  heap {} -> {} -> {} live, next goal {}",
                bytes_text(start),
                bytes_text(end),
                bytes_text(marked),
                bytes_text(goal)
            ),
            _ => String::new(),
        };
        writeln!(
            out,
            "  gc {number:<6} ended {}{cycle}{pause}{heap}",
            wall_time(c.end_ns)
        )?;
    }
    Ok(())
}

fn bytes_text(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / 1_048_576.0),
    }
}

/// What the allocs view says about the session besides the counts.
pub struct AllocsMeta<'a> {
    /// None when a recording stops short (escapade was killed).
    pub ended: Option<Ended>,
    pub elapsed: std::time::Duration,
    /// The heap profiler's sampling interval in sampled mode; None in exact mode.
    pub mem_profile_rate: Option<u64>,
    /// Each probed runtime function and where its probe sits.
    pub probes: &'a [(String, String)],
    pub counters: Counters,
}

/// What a recording's CPU samples hold, in a line (or a JSON object): the profile itself is for
/// `export`.
pub fn write_cpu(profile: &CpuProfile, json: bool, mut out: impl Write) -> std::io::Result<()> {
    let (samples, without_stack, stacks) = (
        profile.samples(),
        profile.without_stack,
        profile.stacks.len(),
    );
    if json {
        let line = json!({
            "type": "cpu_summary",
            "hz": profile.hz,
            "samples": samples,
            "without_stack": without_stack,
            "stacks": stacks,
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "cpu: {samples} samples at {} Hz ({without_stack} without a stack) in {stacks} \
             stacks; export them with --pprof or --flamegraph --weight cpu",
            profile.hz
        )?;
    }
    out.flush()
}

/// The `allocs` view: top sites as a table, or the whole report as one JSON object.
pub fn write_allocs(
    report: &AllocReport,
    meta: &AllocsMeta,
    json: bool,
    top: usize,
    mut out: impl Write,
) -> std::io::Result<()> {
    let secs = meta.elapsed.as_secs_f64();
    let lost = meta.counters.allocs_lost;
    if json {
        let line = json!({
            "type": "allocs",
            "mode": if meta.mem_profile_rate.is_some() { "sampled" } else { "exact" },
            "mem_profile_rate": meta.mem_profile_rate,
            "ended": meta.ended,
            "seconds": secs,
            "probes": meta.probes.iter().map(|(f, e)| json!({"function": f, "probe": e})).collect::<Vec<_>>(),
            "lost": lost,
            "report": report,
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "escapade: {} objects, {} bytes allocated in {secs:.1}s ({:.0} objects/s)",
            report.objects,
            report.bytes,
            report.objects as f64 / secs.max(1e-9),
        )?;
        writeln!(
            out,
            "  {:>10}  {:>12}  {:>10}  {:<50}  {}",
            if meta.mem_profile_rate.is_some() {
                "sampled"
            } else {
                "objects"
            },
            "bytes",
            if meta.mem_profile_rate.is_some() {
                "samples/s"
            } else {
                "objects/s"
            },
            "site",
            if meta.mem_profile_rate.is_some() {
                "freed / still live / residency median, p90, max"
            } else {
                "types"
            }
        )?;
        for site in report.sites.iter().take(top) {
            let name = site_text(&site.site);
            let detail = if meta.mem_profile_rate.is_some() {
                let residency = site.residency.map_or_else(
                    || "-".to_string(),
                    |r| {
                        format!(
                            "<{}, <{}, <{}",
                            duration_text(r.median_ns),
                            duration_text(r.p90_ns),
                            duration_text(r.max_ns)
                        )
                    },
                );
                format!(
                    "{} / {} / {residency}",
                    site.freed_objects, site.live_objects
                )
            } else {
                site.types
                    .iter()
                    .take(3)
                    .map(|(t, objects, _)| format!("{} x{objects}", t.as_deref().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            writeln!(
                out,
                "  {:>10}  {:>12}  {:>10.0}  {name:<50}  {detail}",
                site.objects,
                site.bytes,
                site.objects as f64 / secs.max(1e-9)
            )?;
        }
        if report.sites.len() > top {
            writeln!(
                out,
                "  ... {} more sites (--top, --json)",
                report.sites.len() - top
            )?;
        }
        write_boxing(report, top, &mut out)?;
        write_goroutines(report, meta, top, &mut out)?;
        write_gc(report, &mut out)?;
    }
    out.flush()?;
    if lost > 0 {
        eprintln!(
            "escapade: warning: {lost} allocations were not counted: more than {} distinct \
             (stack, type) pairs",
            probe_common::MAX_ALLOC_SITES
        );
    }
    Ok(())
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
        TraceView::new(vec![function], json, true, &mut out)
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
