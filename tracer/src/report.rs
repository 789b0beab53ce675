//! The `trace` view: one line per entry and return, as text or JSON lines, then a summary.

mod params;

pub use params::{ParamsMeta, write_params};

use std::fmt::Write as _;
use std::io::Write;

use probe_common::{
    COUNTER_ALLOCS_LOST, COUNTER_DROPPED, COUNTER_EVENTS, COUNTER_MORESTACK, COUNTER_READ_ERRORS,
    COUNTERS, CallEvent, EventKind,
};
use serde::Serialize;
use serde_json::json;

use crate::allocs::AllocReport;
use crate::attach::ProbePoint;
use crate::calls::{Calls, Entered, Hit, Left};
use crate::clock::WallClock;
use crate::decode::{Arg, Decoder, Value};
use crate::gobin::Frame;
use crate::session::{Ended, EventSink, Plan, RuntimeProbe, Traced};

#[derive(Clone, Copy, Debug, Default, Serialize)]
struct FunctionStats {
    entries: u64,
    returns: u64,
    paired: u64,
    total_ns: u64,
}

pub struct TracePrinter<'a, W: Write> {
    decoder: Decoder<'a>,
    traced: &'a [Traced],
    points: &'a [ProbePoint],
    calls: Calls,
    stats: Vec<FunctionStats>,
    unknown_probe: u64,
    json: bool,
    /// Count calls but print only the summary.
    quiet: bool,
    out: W,
    clock: WallClock,
}

impl<'a, W: Write> TracePrinter<'a, W> {
    pub fn new(decoder: Decoder<'a>, plan: &'a Plan, json: bool, quiet: bool, out: W) -> Self {
        TracePrinter {
            decoder,
            traced: &plan.traced,
            points: &plan.points,
            calls: Calls::default(),
            stats: vec![FunctionStats::default(); plan.traced.len()],
            unknown_probe: 0,
            json,
            quiet,
            out,
            clock: WallClock::now(),
        }
    }

    fn write_event(&mut self, e: &CallEvent) -> std::io::Result<()> {
        let Some(point) = self.points.get(e.probe_id as usize) else {
            self.unknown_probe += 1;
            return Ok(());
        };
        let index = point.function;
        let traced = &self.traced[index];
        let hit = Hit::of(e, index);
        let wall_ns = self.clock.wall_ns(e.ktime_ns);
        let Some(kind) = EventKind::from_u32(e.kind) else {
            self.unknown_probe += 1;
            return Ok(());
        };
        let sig = traced.function.signature.as_ref();
        match kind {
            // Only `params` probes the allocator.
            EventKind::Allocating | EventKind::Allocated => {
                self.unknown_probe += 1;
                Ok(())
            }
            EventKind::Entry => {
                // Without return probes there is nothing to pair, nor a return to tell a
                // repeated hit from a new call.
                if traced.returns > 0 && self.calls.enter(hit) == Entered::Repeat {
                    return Ok(());
                }
                self.stats[index].entries += 1;
                if self.quiet {
                    return Ok(());
                }
                let args = sig
                    .map(|s| self.decoder.args(e, &s.params, &traced.captures))
                    .unwrap_or_default();
                let caller = self.decoder.binary.symbolize(
                    e.return_addr
                        .wrapping_sub(self.decoder.bias)
                        .wrapping_sub(1),
                );
                if self.json {
                    let line = json!({
                        "type": "entry",
                        "time_ns": wall_ns,
                        "goid": e.goid,
                        "tid": e.tid,
                        "function": traced.function.name,
                        "args": args,
                        "caller": caller,
                        "return_addr": format!("{:#x}", e.return_addr),
                        "sp": format!("{:#x}", e.sp),
                    });
                    writeln!(self.out, "{line}")
                } else {
                    let caller = caller
                        .map(|f| format!(" from {}", frame_text(&f)))
                        .unwrap_or_default();
                    writeln!(
                        self.out,
                        "{} g{:<5} -> {}({}){caller}",
                        wall_time(wall_ns),
                        e.goid,
                        traced.function.name,
                        args_text(&args),
                    )
                }
            }
            EventKind::Return => {
                let duration_ns = match self.calls.leave(hit) {
                    Left::Repeat => return Ok(()),
                    Left::Unmatched => None,
                    Left::Paired(open) => {
                        let d = e.ktime_ns.saturating_sub(open.ktime_ns);
                        self.stats[index].paired += 1;
                        self.stats[index].total_ns += d;
                        Some(d)
                    }
                };
                self.stats[index].returns += 1;
                if self.quiet {
                    return Ok(());
                }
                let results = sig
                    .map(|s| self.decoder.args(e, &s.results, &Default::default()))
                    .unwrap_or_default();
                if self.json {
                    let line = json!({
                        "type": "return",
                        "time_ns": wall_ns,
                        "goid": e.goid,
                        "tid": e.tid,
                        "function": traced.function.name,
                        "results": results,
                        "duration_ns": duration_ns,
                    });
                    writeln!(self.out, "{line}")
                } else {
                    let took = duration_ns
                        .map(|d| format!(" in {}", duration_text(d)))
                        .unwrap_or_default();
                    writeln!(
                        self.out,
                        "{} g{:<5} <- {}{took} = ({})",
                        wall_time(wall_ns),
                        e.goid,
                        traced.function.name,
                        args_text(&results),
                    )
                }
            }
        }
    }

