//! `export --pprof`: a gzipped profile.proto (github.com/google/pprof/proto/profile.proto) that
//! `go tool pprof` opens. Sample types: `calls` and `call_time` per traced function and caller,
//! from the recorded calls; `kernel_calls` and `kernel_call_time` per traced function, every
//! call as the kernel counted and timed it (the default among the calls' types) when the
//! recording holds those counts; `alloc_objects` and `alloc_space` per allocation stack and, in
//! sampled mode where frees are seen, `inuse_objects` and `inuse_space`; with CPU samples,
//! `samples` and `cpu` per sampled stack, the default, with a period as in a Go CPU profile.
//! Each code address is one Location whose Lines are its inlined frames, innermost first, as
//! pprof expects.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use probe_common::CallStats;
use prost::Message as _;

use super::{CallSites, Export, Recorded};
use crate::model::records::{CallRecord, Symbols};
use crate::record::Header;
use crate::tracee::gobin::Frame;

/// The messages of profile.proto that escapade writes.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
    }
}

pub struct Pprof {
    path: PathBuf,
    calls: CallSites,
}

impl Pprof {
    pub fn new(path: &Path, _header: &Header) -> Pprof {
        Pprof {
            path: path.to_path_buf(),
            calls: CallSites::default(),
        }
    }
}

impl Export for Pprof {
    fn call(&mut self, record: &CallRecord, _symbols: &Symbols) -> std::io::Result<()> {
        self.calls.add(record);
        Ok(())
    }

    fn calls_counted(&mut self, calls: &[CallStats]) {
        self.calls.counted = calls.to_vec();
    }

    fn finish(self: Box<Self>, recording: &Recorded) -> anyhow::Result<()> {
        let file = std::fs::File::create(&self.path)
            .with_context(|| format!("creating {} (--pprof)", self.path.display()))?;
        write_gzipped(file, &self.calls, recording, None)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Writes the gzipped profile of `calls` and `recording`'s allocations to `out`;
/// `default_sample_type` overrides the type `go tool pprof` shows first.
pub fn write_gzipped(
    out: impl std::io::Write,
    calls: &CallSites,
    recording: &Recorded,
    default_sample_type: Option<&str>,
) -> std::io::Result<()> {
    let profile = build(calls, recording, default_sample_type);
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish().map(drop)
}

/// Interns strings, functions and locations as profile.proto wants them: by id, string 0 "".
#[derive(Default)]
struct Tables {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<proto::Function>,
    function_ids: HashMap<(String, Option<String>), u64>,
    locations: Vec<proto::Location>,
    /// By code address.
    location_ids: HashMap<u64, u64>,
}

impl Tables {
    fn string(&mut self, s: &str) -> i64 {
        if self.strings.is_empty() {
            self.strings.push(String::new());
            self.string_ids.insert(String::new(), 0);
        }
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), id);
        id
    }

    fn function(&mut self, name: &str, file: Option<&str>) -> u64 {
        let key = (name.to_string(), file.map(str::to_string));
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let name = self.string(name);
        let filename = file.map_or(0, |f| self.string(f));
        self.functions.push(proto::Function {
            id,
            name,
            system_name: name,
            filename,
        });
        self.function_ids.insert(key, id);
        id
    }

    /// The location of code address `pc`, whose frames are `frames`.
    fn location(&mut self, pc: u64, frames: &[Frame]) -> u64 {
        if let Some(&id) = self.location_ids.get(&pc) {
            return id;
        }
        let line = frames
            .iter()
            .map(|f| proto::Line {
                function_id: self.function(&f.function, f.file.as_deref()),
                line: f.line.map_or(0, i64::from),
            })
            .collect();
        let id = self.locations.len() as u64 + 1;
        self.locations.push(proto::Location {
            id,
            mapping_id: 1,
            address: pc,
            line,
        });
        self.location_ids.insert(pc, id);
        id
    }

