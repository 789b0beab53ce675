//! `escapade record`'s side of a session: call records as they come, and at least every second
//! a chunk with the counts so far and, when parameters are followed or allocations counted, the
//! params and allocation views, and the CPU samples.

use std::io::Write;
use std::time::{Duration, Instant};

use probe_common::{COUNTERS, CallEvent};

use super::Record;
use super::writer::{FLUSH_INTERVAL, Writer};
use crate::allocs::{self, AllocReport};
use crate::attach::Attached;
use crate::clock::WallClock;
use crate::cpu::{CpuProfile, Sampler};
use crate::decode::Decoder;
use crate::gobin::GoBinary;
use crate::model::{CallModel, Symbols, TraceTotals};
use crate::params::{ParamTracker, ParamsView};
use crate::report::TraceView;
use crate::session::{Ended, EventSink};

/// CPU sampling (`record --cpu`) and what symbolizes its stacks.
pub struct CpuSampling<'a> {
    pub sampler: Sampler,
    pub binary: &'a GoBinary,
    /// The target's load bias.
    pub bias: u64,
}

pub struct RecordSink<'a, W: Write> {
    /// None when no function is traced.
    model: Option<CallModel<'a>>,
    /// Counts calls for the summary `record` prints.
    view: TraceView<W>,
    symbols: Symbols,
    writer: Writer,
    /// Symbolizes allocation stacks, when allocations are counted.
    allocs: Option<Decoder<'a>>,
    /// Follows parameters, with `--params`.
    params: Option<ParamTracker<'a, std::io::Sink>>,
    cpu: Option<CpuSampling<'a>>,
    /// The last CPU profile written.
    last_cpu_written: Option<CpuProfile>,
    /// The last params view written, encoded.
    last_params_written: Vec<u8>,
    started: Instant,
    clock: WallClock,
    last_allocs: Option<Instant>,
    /// The probes' counters as last read, by `probe_common::COUNTER_*`.
    counters: [u64; COUNTERS as usize],
    /// The last allocation view written, encoded.
    last_allocs_written: Vec<u8>,
    /// Building the allocation view reads and symbolizes every stack: when that is slow, it is
    /// done less often than every chunk.
    allocs_every: Duration,
}

impl<'a, W: Write> RecordSink<'a, W> {
    pub fn new(
        model: Option<CallModel<'a>>,
        view: TraceView<W>,
        writer: Writer,
        allocs: Option<Decoder<'a>>,
        params: Option<ParamTracker<'a, std::io::Sink>>,
        cpu: Option<CpuSampling<'a>>,
        symbols: Symbols,
    ) -> Self {
        RecordSink {
            model,
            params,
            cpu,
            last_cpu_written: None,
            last_params_written: Vec::new(),
            view,
            symbols,
            writer,
            allocs,
            started: Instant::now(),
            clock: WallClock::now(),
            last_allocs: None,
            counters: [0; COUNTERS as usize],
            last_allocs_written: Vec::new(),
            allocs_every: FLUSH_INTERVAL,
        }
    }

    /// The file being written now.
    pub fn writing(&self) -> &std::path::Path {
        self.writer.current()
    }

