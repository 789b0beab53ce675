//! The `params` view: an aligned table with coloured verdicts on a terminal, or JSON lines.

use std::io::Write;

use anstyle::{AnsiColor, Style};
use serde_json::json;

use super::Output;
use super::text::ended_text;
use crate::model::params::{FunctionHeap, ParamsView, Verdict};
use crate::probes::snapshot::Counters;
use crate::session::Ended;

/// What the params view says about the session besides what the tracker saw.
pub struct ParamsMeta {
    pub ended: Option<Ended>,
    pub counters: Counters,
    pub malformed: u64,
}

pub fn write_params<W: Write>(
    view: &ParamsView,
    meta: &ParamsMeta,
    colour: bool,
    out: &mut Output<W>,
) -> std::io::Result<()> {
    for row in &view.rows {
        out.json(|| {
            let mut line = serde_json::to_value(row)?;
            line["type"] = "param".into();
            Ok(line)
        })?;
    }
    out.row(
        |out| write_table(view, meta, colour, out),
        || {
            Ok(json!({
                // Not "summary": `record --params` prints this after the trace summary.
                "type": "params_summary",
                "ended": meta.ended,
                "functions": view.heap,
                "allocator_probes": view.allocator_probes.iter().map(|(f, e)| json!({"function": f, "probe": e})).collect::<Vec<_>>(),
                "events": meta.counters.events,
                "dropped": meta.counters.dropped,
                "morestack_retries": meta.counters.morestack,
                "read_errors": meta.counters.read_errors,
                "malformed": meta.malformed,
                "in_flight": view.in_flight,
                "unmatched_returns": view.unmatched_returns,
                "unverified_moves": view.unverified_moves,
            }))
        },
    )?;
    out.flush()?;
    super::warn_lost_events(meta.counters.dropped, "the counts above miss them: ");
    Ok(())
}

fn write_table(
    view: &ParamsView,
    meta: &ParamsMeta,
    colour: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let rows = &view.rows;
    let width = |f: fn(&crate::model::params::ParamRow) -> usize, header: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(header.len())
    };
    let wf = width(|r| r.function.len(), "function");
    let wp = width(|r| r.param.len(), "param");
    let wt = width(|r| r.go_type.len(), "type");
    let wl = width(|r| r.location.len(), "arrives");
    writeln!(
        out,
        "{:wf$}  {:wp$}  {:wt$}  {:wl$}  {:>6}  {:>18}  {:>12}  verdict",
        "function", "param", "type", "arrives", "calls", "nil/stack/heap/glb", "moved/call"
    )?;
    for r in rows {
        let pointee = r.pointee.map_or_else(
            || "-".to_string(),
            |p| format!("{}/{}/{}/{}", p.nil, p.stack, p.heap, p.global),
        );
        let moved = match r.moved_to_heap.calls {
            0 if r.static_moved_to_heap => "code only".to_string(),
            0 => "-".to_string(),
            calls => format!(
                "{:.1} obj {}B",
                r.moved_to_heap.objects as f64 / calls as f64,
                r.moved_to_heap.bytes / calls
            ),
        };
        let style = if colour {
            verdict_style(r.verdict)
        } else {
            Style::new()
        };
        writeln!(
            out,
            "{:wf$}  {:wp$}  {:wt$}  {:wl$}  {:>6}  {pointee:>18}  {moved:>12}  {style}{}{style:#}",
            r.function,
            r.param,
            r.go_type,
            r.location,
            r.calls,
            r.verdict.text()
        )?;
    }
    let allocating: Vec<&FunctionHeap> = view.heap.iter().filter(|f| f.objects > 0).collect();
    if !view.allocator_probes.is_empty() && allocating.is_empty() {
        writeln!(out, "\nno heap allocations inside the traced functions")?;
    } else if !view.allocator_probes.is_empty() {
        writeln!(
            out,
            "\nheap allocated per call, inside each function and its callees:"
        )?;
        for f in allocating {
            writeln!(
                out,
                "  {:wf$}  {:>6} calls  {:>8.2} objects  {:>10.0} bytes  ({:.2} objects by its own code)",
                f.function,
                f.calls,
                f.objects as f64 / f.calls as f64,
                f.bytes as f64 / f.calls as f64,
                f.own_objects as f64 / f.calls as f64,
            )?;
        }
    }
    let ended = meta.ended.map_or("recording cut short", ended_text);
    writeln!(
        out,
        "\nescapade: detached ({ended}): events {}, dropped {}, calls still running {}, returns \
         without entry {}, new objects not holding an argument {}",
        meta.counters.events,
        meta.counters.dropped,
        view.in_flight,
        view.unmatched_returns,
        view.unverified_moves,
    )
}

/// Heap-bound verdicts stand out; the ones that cost nothing recede.
fn verdict_style(v: Verdict) -> Style {
    let colour = match v {
        Verdict::MovedToHeap => AnsiColor::Red,
        Verdict::PointeeHeap => AnsiColor::Yellow,
        Verdict::PointeeStack | Verdict::Registers | Verdict::Stack => AnsiColor::Green,
        Verdict::PointeeGlobal | Verdict::Nil => AnsiColor::Cyan,
        Verdict::Unknown | Verdict::NotCalled => AnsiColor::BrightBlack,
    };
    colour.on_default()
}