    /// The end-of-run summary: calls per function, where each probe sits, events and losses.
    pub fn summary(
        mut self,
        ended: Ended,
        counters: [u64; COUNTERS as usize],
        malformed: u64,
    ) -> std::io::Result<()> {
        let dropped = counters[COUNTER_DROPPED as usize];
        if self.json {
            let functions: Vec<_> = self
                .traced
                .iter()
                .zip(&self.stats)
                .map(|(t, s)| {
                    json!({
                        "function": t.function.name,
                        "entries": s.entries,
                        "returns": s.returns,
                        "paired": s.paired,
                        "total_ns": s.total_ns,
                        "entry_probe": t.entry.to_string(),
                        "fast": t.entry.is_fast(),
                        "return_probes": t.returns,
                    })
                })
                .collect();
            let line = json!({
                "type": "summary",
                "ended": ended,
                "functions": functions,
                "events": counters[COUNTER_EVENTS as usize],
                "dropped": dropped,
                "morestack_retries": counters[COUNTER_MORESTACK as usize],
                "read_errors": counters[COUNTER_READ_ERRORS as usize],
                "malformed": malformed + self.unknown_probe,
                "unmatched_returns": self.calls.unmatched_returns,
                "unwound": self.calls.unwound,
                "repeated_hits": self.calls.repeats,
                "in_flight": self.calls.in_flight(),
            });
            writeln!(self.out, "{line}")?;
        } else {
            writeln!(self.out, "\nescapade: detached ({})", ended_text(ended))?;
            let width = self
                .traced
                .iter()
                .map(|t| t.function.name.len())
                .max()
                .unwrap_or(8)
                .max(8);
            writeln!(
                self.out,
                "  {:width$}  {:>9}  {:>9}  {:>10}  entry probe",
                "function", "calls", "returns", "mean"
            )?;
            for (t, s) in self.traced.iter().zip(&self.stats) {
                let mean = s
                    .total_ns
                    .checked_div(s.paired)
                    .map_or_else(|| "-".into(), duration_text);
                writeln!(
                    self.out,
                    "  {:width$}  {:>9}  {:>9}  {:>10}  {}",
                    t.function.name, s.entries, s.returns, mean, t.entry
                )?;
            }
            writeln!(
                self.out,
                "  events {}, dropped {dropped}, stack-growth retries {}, read errors {}, \
                 returns without entry {}, unwound {}, repeated hits {}, still running {}",
                counters[COUNTER_EVENTS as usize],
                counters[COUNTER_MORESTACK as usize],
                counters[COUNTER_READ_ERRORS as usize],
                self.calls.unmatched_returns,
                self.calls.unwound,
                self.calls.repeats,
                self.calls.in_flight(),
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

impl<W: Write> EventSink for TracePrinter<'_, W> {
    fn event(&mut self, event: &CallEvent) -> anyhow::Result<()> {
        Ok(self.write_event(event)?)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(self.out.flush()?)
    }
}

fn ended_text(ended: Ended) -> &'static str {
    match ended {
        Ended::Interrupted => "interrupted",
        Ended::Deadline => "duration reached",
        Ended::TargetExited => "target exited",
    }
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

fn args_text(args: &[Arg]) -> String {
    let mut s = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(
            s,
            "{} {} [{}] = {}",
            a.name,
            a.type_name,
            a.location,
            value_text(&a.value)
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
    }
}

fn site_text(site: &Option<Frame>) -> String {
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
            "  (stack growth not measured: the binary has no DWARF to say where a goroutine \
             keeps its go statement)"
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
    pub ended: Ended,
    pub elapsed: std::time::Duration,
    /// The heap profiler's sampling interval in sampled mode; None in exact mode.
    pub mem_profile_rate: Option<u64>,
    /// Where each runtime function's probe sits.
    pub probes: &'a [(String, RuntimeProbe)],
    pub counters: [u64; COUNTERS as usize],
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
    let lost = meta.counters[COUNTER_ALLOCS_LOST as usize];
    if json {
        let line = json!({
            "type": "allocs",
            "mode": if meta.mem_profile_rate.is_some() { "sampled" } else { "exact" },
            "mem_profile_rate": meta.mem_profile_rate,
            "ended": meta.ended,
            "seconds": secs,
            "probes": meta.probes.iter().map(|(f, e)| json!({"function": f, "probe": e.to_string()})).collect::<Vec<_>>(),
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
