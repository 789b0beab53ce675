//! The `hot` view: the top call paths by score, as a table, or a JSON line each and a summary.

use std::io::Write;

use serde_json::json;

use super::Output;
use crate::model::hot::HotView;
use crate::session::Ended;

pub fn write(
    view: &HotView,
    ended: Ended,
    top: usize,
    out: &mut Output<impl Write>,
) -> std::io::Result<()> {
    let rows = &view.rows[..view.rows.len().min(top)];
    for row in rows {
        out.json(|| Ok(row))?;
    }
    out.row(
        |out| {
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
                "{} of {} paths; {} samples at {} Hz ({} in no traced function, {} without a \
                 stack), {} traced calls; score = {} CPU + {} PLO",
                rows.len(),
                view.rows.len(),
                view.samples,
                view.hz,
                view.untraced,
                view.without_stack,
                view.calls,
                view.weights.cpu,
                view.weights.plo,
            )
        },
        || {
            Ok(json!({
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
            }))
        },
    )?;
    out.flush()
}
