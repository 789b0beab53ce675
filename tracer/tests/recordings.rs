//! The recording format without a target: what is written reads back, rotation makes
//! self-contained files, the previous format version still reads, and no damage to a file makes
//! the reader panic (a bounded fuzz, run with every `cargo test`).

mod common;

use std::path::{Path, PathBuf};

use escapade::model::allocs::AllocReport;
use escapade::model::records::{CallRecord, Symbols};
use escapade::record::FORMAT_VERSION;
use escapade::record::reader::{Replay, Visitor};
use proptest::prelude::*;
use serde_json::Value;

use common::synthetic;

#[derive(Default)]
struct Collect {
    calls: Vec<CallRecord>,
    /// Whether each entry's caller resolved through the file's symbols.
    callers_known: bool,
}

impl Visitor for Collect {
    fn call(&mut self, record: &CallRecord, symbols: &Symbols) -> std::io::Result<()> {
        if let CallRecord::Entry { caller_pc, .. } = record {
            self.callers_known = symbols.frame(*caller_pc).is_some();
        }
        self.calls.push(record.clone());
        Ok(())
    }

    fn allocs(&mut self, _: u64, _: &AllocReport, _: &Symbols) -> std::io::Result<()> {
        Ok(())
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("recordings");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Replays `bytes`: the records read, and whether reading stopped at damage.
fn replay(bytes: &[u8]) -> Result<(Vec<CallRecord>, bool), String> {
    let mut replay = Replay::new(bytes).map_err(|e| e.to_string())?;
    let mut collect = Collect::default();
    let damage = replay.run(&mut collect).map_err(|e| e.to_string())?;
    Ok((collect.calls, damage.is_some()))
}

#[test]
fn records_read_back_as_written() {
    let path = scratch("roundtrip.esc");
    synthetic::write(&path, 1000, 300, None);
    let (calls, damaged) = replay(&std::fs::read(&path).unwrap()).unwrap();
    assert!(!damaged);
    let written: Vec<CallRecord> = (0..1000).flat_map(synthetic::call).collect();
    assert_eq!(calls, written);
}

#[test]
fn rotation_makes_files_that_read_alone() {
    let path = scratch("rotated.esc");
    let files = synthetic::write(&path, 3000, 100, Some(4096));
    assert!(files.len() > 2, "{files:?}");
    let mut total = 0;
    for (part, file) in files.iter().enumerate() {
        assert_eq!(
            file.to_str().unwrap(),
            if part == 0 {
                path.to_str().unwrap().to_string()
            } else {
                format!("{}.{part}", path.display())
            }
        );
        let bytes = std::fs::read(file).unwrap();
        let mut replay = Replay::new(&bytes[..]).unwrap();
        assert_eq!(replay.reader.header.part, part as u32);
        let mut collect = Collect::default();
        assert!(replay.run(&mut collect).unwrap().is_none());
        assert!(
            collect.callers_known,
            "{}: symbols are in every file",
            file.display()
        );
        // A file passes the limit by at most the chunk that reached it.
        assert!(
            bytes.len() < 4096 + 8192,
            "{}: {} bytes",
            file.display(),
            bytes.len()
        );
        total += collect.calls.len();
    }
    assert_eq!(total, 2 * 3000);
}

/// The kernel's counts read back as written and make the summary `report` prints; a version 3
/// recording, which has none, still reads, its summary counted from its call records.
#[test]
fn kernel_counts_read_back_and_version_3_recordings_still_read() {
    for version in [FORMAT_VERSION, 3] {
        let path = scratch(&format!("version{version}.esc"));
        synthetic::write_format(&path, 900, 300, None, version);
        let bytes = std::fs::read(&path).unwrap();
        let mut replay = Replay::new(&bytes[..]).unwrap();
        assert!(replay.run(&mut Collect::default()).unwrap().is_none());
        let counted = (version > 3).then(|| vec![synthetic::counted(900)]);
        assert_eq!(replay.calls_counted, counted, "version {version}");

        let out = common::escapade(&["report", path.to_str().unwrap(), "--quiet", "--json"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "version {version}: {stderr}");
        let summary = common::json_lines(&String::from_utf8_lossy(&out.stdout)).remove(0);
        let f = &summary["functions"][0];
        assert_eq!(f["entries"], 900, "version {version}: {summary}");
        assert_eq!(f["returns"], 900, "version {version}: {summary}");
        assert_eq!(f["total_ns"], 900 * 500, "version {version}: {summary}");
        if version > 3 {
            assert_eq!(f["latency_log2_ns"][8], 900, "{summary}");
            assert_eq!(f["p99_below_ns"], 512, "{summary}");
            assert_eq!(f["returns_at_ret"], 900, "{summary}");
            assert_eq!(f["returns_at_return_site"], 0, "{summary}");
            assert_eq!(f["unobserved"], 0, "{summary}");
        } else {
            // Nothing to say what only the kernel knew.
            for field in [
                "latency_log2_ns",
                "p99_below_ns",
                "returns_at_ret",
                "unobserved",
            ] {
                assert_eq!(f[field], Value::Null, "{field}: {summary}");
            }
        }
    }
}

fn valid() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let path = scratch("fuzz.esc");
        synthetic::write(&path, 200, 50, None);
        std::fs::read(path).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = replay(&bytes);
        let mut framed = b"ESCAPADE\x01\x00\x00\x00".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = replay(&framed);
    }

    #[test]
    fn damaged_recordings_read_up_to_the_damage(
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..), 0..4),
        cut in any::<proptest::sample::Index>(),
    ) {
        let good = valid();
        let mut bytes = good[..cut.index(good.len() + 1)].to_vec();
        for (at, mask) in &flips {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] ^= mask;
            }
        }
        if let Ok((calls, _)) = replay(&bytes) {
            // Whatever was read is a prefix of what was written, unless a flipped byte
            // happened to keep its chunk's checksum.
            let written: Vec<CallRecord> = (0..200).flat_map(synthetic::call).collect();
            prop_assert!(calls.len() <= written.len());
            if flips.is_empty() {
                prop_assert_eq!(&calls[..], &written[..calls.len()]);
            }
        }
    }
}
