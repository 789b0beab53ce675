//! Recordings: what a session observed, written to a file that `report` and `export` read
//! later without the target, its binary, or root.
//!
//! The format, version [`FORMAT_VERSION`]:
//!
//! ```text
//! "ESCAPADE" (8 bytes) | format version (u32 LE)
//! frame 0:    length (u32 LE) | CRC-32 of the payload (u32 LE) | Header as JSON
//! frame 1...: length (u32 LE) | CRC-32 of the payload (u32 LE) | LZ4 block (size-prepended)
//!             of a postcard-encoded list of Records
//! ```
//!
//! The header says what was recorded and how (it is JSON so that it can be read by anything);
//! each later frame, a chunk, holds the records of at most about a second and is written whole
//! with one `write`, so a recording cut short by `kill -9` ends at the last whole chunk. Records
//! refer to code by link-time address; a chunk carries the frames of every address it is the
//! first to use, and each file of a rotated recording starts with all of them.
//!
//! Version 4 added [`Record::Calls`], the kernel's counts and latency histograms of the traced
//! functions; a version 3 file reads as before, its summary counted from its call records.

pub mod live;
pub mod reader;
pub mod writer;

use probe_common::CallStats;
use serde::{Deserialize, Serialize};

use crate::cpu::CpuProfile;
use crate::model::allocs::AllocReport;
use crate::model::params::ParamsView;
use crate::model::records::{CallRecord, FunctionInfo, TraceTotals};
use crate::tracee::Target;
use crate::tracee::gobin::{Frame, GoBinary};

pub const MAGIC: &[u8; 8] = b"ESCAPADE";
/// Bumped on any change a reader of the previous version would misread.
pub const FORMAT_VERSION: u32 = 4;
/// The oldest version this escapade reads: later versions only added records.
pub const OLDEST_FORMAT_VERSION: u32 = 3;
/// Frames longer than this are taken for corruption rather than allocated.
pub const MAX_FRAME_BYTES: u32 = 256 << 20;

/// What a recording is of, and how it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    /// The escapade version that wrote the file.
    pub escapade: String,
    pub go_version: String,
    /// The traced binary's Go build ID.
    pub build_id: Option<String>,
    pub binary: String,
    pub pid: u32,
    /// Wall-clock start of the session, in nanoseconds since the Unix epoch.
    pub started_ns: u64,
    /// 0 for the first file; rotation (`--max-size`) numbers the next ones.
    pub part: u32,
    /// The traced functions; call records index this list.
    pub functions: Vec<FunctionInfo>,
    /// Bytes of string arguments copied (`--capture-strings`).
    pub capture_strings: u32,
    pub entries_only: bool,
    /// Entry-probe placement (`--placement`).
    pub placement: String,
    /// Present when allocations were counted (`--allocs`).
    pub allocs: Option<AllocSettings>,
    /// Whether the traced functions' parameters were followed (`--params`).
    pub params: bool,
    /// The file DWARF and the symbol table came from when not the binary itself: `--symbols`,
    /// or a debug file found by GNU build ID.
    pub symbols: Option<String>,
    /// Whether parameters had DWARF to be named and decoded by; without it, calls carry the
    /// argument words Go's traceback prints.
    pub dwarf: bool,
    /// Samples per second on each CPU when the CPU was sampled (`--cpu`).
    #[serde(default)]
    pub cpu_hz: Option<u64>,
}

impl Header {
    /// The header of a session against `target` recording calls of `functions`, started now;
    /// the rest as a session that only counts them sets it.
    pub fn for_target(target: &Target, functions: Vec<FunctionInfo>) -> Header {
        Header::for_binary(
            &target.binary,
            &target.process.exe_target,
            target.process.pid,
            functions,
        )
    }

