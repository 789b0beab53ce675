//! The `allocs` view: the top allocation sites, the values boxed into interfaces, goroutines
//! and GC cycles.

use std::io::Write;

use serde_json::json;

use super::Output;
use super::text::{duration_text, site_text, wall_time};
use crate::model::allocs::AllocReport;
use crate::probes::snapshot::Counters;
use crate::session::Ended;

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

/// The `allocs` view: top sites as a table, or the whole report as one JSON object.
pub fn write_allocs(
    report: &AllocReport,
    meta: &AllocsMeta,
    top: usize,
    out: &mut Output<impl Write>,
) -> std::io::Result<()> {
    let secs = meta.elapsed.as_secs_f64();
    let lost = meta.counters.allocs_lost;
    out.row(
        |out| write_table(report, meta, top, out),
        || {
            Ok(json!({
                "type": "allocs",
                "mode": if meta.mem_profile_rate.is_some() { "sampled" } else { "exact" },
                "mem_profile_rate": meta.mem_profile_rate,
                "ended": meta.ended,
                "seconds": secs,
                "probes": meta.probes.iter().map(|(f, e)| json!({"function": f, "probe": e})).collect::<Vec<_>>(),
                "lost": lost,
                "report": report,
            }))
        },
    )?;
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

fn write_table(
    report: &AllocReport,
    meta: &AllocsMeta,
    top: usize,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let secs = meta.elapsed.as_secs_f64();
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
    write_boxing(report, top, out)?;
    write_goroutines(report, meta, top, out)?;
    write_gc(report, out)
}