    /// Locations of a stack of code addresses, innermost first; `fallback` names the frame of
    /// an address the recording has no symbols for.
    fn stack(
        &mut self,
        pcs: &[u64],
        symbols: &Symbols,
        fallback: impl Fn(u64) -> String,
    ) -> Vec<u64> {
        pcs.iter()
            .map(|&pc| match symbols.frames(pc) {
                [] => {
                    let unknown = Frame {
                        function: fallback(pc),
                        file: None,
                        line: None,
                    };
                    self.location(pc, &[unknown])
                }
                frames => self.location(pc, frames),
            })
            .collect()
    }
}

fn build(
    calls: &CallSites,
    recording: &Recorded,
    default_sample_type: Option<&str>,
) -> proto::Profile {
    let header = recording.header;
    let mut t = Tables::default();
    t.string("");
    let allocs = header.allocs.as_ref().and(recording.allocs);
    let sampled_rate = header.allocs.as_ref().and_then(|a| a.mem_profile_rate);
    let mut types: Vec<(&str, &str)> = Vec::new();
    if !header.functions.is_empty() {
        types.extend([("calls", "count"), ("call_time", "nanoseconds")]);
    }
    let counted_first = types.len();
    let counted = !header.functions.is_empty() && !calls.counted.is_empty();
    if counted {
        types.extend([
            ("kernel_calls", "count"),
            ("kernel_call_time", "nanoseconds"),
        ]);
    }
    let allocs_first = types.len();
    if allocs.is_some() {
        types.extend([("alloc_objects", "count"), ("alloc_space", "bytes")]);
        if sampled_rate.is_some() {
            types.extend([("inuse_objects", "count"), ("inuse_space", "bytes")]);
        }
    }
    let cpu = header.cpu_hz.and(recording.cpu);
    let cpu_first = types.len();
    if cpu.is_some() {
        types.extend([("samples", "count"), ("cpu", "nanoseconds")]);
    }
    let sample_type: Vec<proto::ValueType> = types
        .iter()
        .map(|(ty, unit)| proto::ValueType {
            r#type: t.string(ty),
            unit: t.string(unit),
        })
        .collect();
    let width = types.len();
    let mut samples = Vec::new();

    for (&(function, caller_pc), &(count, time_ns)) in &calls.counts {
        let Some(info) = header.functions.get(function) else {
            continue;
        };
        // The traced function at its first instruction, then its caller.
        let mut location_id = t.stack(&[info.entry], recording.symbols, |_| info.name.clone());
        if caller_pc != 0 {
            location_id.extend(t.stack(&[caller_pc], recording.symbols, |pc| format!("{pc:#x}")));
        }
        let mut value = vec![0; width];
        value[0] = count as i64;
        value[1] = time_ns as i64;
        samples.push(proto::Sample {
            location_id,
            value,
            label: Vec::new(),
        });
    }

    // Each function alone, without its callers: the kernel counts calls per function.
    let counted_calls = header.functions.iter().zip(&calls.counted);
    for (info, stats) in counted_calls.filter(|(_, s)| s.entries > 0) {
        let mut value = vec![0; width];
        value[counted_first] = stats.entries as i64;
        value[counted_first + 1] = stats.total_ns as i64;
        samples.push(proto::Sample {
            location_id: t.stack(&[info.entry], recording.symbols, |_| info.name.clone()),
            value,
            label: Vec::new(),
        });
    }

    if let Some(report) = allocs {
        let type_key = t.string("type");
        for stack in &report.stacks {
            let (objects, bytes) = scale(stack.objects, stack.bytes, sampled_rate);
            let mut value = vec![0; width];
            value[allocs_first] = objects;
            value[allocs_first + 1] = bytes;
            if sampled_rate.is_some() {
                let live_bytes = (stack.bytes / stack.objects.max(1)) * stack.live_objects;
                let (objects, bytes) = scale(stack.live_objects, live_bytes, sampled_rate);
                value[allocs_first + 2] = objects;
                value[allocs_first + 3] = bytes;
            }
            let label = stack
                .type_name
                .as_deref()
                .map(|ty| proto::Label {
                    key: type_key,
                    str: t.string(ty),
                })
                .into_iter()
                .collect();
            samples.push(proto::Sample {
                location_id: t.stack(&stack.pcs, recording.symbols, |pc| format!("{pc:#x}")),
                value,
                label,
            });
        }
    }

    if let Some(profile) = cpu {
        for stack in &profile.stacks {
            let mut value = vec![0; width];
            value[cpu_first] = stack.samples as i64;
            value[cpu_first + 1] = (stack.samples * profile.period_ns()) as i64;
            samples.push(proto::Sample {
                location_id: t.stack(&stack.pcs, recording.symbols, |pc| format!("{pc:#x}")),
                value,
                label: Vec::new(),
            });
        }
    }

    // Asked for with --cpu, the CPU profile is what `go tool pprof` shows first.
    let default = match (default_sample_type, cpu, allocs) {
        (Some(ty), _, _) if types.iter().any(|(t, _)| *t == ty) => ty,
        (_, Some(_), _) => "cpu",
        (_, None, Some(_)) => "alloc_space",
        (_, None, None) if counted => "kernel_calls",
        (_, None, None) => "calls",
    };
    let (period_type, period) = match (cpu, allocs, sampled_rate) {
        (Some(profile), _, _) => (("cpu", "nanoseconds"), profile.period_ns() as i64),
        (None, Some(_), Some(rate)) => (("space", "bytes"), rate as i64),
        _ => (types.first().copied().unwrap_or(("calls", "count")), 1),
    };
    let max_pc = t.locations.iter().map(|l| l.address).max().unwrap_or(0);
    let mapping = proto::Mapping {
        id: 1,
        memory_start: 0,
        memory_limit: max_pc.saturating_add(1),
        filename: t.string(&header.binary),
        build_id: t.string(header.build_id.as_deref().unwrap_or("")),
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        has_inline_frames: true,
    };
    let comment = vec![t.string(&format!(
        "escapade {} recording of PID {} ({}, {})",
        header.escapade, header.pid, header.binary, header.go_version
    ))];
    proto::Profile {
        sample_type,
        sample: samples,
        mapping: vec![mapping],
        time_nanos: header.started_ns as i64,
        duration_nanos: recording.elapsed_ns as i64,
        period_type: Some(proto::ValueType {
            r#type: t.string(period_type.0),
            unit: t.string(period_type.1),
        }),
        period,
        comment,
        default_sample_type: t.string(default),
        location: t.locations,
        function: t.functions,
        string_table: t.strings,
    }
}

