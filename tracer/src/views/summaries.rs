//! What ends `record` and `report`: a recording's summaries, the same views as live.

use std::io::Write;

use super::Output;
use super::allocs::{AllocsMeta, write_allocs};
use super::cpu::write_cpu;
use super::params::{ParamsMeta, write_params};
use super::trace::TraceView;
use crate::record::{Header, Latest};

/// The summaries that end a recording, the same views as live: the trace summary when
/// functions were traced (its calls as the kernel counted them, when the recording holds
/// those), the params table when parameters were followed, then the allocation table when
/// allocations were counted, and a line about the CPU samples when they were taken. `record`
/// prints them from what it wrote, `report` from what it read.
pub fn write_summaries<W: Write>(
    view: TraceView<W>,
    header: &Header,
    latest: Latest,
    top: usize,
    mut out: Output<impl Write>,
) -> std::io::Result<()> {
    let Latest {
        totals,
        params,
        allocs,
        cpu,
        calls_counted,
    } = latest;
    let (elapsed_ns, totals) = totals.unwrap_or_default();
    if !header.functions.is_empty() {
        view.summary(&totals, calls_counted, None)?;
        if let Some(note) = crate::hints::without_dwarf(header.dwarf) {
            out.text(|out| writeln!(out, "  {note}"))?;
        }
    }
    if let Some(params) = params {
        let meta = ParamsMeta {
            ended: totals.ended,
            counters: totals.counters,
            malformed: totals.malformed,
        };
        let colour = false;
        write_params(params, &meta, colour, &mut out)?;
    }
    if let (Some(settings), Some(report)) = (&header.allocs, allocs) {
        write_allocs(
            report,
            &AllocsMeta {
                ended: totals.ended,
                elapsed: std::time::Duration::from_nanos(elapsed_ns),
                mem_profile_rate: settings.mem_profile_rate,
                probes: &settings.probes,
                counters: totals.counters,
            },
            top,
            &mut out,
        )?;
    }
    if let Some(cpu) = cpu.filter(|_| header.cpu_hz.is_some()) {
        write_cpu(cpu, &mut out)?;
    }
    Ok(())
}