    /// For `binary`, run from `exe` by process `pid` (0: every process of the file).
    pub fn for_binary(
        binary: &GoBinary,
        exe: &std::path::Path,
        pid: u32,
        functions: Vec<FunctionInfo>,
    ) -> Header {
        Header {
            format: FORMAT_VERSION,
            escapade: env!("CARGO_PKG_VERSION").to_string(),
            go_version: binary.build.go_version.clone(),
            build_id: binary.build.build_id.clone(),
            binary: exe.display().to_string(),
            pid,
            started_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            part: 0,
            functions,
            capture_strings: 0,
            entries_only: false,
            placement: "fast".to_string(),
            allocs: None,
            params: false,
            symbols: binary.symbols.clone(),
            dwarf: binary.has_dwarf(),
            cpu_hz: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocSettings {
    /// The heap profiler's sampling interval in sampled mode; None in exact mode.
    pub mem_profile_rate: Option<u64>,
    /// Each probed runtime function and where its probe sits.
    pub probes: Vec<(String, String)>,
}

/// One entry of a chunk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Record {
    /// Frames at link-time code addresses, innermost first, for the records that follow.
    Symbols(Vec<(u64, Vec<Frame>)>),
    Call(CallRecord),
    /// The allocation view so far: each one replaces the previous one.
    Allocs {
        /// Since the session started.
        elapsed_ns: u64,
        report: AllocReport,
    },
    /// The params view so far (`--params`): each one replaces the previous one.
    Params(ParamsView),
    /// The summary's counts so far, in every chunk; `ended` is set in the last one.
    Totals {
        /// Since the session started.
        elapsed_ns: u64,
        totals: TraceTotals,
    },
    /// The CPU samples so far (`--cpu`): each one replaces the previous one.
    Cpu(CpuProfile),
    /// Each traced function's calls as the probes counted and timed them in the kernel so far,
    /// by the header's function index, including calls whose events were lost: each one
    /// replaces the previous one. Since the session started, in every file of a rotated
    /// recording.
    Calls(#[serde(with = "call_stats")] Vec<CallStats>),
}

/// [`CallStats`] field by field, as probe-common, built for the kernel too, has no serde.
mod call_stats {
    use probe_common::CallStats;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(stats: &[CallStats], out: S) -> Result<S::Ok, S::Error> {
        out.collect_seq(stats.iter().map(|c| {
            let latency: &[u64] = &c.latency;
            (
                c.entries,
                c.returns,
                c.caller_returns,
                c.unobserved,
                c.total_ns,
                latency,
            )
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Vec<CallStats>, D::Error> {
        type Fields = (u64, u64, u64, u64, u64, Vec<u64>);
        Vec::<Fields>::deserialize(input)?
            .into_iter()
            .map(
                |(entries, returns, caller_returns, unobserved, total_ns, latency)| {
                    let latency = latency.try_into().map_err(|l: Vec<u64>| {
                        D::Error::invalid_length(l.len(), &"the latency histogram's buckets")
                    })?;
                    Ok(CallStats {
                        entries,
                        returns,
                        caller_returns,
                        unobserved,
                        total_ns,
                        latency,
                    })
                },
            )
            .collect()
    }
}

/// The last of each view a recording holds.
pub struct Latest<'a> {
    /// The counts, and when (since the start) they were taken.
    pub totals: Option<(u64, TraceTotals)>,
    pub params: Option<&'a ParamsView>,
    pub allocs: Option<&'a AllocReport>,
    pub cpu: Option<&'a CpuProfile>,
    /// The kernel's counts of each traced function's calls; None in a version 3 recording.
    pub calls_counted: Option<&'a [CallStats]>,
}

#[cfg(test)]
mod tests {
    use probe_common::{CallStats, LATENCY_BUCKETS};

    use super::Record;

    /// The kernel's counts as `Record::Calls` encodes them, with `buckets` latency buckets.
    fn encoded(buckets: usize) -> Vec<u8> {
        let calls = vec![(7u64, 6u64, 1u64, 1u64, 900u64, vec![1u64; buckets])];
        postcard::to_allocvec(&vec![(6u32, calls)]).unwrap()
    }

    #[test]
    fn kernel_counts_read_back_and_a_wrong_histogram_does_not() {
        let stats = CallStats {
            entries: 7,
            returns: 6,
            caller_returns: 1,
            unobserved: 1,
            total_ns: 900,
            latency: [1; LATENCY_BUCKETS],
        };
        let written = postcard::to_allocvec(&vec![Record::Calls(vec![stats])]).unwrap();
        assert_eq!(written, encoded(LATENCY_BUCKETS));
        match &postcard::from_bytes::<Vec<Record>>(&written).unwrap()[..] {
            [Record::Calls(read)] => assert_eq!(read, &[stats]),
            other => panic!("read back {other:?}"),
        }
        assert!(postcard::from_bytes::<Vec<Record>>(&encoded(LATENCY_BUCKETS - 1)).is_err());
    }
}