/// Sampled counts scaled to estimated totals, as `runtime/pprof` does for heap profiles: an
/// object of the average size `s` is sampled with probability `1 - exp(-s / rate)`.
pub fn scale(objects: u64, bytes: u64, rate: Option<u64>) -> (i64, i64) {
    match rate {
        Some(rate) if rate > 1 && objects > 0 && bytes > 0 => {
            let average = bytes as f64 / objects as f64;
            let factor = 1.0 / (1.0 - (-average / rate as f64).exp());
            (
                (objects as f64 * factor) as i64,
                (bytes as f64 * factor) as i64,
            )
        }
        _ => (objects as i64, bytes as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::scale;

    #[test]
    fn sampled_counts_scale_like_runtime_pprof() {
        // One 512 KiB object at the default rate is sampled with probability 1 - 1/e.
        let (objects, bytes) = scale(1, 512 << 10, Some(512 << 10));
        assert_eq!(objects, 1);
        assert_eq!(bytes, ((512 << 10) as f64 / (1.0 - (-1f64).exp())) as i64);
        // Small objects are rarely sampled: each sample stands for many.
        assert_eq!(scale(10, 160, Some(512 << 10)).0, 327_685);
        // Exact counts and a rate of 1 stay as they are.
        assert_eq!(scale(10, 160, None), (10, 160));
        assert_eq!(scale(10, 160, Some(1)), (10, 160));
    }
}
