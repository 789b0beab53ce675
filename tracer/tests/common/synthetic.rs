//! Recordings made without a target, through the same writer `escapade record` uses: for the
//! reader's fuzz tests and the replay benchmark.
// The benchmark uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use escapade::model::decode::{Region, Value};
use escapade::model::records::{CallRecord, FunctionInfo, ParamInfo, Symbols, TraceTotals};
use escapade::record::writer::Writer;
use escapade::record::{FORMAT_VERSION, Header, Record};
use escapade::tracee::gobin::Frame;
use probe_common::CallStats;

/// Link-time address of the calling instruction in every entry.
pub const CALLER_PC: u64 = 0x4a2b17;

pub fn header() -> Header {
    let param = |name: &str, type_name: &str, location: &str| ParamInfo {
        name: name.into(),
        type_name: type_name.into(),
        location: location.into(),
    };
    Header {
        format: FORMAT_VERSION,
        escapade: "test".into(),
        go_version: "go1.26.6".into(),
        build_id: Some("synthetic".into()),
        binary: "/srv/app".into(),
        pid: 4242,
        started_ns: 1_700_000_000_000_000_000,
        part: 0,
        functions: vec![FunctionInfo {
            name: "main.handle".into(),
            entry: 0x4a2540,
            params: vec![param("id", "int", "RAX"), param("p", "*main.T", "RBX")],
            results: vec![param("~r0", "int", "RAX")],
            entry_probe: "fast: stack-check JBE at 0x4a2544".into(),
            fast: true,
            return_probes: 1,
            return_probe: "slow: 1 RETs".into(),
        }],
        capture_strings: 0,
        entries_only: false,
        placement: "fast".into(),
        allocs: None,
        params: false,
        symbols: None,
        dwarf: true,
        cpu_hz: None,
    }
}

/// The entry and the return of call `i`, on one of 8 goroutines.
pub fn call(i: u64) -> [CallRecord; 2] {
    let wall_ns = 1_700_000_000_000_000_000 + i * 1000;
    let goid = 1 + i % 8;
    [
        CallRecord::Entry {
            wall_ns,
            goid,
            tid: 7,
            function: 0,
            args: vec![
                Value::Int { value: i as i64 },
                Value::Pointer {
                    addr: 0xc000010000 + i,
                    region: Region::Heap,
                },
            ],
            words: Vec::new(),
            caller_pc: CALLER_PC,
            return_addr: CALLER_PC + 1,
            sp: 0xc000100000,
        },
        CallRecord::Return {
            wall_ns: wall_ns + 500,
            goid,
            tid: 7,
            function: 0,
            results: vec![Value::Int {
                value: 2 * i as i64,
            }],
            duration_ns: Some(500),
        },
    ]
}

/// The kernel's counts after the first `calls` calls: each took 500 ns.
pub fn counted(calls: u64) -> CallStats {
    let mut stats = CallStats {
        entries: calls,
        returns: calls,
        total_ns: 500 * calls,
        ..CallStats::default()
    };
    stats.latency[8] = calls;
    stats
}

/// Writes `calls` calls, `per_chunk` to a chunk, each chunk with the totals and the kernel's
/// counts so far, to `path` (rotating at `max_size`); returns the files written.
pub fn write(path: &Path, calls: u64, per_chunk: u64, max_size: Option<u64>) -> Vec<PathBuf> {
    write_format(path, calls, per_chunk, max_size, FORMAT_VERSION)
}

/// As [`write`], in format `version`: before version 4, without the kernel's counts.
pub fn write_format(
    path: &Path,
    calls: u64,
    per_chunk: u64,
    max_size: Option<u64>,
    version: u32,
) -> Vec<PathBuf> {
    let header = Header {
        format: version,
        ..header()
    };
    let mut writer = Writer::create(path, header, max_size).unwrap();
    let mut symbols = Symbols::default();
    symbols.insert(
        CALLER_PC,
        vec![Frame {
            function: "main.serve".into(),
            file: Some("/src/app/main.go".into()),
            line: Some(42),
        }],
    );
    for i in 0..calls {
        for record in call(i) {
            writer.push(Record::Call(record));
        }
        if (i + 1) % per_chunk == 0 {
            writer.push(Record::Totals {
                elapsed_ns: i * 1000,
                totals: TraceTotals::default(),
            });
            if version >= 4 {
                writer.push(Record::Calls(vec![counted(i + 1)]));
            }
            writer.write_chunk(&mut symbols).unwrap();
        }
    }
    let files = writer.finish(&mut symbols).unwrap();
    // The preamble's version, after the magic.
    for file in files.iter().filter(|_| version != FORMAT_VERSION) {
        let mut bytes = std::fs::read(file).unwrap();
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        std::fs::write(file, bytes).unwrap();
    }
    files
}
