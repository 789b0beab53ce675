//! Recordings converted for other tools. Each format is an [`Export`] fed by one replay of the
//! file, so asking for several reads it once.

pub mod flamegraph;
pub mod perfetto;
pub mod pprof;

use std::path::PathBuf;

use probe_common::CallStats;

use crate::cpu::CpuProfile;
use crate::model::allocs::AllocReport;
use crate::model::records::{CallRecord, Symbols};
use crate::record::Header;
use crate::record::reader::{Replay, Visitor};

pub use flamegraph::Weight;

/// One output format.
pub trait Export {
    fn call(&mut self, record: &CallRecord, symbols: &Symbols) -> std::io::Result<()>;
    /// An allocation view, `elapsed_ns` after the session started; most exports need only the
    /// last one, which [`Recorded`] holds.
    fn allocs(&mut self, _elapsed_ns: u64, _report: &AllocReport) -> std::io::Result<()> {
        Ok(())
    }
    /// The kernel's counts of each traced function's calls, when the recording holds them: the
    /// last ones, given before [`Export::finish`].
    fn calls_counted(&mut self, _calls: &[CallStats]) {}
    /// Writes the output once the recording was read.
    fn finish(self: Box<Self>, recording: &Recorded) -> anyhow::Result<()>;
}

/// What a replay left, for the exports to finish with.
pub struct Recorded<'a> {
    pub header: &'a Header,
    pub symbols: &'a Symbols,
    /// The last allocation view.
    pub allocs: Option<&'a AllocReport>,
    /// The CPU samples (`record --cpu`).
    pub cpu: Option<&'a CpuProfile>,
    /// Nanoseconds the recording covers.
    pub elapsed_ns: u64,
}

/// Which outputs to write.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub pprof: Option<PathBuf>,
    pub perfetto: Option<PathBuf>,
    pub flamegraph: Option<(PathBuf, Option<Weight>)>,
}

/// The requested exports, fed together.
pub struct Exports {
    outputs: Vec<Box<dyn Export>>,
}

impl Exports {
    pub fn new(header: &Header, request: &Request) -> anyhow::Result<Exports> {
        let mut outputs: Vec<Box<dyn Export>> = Vec::new();
        if let Some(path) = &request.pprof {
            outputs.push(Box::new(pprof::Pprof::new(path, header)));
        }
        if let Some(path) = &request.perfetto {
            outputs.push(Box::new(perfetto::Perfetto::create(path, header)?));
        }
        if let Some((path, weight)) = &request.flamegraph {
            outputs.push(Box::new(flamegraph::FlameGraph::new(
                path, header, *weight,
            )?));
        }
        Ok(Exports { outputs })
    }

    pub fn finish<R>(mut self, replay: &Replay<R>) -> anyhow::Result<()> {
        if let Some(calls) = &replay.calls_counted {
            for output in &mut self.outputs {
                output.calls_counted(calls);
            }
        }
        let recorded = Recorded {
            header: &replay.reader.header,
            symbols: &replay.symbols,
            allocs: replay.allocs.as_ref(),
            cpu: replay.cpu.as_ref(),
            elapsed_ns: replay.totals.map_or(0, |(ns, _)| ns),
        };
        for output in self.outputs {
            output.finish(&recorded)?;
        }
        Ok(())
    }
}

impl Visitor for Exports {
    fn call(&mut self, record: &CallRecord, symbols: &Symbols) -> std::io::Result<()> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.call(record, symbols))
    }

    fn allocs(
        &mut self,
        elapsed_ns: u64,
        report: &AllocReport,
        _symbols: &Symbols,
    ) -> std::io::Result<()> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.allocs(elapsed_ns, report))
    }
}

/// Calls per (traced function, calling address), with the time of those that returned: the
/// call graph the pprof and flame-graph exports draw. And, when known, each function's calls as
/// the kernel counted and timed them, every one, whose events may have been lost.
#[derive(Debug, Default)]
pub struct CallSites {
    /// (function index, caller pc) -> (calls, nanoseconds in returned calls)
    pub counts: std::collections::BTreeMap<(usize, u64), (u64, u64)>,
    /// By function index; empty when not known.
    pub counted: Vec<CallStats>,
    /// Per goroutine, the entries not returned yet: (function, caller pc).
    open: std::collections::HashMap<u64, Vec<(usize, u64)>>,
}

impl CallSites {
    pub fn add(&mut self, record: &CallRecord) {
        match record {
            CallRecord::Entry {
                goid, caller_pc, ..
            } => {
                let function = record.function();
                self.counts.entry((function, *caller_pc)).or_default().0 += 1;
                self.open
                    .entry(*goid)
                    .or_default()
                    .push((function, *caller_pc));
            }
            CallRecord::Return {
                goid, duration_ns, ..
            } => {
                let function = record.function();
                let Some(open) = self.open.get_mut(goid) else {
                    return;
                };
                // The innermost open call of this function; deeper ones were unwound.
                let Some(at) = open.iter().rposition(|(f, _)| *f == function) else {
                    return;
                };
                let caller = open[at].1;
                open.truncate(at);
                if let (Some(d), Some(counts)) =
                    (duration_ns, self.counts.get_mut(&(function, caller)))
                {
                    counts.1 += d;
                }
            }
        }
    }
}