    /// Writes a chunk: the calls queued, the totals and, when due or `ended`, the allocations.
    fn checkpoint_now(
        &mut self,
        attached: &Attached,
        ended: Option<Ended>,
        malformed: u64,
    ) -> anyhow::Result<Checkpoint> {
        let allocs_due = self
            .last_allocs
            .is_none_or(|at| at.elapsed() >= self.allocs_every);
        let mut report = None;
        if let Some(decoder) = self.allocs.as_mut()
            && (allocs_due || ended.is_some())
        {
            let began = Instant::now();
            let built = allocs::view(attached, &self.clock, decoder)?;
            for pc in built.stacks.iter().flat_map(|s| &s.pcs) {
                self.symbols.learn(decoder.binary, *pc);
            }
            self.allocs_every = FLUSH_INTERVAL.max(began.elapsed() * 10);
            self.last_allocs = Some(Instant::now());
            // An idle target's view does not change: the previous one stands for it.
            let encoded = postcard::to_allocvec(&built)?;
            if encoded != self.last_allocs_written {
                self.last_allocs_written = encoded;
                self.writer.push(Record::Allocs {
                    elapsed_ns: self.started.elapsed().as_nanos() as u64,
                    report: built.clone(),
                });
            }
            report = Some(built);
        }
        let params = self.params.as_ref().map(ParamTracker::view);
        if let Some(view) = &params {
            let encoded = postcard::to_allocvec(view)?;
            if encoded != self.last_params_written {
                self.last_params_written = encoded;
                self.writer.push(Record::Params(view.clone()));
            }
        }
        if let Some(cpu) = &self.cpu {
            let profile = cpu.sampler.profile(attached, cpu.binary, cpu.bias)?;
            // An idle target's profile does not change: the previous one stands for it.
            if self.last_cpu_written.as_ref() != Some(&profile) {
                for pc in profile.stacks.iter().flat_map(|s| &s.pcs) {
                    self.symbols.learn(cpu.binary, *pc);
                }
                self.writer.push(Record::Cpu(profile.clone()));
                self.last_cpu_written = Some(profile);
            }
        }
        self.counters = attached.counters();
        let totals = self.write_chunk(ended, malformed)?;
        Ok(Checkpoint {
            totals,
            params,
            allocs: report,
            cpu: self.last_cpu_written.clone(),
        })
    }

    /// Writes what is queued as a chunk, ending with the totals so far (the probes' counters as
    /// last read); returns those totals and when they were taken.
    fn write_chunk(
        &mut self,
        ended: Option<Ended>,
        malformed: u64,
    ) -> anyhow::Result<(u64, TraceTotals)> {
        let elapsed_ns = self.started.elapsed().as_nanos() as u64;
        let totals = TraceTotals {
            ended,
            counters: self.counters,
            malformed,
            pairing: self
                .model
                .as_ref()
                .map(CallModel::pairing)
                .unwrap_or_default(),
        };
        self.writer.push(Record::Totals { elapsed_ns, totals });
        self.writer.write_chunk(&mut self.symbols)?;
        Ok((elapsed_ns, totals))
    }

    /// Writes the last chunk, with how the session ended; returns the final allocation view.
    pub fn finish(
        mut self,
        attached: &Attached,
        ended: Ended,
        malformed: u64,
    ) -> anyhow::Result<Finished<W>> {
        let last = self.checkpoint_now(attached, Some(ended), malformed)?;
        Ok(Finished {
            files: self.writer.finish(&mut self.symbols)?,
            view: self.view,
            last,
        })
    }
}

/// What one chunk's totals and allocation view were.
pub struct Checkpoint {
    /// Nanoseconds since the start, and the counts.
    pub totals: (u64, TraceTotals),
    pub params: Option<ParamsView>,
    pub allocs: Option<AllocReport>,
    pub cpu: Option<CpuProfile>,
}

/// What a finished recording holds, for the summary `record` prints.
pub struct Finished<W: Write> {
    pub files: Vec<std::path::PathBuf>,
    pub view: TraceView<W>,
    pub last: Checkpoint,
}

impl<W: Write> EventSink for RecordSink<'_, W> {
    fn event(&mut self, event: &CallEvent) -> anyhow::Result<()> {
        if let Some(params) = self.params.as_mut() {
            params.event(event)?;
        }
        if let Some(model) = self.model.as_mut()
            && let Some(record) = model.record(event, &mut self.symbols)
        {
            self.view.call(&record, &self.symbols)?;
            self.writer.push(Record::Call(record));
            // Under sustained load one drain of the ring buffer can outlast a second, and the
            // calls must still reach the file, without the maps the checkpoint reads.
            if self.writer.due() {
                self.write_chunk(None, 0)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    fn checkpoint(&mut self, attached: &Attached) -> anyhow::Result<()> {
        if self.writer.due() {
            self.checkpoint_now(attached, None, 0)?;
        }
        Ok(())
    }

    fn status(&self) -> Option<String> {
        let mb = self.writer.written() as f64 / 1e6;
        Some(format!(
            "{mb:.1} MB written to {}",
            self.writer.current().display()
        ))
    }
}
