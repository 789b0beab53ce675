//! `escapade record`'s side of a session: call records as they come, and at least every second
//! a chunk with the counts so far, the kernel's counts of the traced functions' calls when they
//! changed and, when parameters are followed or allocations counted, the params and allocation
//! views, and the CPU samples.

use std::time::{Duration, Instant};

use probe_common::{CallEvent, CallStats};

use super::Record;
use super::reader::Visitor;
use super::writer::{FLUSH_INTERVAL, Writer};
use crate::cpu::{CpuProfile, Sampler};
use crate::model::allocs::{self, AllocReport};
use crate::model::decode::Decoder;
use crate::model::params::{ParamTracker, ParamsView};
use crate::model::records::{CallModel, Symbols, TraceTotals};
use crate::probes::snapshot::{Counters, KernelCounts};
use crate::session::Ended;
use crate::sink::EventSink;
use crate::tracee::clock::WallClock;
use crate::tracee::gobin::GoBinary;

/// CPU sampling (`record --cpu`) and what symbolizes its stacks.
pub struct CpuSampling<'a> {
    pub sampler: Sampler,
    pub binary: &'a GoBinary,
    /// The target's load bias.
    pub bias: u64,
}

pub struct RecordSink<'a, V: Visitor> {
    /// None when no function is traced.
    model: Option<CallModel<'a>>,
    /// Shown each call as a reader of the file will be: the trace view, counting calls for the
    /// summary `record` prints.
    view: V,
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
    /// When the probes' maps were last read into a chunk.
    last_checkpoint: Option<Instant>,
    clock: WallClock,
    last_allocs: Option<Instant>,
    /// The probes' counters as last read.
    counters: Counters,
    /// The last allocation view written, encoded.
    last_allocs_written: Vec<u8>,
    /// The kernel's counts of the traced functions' calls as last read; None when no function
    /// is traced.
    calls_counted: Option<Vec<CallStats>>,
    /// The part of the recording (`Header::part`) those counts were written to, if they were.
    calls_written_to: Option<u32>,
    /// Building the allocation view reads and symbolizes every stack: when that is slow, it is
    /// done less often than every chunk.
    allocs_every: Duration,
}

impl<'a, V: Visitor> RecordSink<'a, V> {
    pub fn new(
        model: Option<CallModel<'a>>,
        view: V,
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
            last_checkpoint: None,
            clock: WallClock::now(),
            last_allocs: None,
            counters: Counters::default(),
            last_allocs_written: Vec::new(),
            calls_counted: None,
            calls_written_to: None,
            allocs_every: FLUSH_INTERVAL,
        }
    }

    /// The file being written now.
    pub fn writing(&self) -> &std::path::Path {
        self.writer.current()
    }

    /// Writes a chunk: the calls queued, the totals, the kernel's counts of the calls and, when
    /// due or `ended`, the allocations.
    fn checkpoint_now(
        &mut self,
        counts: &KernelCounts,
        ended: Option<Ended>,
        malformed: u64,
    ) -> anyhow::Result<Checkpoint> {
        self.last_checkpoint = Some(Instant::now());
        let allocs_due = self
            .last_allocs
            .is_none_or(|at| at.elapsed() >= self.allocs_every);
        let mut report = None;
        if let Some(decoder) = self.allocs.as_mut()
            && (allocs_due || ended.is_some())
        {
            let began = Instant::now();
            let built = allocs::view(counts, &self.clock, decoder)?;
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
            let profile = cpu.sampler.profile(counts, cpu.binary, cpu.bias)?;
            // An idle target's profile does not change: the previous one stands for it.
            if self.last_cpu_written.as_ref() != Some(&profile) {
                for pc in profile.stacks.iter().flat_map(|s| &s.pcs) {
                    self.symbols.learn(cpu.binary, *pc);
                }
                self.writer.push(Record::Cpu(profile.clone()));
                self.last_cpu_written = Some(profile);
            }
        }
        let functions = self.writer.header().functions.len();
        if functions > 0 {
            let now = counts.call_stats(functions)?;
            if self.calls_counted.as_ref() != Some(&now) {
                self.calls_counted = Some(now);
                self.calls_written_to = None;
            }
        }
        self.counters = counts.counters();
        let totals = self.write_chunk(ended, malformed)?;
        Ok(Checkpoint {
            totals,
            params,
            allocs: report,
            cpu: self.last_cpu_written.clone(),
            calls_counted: self.calls_counted.clone(),
        })
    }

    /// Writes what is queued as a chunk, ending with the totals so far (the probes' counters as
    /// last read) and the kernel's counts of the calls as last read, unless the file has those
    /// already (an idle target's do not change); returns the totals and when they were taken.
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
        // Every file of a rotated recording has them, since the start.
        let part = self.writer.next_part();
        if let Some(calls) = &self.calls_counted
            && self.calls_written_to != Some(part)
        {
            self.writer.push(Record::Calls(calls.clone()));
            self.calls_written_to = Some(part);
        }
        self.writer.write_chunk(&mut self.symbols)?;
        Ok((elapsed_ns, totals))
    }

    /// Writes the last chunk, with how the session ended; returns the final allocation view.
    pub fn finish(
        mut self,
        counts: &KernelCounts,
        ended: Ended,
        malformed: u64,
    ) -> anyhow::Result<Finished<V>> {
        let last = self.checkpoint_now(counts, Some(ended), malformed)?;
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
    /// The kernel's counts of each traced function's calls.
    pub calls_counted: Option<Vec<CallStats>>,
}

/// What a finished recording holds, for the summary `record` prints.
pub struct Finished<V> {
    pub files: Vec<std::path::PathBuf>,
    pub view: V,
    pub last: Checkpoint,
}

impl<V: Visitor> EventSink for RecordSink<'_, V> {
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

    fn checkpoint(&mut self, counts: &KernelCounts) -> anyhow::Result<()> {
        // Under load, the calls write chunks without the maps, often enough that the writer
        // is never due here: the maps are read at the start and at least every second anyway,
        // so that every file has the kernel's counts, and a recording cut short has them up
        // to its last second.
        let maps_due = self
            .last_checkpoint
            .is_none_or(|at| at.elapsed() >= FLUSH_INTERVAL);
        if self.writer.due() || maps_due {
            self.checkpoint_now(counts, None, 0)?;
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
