//! `escapade record` against a real Go program, then `report` and `export` on the file alone:
//! the report must equal what `record` printed live, both must agree with what the program
//! itself counted, and each export must open in its tool (`go tool pprof` for pprof).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::{Escapade, Target};

/// Calls and goroutines `tests/go/record.go` makes, and its buffers.
const ADDS: u64 = 300;
const WORKERS: u64 = 25;
const BUFFERS: u64 = 400;

fn scratch(go: &common::Go, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("record")
        .join(&go.version);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Starts `tests/go/<program>.go` with `program_args`, and `escapade record` on it into a
/// scratch file `name` with `args`; returns the target, escapade, and the file.
fn start_recording(
    go: &common::Go,
    program: &str,
    program_args: &[&str],
    name: &str,
    args: &[&str],
) -> (Target, Escapade, PathBuf) {
    let bin = common::build(go, program, &[]);
    let file = scratch(go, name);
    let target = Target::start(&bin, program_args);
    let pid = target.pid.to_string();
    let command = [
        &["record", "--pid", &pid, "-o", file.to_str().unwrap()][..],
        args,
    ]
    .concat();
    (target, Escapade::attach(&command), file)
}

#[test]
fn record_report_and_export() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        let (mut target, escapade, file) = start_recording(
            &go,
            "record",
            &[],
            "run.esc",
            &[
                "--allocs",
                "--exact",
                "--json",
                "main.add",
                "main.worker",
                "main.fill",
            ],
        );
        let path = file.to_str().unwrap();
        let pid = u64::from(target.pid);
        target.go();
        let sum = target.read_count("sum");
        let gcs = target.read_count("gcs");
        target.go();
        target.finish();
        let live = escapade.finish();

        // What record printed agrees with the program.
        let summary = live.iter().find(|l| l["type"] == "summary").unwrap();
        let calls = |name: &str| function(summary, name);
        assert_eq!(calls("main.add")["entries"], ADDS, "{summary}");
        assert_eq!(calls("main.add")["paired"], ADDS, "{summary}");
        assert_eq!(calls("main.worker")["entries"], WORKERS, "{summary}");
        assert_eq!(calls("main.fill")["returns"], 1, "{summary}");
        let allocs = &live.iter().find(|l| l["type"] == "allocs").unwrap()["report"];
        assert_eq!(
            allocs["gc_cycles"], gcs,
            "GC cycles vs MemStats.NumGC delta"
        );
        let buffers = allocs["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"]["function"] == "main.buffer")
            .unwrap_or_else(|| panic!("no site main.buffer in {allocs}"));
        assert_eq!(buffers["objects"], BUFFERS, "{buffers}");

        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "recordings may hold argument values");

        // The offline report prints exactly what record printed live.
        let offline =
            common::json_lines(&common::escapade_ok(&["report", path, "--quiet", "--json"]));
        assert_eq!(offline, live, "report vs record's live summary");
        let text = common::escapade_ok(&["report", path, "--quiet"]);
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with("main.add "))
            .unwrap_or_else(|| panic!("no main.add row in {text}"));
        let counts: Vec<&str> = row.split_whitespace().skip(1).take(2).collect();
        assert_eq!(counts, ["300", "300"], "calls and returns: {row}");
        // And every call, with its decoded values: the results of add sum up as the program did.
        let lines = common::json_lines(&common::escapade_ok(&["report", path, "--json"]));
        let adds: Vec<&Value> = lines
            .iter()
            .filter(|l| l["type"] == "return" && l["function"] == "main.add")
            .collect();
        assert_eq!(adds.len() as u64, ADDS);
        assert_eq!(
            adds.last().unwrap()["results"][0]["value"]["value"],
            sum,
            "the last add returns the program's sum"
        );
        let entry = lines
            .iter()
            .find(|l| l["type"] == "entry" && l["function"] == "main.add")
            .unwrap();
        assert_eq!(entry["caller"]["function"], "main.main", "{entry}");
        assert_eq!(entry["args"][0]["name"], "a", "{entry}");

        check_pprof(&go, path, allocs);
        check_perfetto(&go, path, pid, gcs, allocs);
        check_flamegraph(&go, path);
    }
}

/// `go tool pprof -top` rows as (function, flat, cum), and the total it reports.
fn top(go: &common::Go, sample_index: &str, profile: &str) -> (Vec<(String, f64, f64)>, f64) {
    let out = common::go_tool(
        go,
        &[
            "pprof",
            "-top",
            "-nodecount=1000",
            &format!("-sample_index={sample_index}"),
            profile,
        ],
    );
    let total = out
        .lines()
        .find_map(|l| l.strip_prefix("Showing nodes accounting for "))
        .and_then(|l| l.strip_suffix(" total"))
        .and_then(|l| l.rsplit(' ').next())
        .map(pprof_value)
        .filter(|n| !n.is_nan())
        .unwrap_or_else(|| panic!("no total in {out}"));
    let rows = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6).then(|| (f[5..].join(" "), pprof_value(f[0]), pprof_value(f[3])))
        })
        .collect();
    (rows, total)
}

/// A value as `go tool pprof` prints it: a count, or a time in nanoseconds (it prints times in
/// the unit that suits them, to two decimals); NaN if it is neither.
fn pprof_value(text: &str) -> f64 {
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let scale = match unit {
        "" | "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "mins" => 60e9,
        "hrs" => 3600e9,
        _ => f64::NAN,
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * scale)
}

/// The row of `function` in `go tool pprof -top`'s rows, as [`top`] returns them.
fn row(rows: &[(String, f64, f64)], function: &str) -> (String, f64, f64) {
    rows.iter()
        .find(|r| r.0 == function)
        .unwrap_or_else(|| panic!("pprof -top has no {function}: {rows:?}"))
        .clone()
}

/// The entry of function `name` in a trace summary.
fn function<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["functions"]
        .as_array()
        .unwrap_or_else(|| panic!("no functions in {summary}"))
        .iter()
        .find(|f| f["function"] == name)
        .unwrap_or_else(|| panic!("no {name} in {summary}"))
}

/// The trace summary `report --quiet --json` prints for `recording`.
fn reported_summary(recording: &str) -> Value {
    let lines = common::json_lines(&common::escapade_ok(&[
        "report", recording, "--quiet", "--json",
    ]));
    lines
        .into_iter()
        .find(|l| l["type"] == "summary")
        .expect("a summary")
}

/// Records `hot nested 1` (`main.outer` calling `main.inner`, which spin for known times) with
/// `args` into `name`; returns the file, the rounds the program ran, and `report`'s summary of
/// the file, checked to be the one `record` printed live.
fn record_nested(go: &common::Go, name: &str, args: &[&str]) -> (PathBuf, u64, Value) {
    let mut record_args = vec!["--json"];
    record_args.extend(args);
    let (mut target, escapade, file) =
        start_recording(go, "hot", &["nested", "1"], name, &record_args);
    target.go();
    let rounds = target.read_count("done");
    target.go();
    target.finish();
    let live = escapade.finish();
    let summary = reported_summary(file.to_str().unwrap());
    assert_eq!(
        live,
        std::slice::from_ref(&summary),
        "report vs record's live summary"
    );
    (file, rounds, summary)
}

/// The latency histogram of function `f` in a trace summary.
fn histogram(f: &Value) -> Vec<u64> {
    f["latency_log2_ns"]
        .as_array()
        .unwrap_or_else(|| panic!("no latency histogram in {f}"))
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect()
}

/// `escapade export --pprof` of `recording` into the scratch file `name`; returns its path.
fn export_pprof(go: &common::Go, recording: &str, name: &str) -> String {
    let profile = scratch(go, name).to_str().unwrap().to_string();
    common::escapade_ok(&["export", recording, "--pprof", &profile]);
    profile
}

fn check_pprof(go: &common::Go, recording: &str, allocs: &Value) {
    let profile = export_pprof(go, recording, "run.pb.gz");
    let profile = profile.as_str();
    let (calls, _) = top(go, "calls", profile);
    assert_eq!(row(&calls, "main.add").1, ADDS as f64);
    assert_eq!(row(&calls, "main.worker").1, WORKERS as f64);
    let (objects, total) = top(go, "alloc_objects", profile);
    // The buffers' allocations, under main.buffer, which pprof knows was inlined, then
    // main.fill.
    assert_eq!(
        row(&objects, "main.buffer (inline)").2,
        BUFFERS as f64,
        "{objects:?}"
    );
    assert_eq!(row(&objects, "main.fill").2, BUFFERS as f64, "{objects:?}");
    assert_eq!(total, allocs["objects"].as_f64().unwrap(), "every object");

    // Inlined frames share their address's Location, innermost line first.
    let raw = common::go_tool(go, &["pprof", "-raw", profile]);
    let locations: Vec<&str> = raw
        .lines()
        .skip_while(|l| !l.starts_with("Locations"))
        .collect();
    let inlined = locations.windows(2).any(|w| {
        w[0].contains(": 0x") && w[0].contains(" main.buffer ") && {
            let next = w[1].trim_start();
            next.starts_with("main.fill ")
        }
    });
    let add_at = |l: &&str| l.contains(" main.add ") && l.contains("record.go:");
    assert!(
        locations.iter().any(add_at),
        "a traced function has its own source position: {raw}"
    );
    assert!(
        inlined,
        "no Location with main.buffer inlined into main.fill: {raw}"
    );
}

fn check_perfetto(go: &common::Go, recording: &str, pid: u64, gcs: u64, allocs: &Value) {
    let out = scratch(go, "run.json");
    common::escapade_ok(&["export", recording, "--perfetto", out.to_str().unwrap()]);
    let trace: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    let mut tracks = std::collections::HashMap::new();
    for e in events {
        let ph = e["ph"].as_str().unwrap_or_else(|| panic!("no ph: {e}"));
        assert_eq!(e["pid"], pid, "{e}");
        match ph {
            "X" => {
                assert!(
                    e["ts"].as_f64().is_some() && e["dur"].as_f64().unwrap() >= 0.0,
                    "{e}"
                );
                assert!(e["tid"].as_u64().is_some() && e["name"].is_string(), "{e}");
            }
            "i" => assert!(
                e["ts"].as_f64().is_some() && e["tid"].as_u64().is_some(),
                "{e}"
            ),
            "C" => assert!(e["args"].is_object(), "{e}"),
            "M" => {
                if e["name"] == "thread_name" {
                    tracks.insert(
                        e["args"]["name"].as_str().unwrap().to_string(),
                        e["tid"].as_u64().unwrap(),
                    );
                }
            }
            _ => panic!("unexpected phase {ph}: {e}"),
        }
    }
    let spans = |name: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["ph"] == "X" && e["name"] == name)
            .collect()
    };
    let adds = spans("main.add");
    assert_eq!(adds.len() as u64, ADDS);
    assert!(
        adds.iter().all(|e| e["tid"] == 1),
        "add runs on goroutine 1"
    );
    assert_eq!(tracks["goroutine 1"], 1);
    let workers: HashSet<u64> = spans("main.worker")
        .iter()
        .map(|e| e["tid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        workers.len() as u64,
        WORKERS,
        "one track per worker goroutine"
    );
    assert!(!workers.contains(&1));
    let on = |track: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["ph"] == "i" && e["tid"] == tracks[track])
            .collect()
    };
    // A span per cycle with a span per phase inside it; an instant for a cycle whose record
    // the runtime overwrote before the probe read it (seen on Go 1.22).
    let gc_track = &tracks["GC cycles"];
    let on_gc = |e: &&Value| e["tid"] == *gc_track && e["ph"] != "M";
    let cycles: Vec<&Value> = events
        .iter()
        .filter(on_gc)
        .filter(|e| e["name"].as_str().unwrap().starts_with("GC "))
        .collect();
    assert_eq!(
        cycles.len() as u64,
        gcs,
        "one event per GC cycle: {cycles:?}"
    );
    let span = |e: &Value| {
        let ts = e["ts"].as_f64().unwrap();
        (ts, ts + e["dur"].as_f64().unwrap_or(0.0))
    };
    for cycle in cycles.iter().filter(|c| c["ph"] == "X") {
        let (start, end) = span(cycle);
        let inside = events.iter().filter(on_gc).filter(|e| {
            let (s, e) = span(e);
            s >= start && e <= end + 0.001
        });
        assert_eq!(inside.count(), 4, "{cycle} and its three phases");
    }
    assert!(
        cycles.iter().any(|c| c["ph"] == "X"),
        "GC cycles are timed: {cycles:?}"
    );
    let created: u64 = on("goroutine creations")
        .iter()
        .map(|e| e["args"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(created, allocs["goroutines_created"].as_u64().unwrap());
    assert!(created >= WORKERS);
}

fn check_flamegraph(go: &common::Go, recording: &str) {
    for (weight, want) in [("bytes", "main.buffer"), ("calls", "main.add")] {
        let out = scratch(go, &format!("{weight}.svg"));
        common::escapade_ok(&[
            "export",
            recording,
            "--flamegraph",
            out.to_str().unwrap(),
            "--weight",
            weight,
        ]);
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains(want),
            "{weight}: {svg}"
        );
    }
}

/// A recording cut short by `kill -9` reads up to its last chunk, at most a second before the
/// kill, the kernel's counts of the calls included; damaged files (truncated, a flipped byte, another format version, empty, not a
/// recording) fail with one line saying what was readable, after reporting it.
#[test]
fn killed_and_damaged_recordings() {
    let go = &common::toolchains()[0];
    let (mut target, escapade, file) =
        start_recording(go, "busy", &["4"], "killed.esc", &["main.hot"]);
    let path = file.to_str().unwrap();
    target.go();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    escapade.kill9();
    let calls = target.read_count("calls");
    target.go();
    target.finish();

    let out = common::escapade(&["report", path, "--quiet", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let covered: f64 = stderr
        .split("covers the first ")
        .nth(1)
        .and_then(|s| s.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no coverage in {stderr:?}"));
    assert!(covered >= 1.0, "at most the last second is lost: {stderr}");
    let summary = common::json_lines(&String::from_utf8_lossy(&out.stdout)).remove(0);
    assert_eq!(summary["ended"], Value::Null, "{summary}");
    let hot = function(&summary, "main.hot");
    let counted = hot["entries"].as_u64().unwrap();
    // Counted while the program ran, in the second before the kill at the latest.
    assert!(
        counted > 0 && counted <= calls,
        "{counted} of {calls}: {summary}"
    );
    assert_eq!(
        histogram(hot).iter().sum::<u64>(),
        hot["returns"].as_u64().unwrap(),
        "{summary}"
    );

    let good = std::fs::read(&file).unwrap();
    let header_len = u32::from_le_bytes(good[12..16].try_into().unwrap()) as usize;
    let first_chunk = 12 + 8 + header_len;
    let mut version = good.clone();
    version[8..12].copy_from_slice(&99u32.to_le_bytes());
    let mut flipped = good.clone();
    flipped[first_chunk + 8 + 1] ^= 0x40;
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("empty", Vec::new(), "the file is empty"),
        (
            "text",
            b"hello, world\n".to_vec(),
            "not an escapade recording",
        ),
        ("version", version, "recorded in format version 99"),
        (
            "header",
            good[..first_chunk - 5].to_vec(),
            "the header is cut short (the file is truncated): nothing in the file can be read",
        ),
        ("flipped", flipped, "chunk 1 at byte"),
        (
            "truncated",
            good[..good.len() - 5].to_vec(),
            "is cut short (the file is truncated); the report covers the",
        ),
    ];
    for (name, bytes, want) in cases {
        let damaged = scratch(go, &format!("{name}.esc"));
        std::fs::write(&damaged, bytes).unwrap();
        let damaged = damaged.to_str().unwrap();
        for command in [
            &["report", damaged][..],
            &["export", damaged, "--perfetto", "/dev/null"][..],
        ] {
            let out = common::escapade(command);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name}: {command:?}: {stderr}");
            // What the readable part holds may come with its own warnings (events the ring
            // buffer lost while recording); the damage is one line of its own.
            let errors: Vec<&str> = stderr
                .lines()
                .filter(|l| !l.starts_with("escapade: warning:"))
                .collect();
            assert_eq!(errors.len(), 1, "{name}: one line: {stderr}");
            assert!(
                errors[0].starts_with(&format!("escapade: {damaged}: "))
                    && errors[0].contains(want),
                "{name}: {stderr}"
            );
        }
    }
    // What was readable before the damage is reported.
    let out = common::escapade(&["report", scratch(go, "flipped.esc").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
    let out = common::escapade(&[
        "report",
        "--quiet",
        scratch(go, "truncated.esc").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("main.hot"));
}

/// Sampled mode recorded, at `MemProfileRate` 1: the pprof export's in-use and allocated
/// objects per site equal what `runtime.MemProfile` said, and the offline report equals the
/// live one.
#[test]
fn sampled_allocations_export_inuse() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        let (mut target, escapade, file) = start_recording(
            &go,
            "profile",
            &[],
            "sampled.esc",
            &[
                "--allocs",
                "--mem-profile-rate",
                "1",
                "--duration",
                "6s",
                "--json",
            ],
        );
        let path = file.to_str().unwrap();
        target.go();
        let mut runtime_says = std::collections::HashMap::<String, (f64, f64)>::new();
        loop {
            let line = target.read_lines(1).concat();
            let f: Vec<&str> = line.split_whitespace().collect();
            if f == ["done"] {
                break;
            }
            if f.first() == Some(&"boxed") {
                continue;
            }
            assert!(
                f.len() == 6 && f[0] == "site",
                "the program printed {line:?}"
            );
            let counts = runtime_says.entry(f[1].to_string()).or_default();
            counts.0 += f[3].parse::<f64>().unwrap();
            counts.1 += f[5].parse::<f64>().unwrap();
        }
        let live = escapade.finish();
        target.go();
        target.read_lines(1);
        target.go();
        target.finish();

        let offline =
            common::json_lines(&common::escapade_ok(&["report", path, "--quiet", "--json"]));
        assert_eq!(offline, live, "report vs record's live summary");
        let profile = scratch(&go, "sampled.pb.gz");
        let profile = profile.to_str().unwrap();
        common::escapade_ok(&["export", path, "--pprof", profile]);
        let (allocated, _) = top(&go, "alloc_objects", profile);
        let (inuse, _) = top(&go, "inuse_objects", profile);
        let cum = |rows: &[(String, f64, f64)], function: &str| {
            rows.iter().find(|r| r.0 == function).map_or(0.0, |r| r.2)
        };
        for (function, (objects, freed)) in &runtime_says {
            assert_eq!(cum(&allocated, function), *objects, "{function}: allocated");
            assert_eq!(cum(&inuse, function), objects - freed, "{function}: in use");
        }
        assert_eq!(runtime_says["main.keepNodes"], (700.0, 0.0));
    }
}

/// `--max-size` splits a recording into files that each read alone; their call records add up
/// to what the program made, each but the last says where the recording goes on, and each has
/// the kernel's counts since the start, the last one all of them, as `record` printed.
#[test]
fn rotated_files_add_up_to_the_programs_calls() {
    let go = &common::toolchains()[0];
    let dir = scratch(go, "rotated.esc").parent().unwrap().to_path_buf();
    for old in std::fs::read_dir(&dir).unwrap().flatten() {
        if old.file_name().to_string_lossy().starts_with("rotated.esc") {
            std::fs::remove_file(old.path()).unwrap();
        }
    }
    let (mut target, escapade, file) = start_recording(
        go,
        "record",
        &[],
        "rotated.esc",
        &["--max-size", "2K", "--json", "main.add", "main.worker"],
    );
    target.go();
    target.read_count("sum");
    target.read_count("gcs");
    target.go();
    target.finish();
    let live = escapade.finish();
    let mut recorded = 0;
    let mut counted = Vec::new();
    let mut summary = Value::Null;
    let mut part = 0;
    loop {
        let path = if part == 0 {
            file.clone()
        } else {
            PathBuf::from(format!("{}.{part}", file.display()))
        };
        if !path.exists() {
            break;
        }
        let out = common::escapade(&["report", path.to_str().unwrap(), "--json"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let next = format!("{}.{}", file.display(), part + 1);
        assert_eq!(
            stderr.contains(&format!("goes on in {next}")),
            Path::new(&next).exists(),
            "{}: {stderr}",
            path.display()
        );
        let mut lines = common::json_lines(&String::from_utf8_lossy(&out.stdout));
        summary = lines.pop().unwrap();
        recorded += lines.iter().filter(|l| l["type"] == "entry").count() as u64;
        let entries = |name| function(&summary, name)["entries"].as_u64().unwrap();
        assert!(
            function(&summary, "main.add")["latency_log2_ns"].is_array(),
            "{}: no kernel counts: {summary}",
            path.display()
        );
        counted.push(entries("main.add") + entries("main.worker"));
        part += 1;
    }
    assert!(part > 2, "only {part} files");
    assert_eq!(recorded, ADDS + WORKERS, "calls over {part} files");
    assert!(counted.is_sorted(), "counted since the start: {counted:?}");
    assert_eq!(live, [summary], "the last file vs record's live summary");
    assert_eq!(counted.last(), Some(&(ADDS + WORKERS)), "{counted:?}");
}

/// `report` prints the calls of a recording as the kernel counted and timed them, the summary
/// `record` printed live, as `trace` prints it: the program's own count of calls, each in the
/// histogram bucket of the time it spins, every return seen; and the pprof export
/// ranks the functions by those calls and their total time.
#[test]
fn report_and_pprof_give_the_kernels_counts_and_latencies() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        let (file, rounds, summary) =
            record_nested(&go, "kernel.esc", &["main.outer", "main.inner"]);
        let path = file.to_str().unwrap();
        // outer spins 30 ms in all (10 of them in inner), inner 10 ms.
        for (name, below) in [("main.outer", 1u64 << 25), ("main.inner", 1 << 24)] {
            let f = function(&summary, name);
            assert_eq!(f["entries"], rounds, "{f}");
            assert_eq!(f["returns"], rounds, "{f}");
            let by_mechanism = |k: &str| f[k].as_u64().unwrap();
            assert_eq!(
                by_mechanism("returns_at_return_site") + by_mechanism("returns_at_ret"),
                rounds,
                "{f}"
            );
            assert_eq!(f["unobserved"], 0, "{f}");
            let histogram = histogram(f);
            assert_eq!(histogram.iter().sum::<u64>(), rounds, "{f}");
            let bucket = below.trailing_zeros() as usize - 1;
            let faster: u64 = histogram[..bucket].iter().sum();
            assert_eq!(faster, 0, "faster than it spins: {f}");
            let p50 = f["p50_below_ns"].as_u64().unwrap();
            assert!(p50 == below || p50 == 2 * below, "{f}");
        }
        let text = common::escapade_ok(&["report", path, "--quiet"]);
        assert!(
            text.contains("at site") && text.contains("at RET") && !text.contains("unobserved"),
            "where returns were seen, and no unobserved column with none: {text}"
        );

        let profile = export_pprof(&go, path, "kernel.pb.gz");
        let (calls, total) = top(&go, "kernel_calls", &profile);
        assert_eq!(row(&calls, "main.outer").1, rounds as f64, "{calls:?}");
        assert_eq!(row(&calls, "main.inner").1, rounds as f64, "{calls:?}");
        assert_eq!(total, 2.0 * rounds as f64, "{calls:?}");
        let (time, _) = top(&go, "kernel_call_time", &profile);
        assert_eq!(time[0].0, "main.outer", "ranked by time: {time:?}");
        for name in ["main.outer", "main.inner"] {
            let total_ns = function(&summary, name)["total_ns"].as_f64().unwrap();
            let shown = row(&time, name).1;
            assert!(
                (shown - total_ns).abs() <= total_ns * 1e-3,
                "{name}: pprof {shown} ns, report {total_ns} ns"
            );
        }
    }
}

/// Events lost while escapade could not read them (stopped, as a sink far behind would be)
/// cost the recording call records, not the counts: `report` and the pprof export still have
/// every call the program made, each in the histogram.
#[test]
fn dropped_events_cost_call_records_not_counts() {
    use std::io::Read as _;
    use std::process::Command;
    let go = common::toolchains().pop().unwrap();
    let bin = common::build(&go, "agent", &[]);
    let n: u64 = 100_000;
    let file = scratch(&go, "dropped.esc");
    let path = file.to_str().unwrap();
    let mut target = Target::start(&bin, &[&n.to_string()]);
    let pid = target.pid.to_string();
    let (escapade, mut stderr) =
        common::spawn_attached(&["record", "--pid", &pid, "-o", path, "--json", "main.work"]);
    let escapade_pid = escapade.id().to_string();
    let signal = |signal: &str| {
        let status = Command::new("kill")
            .args([signal, &escapade_pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    };
    signal("-STOP");
    target.go();
    let calls = target.read_count("calls");
    target.finish();
    signal("-CONT");
    let mut warnings = String::new();
    stderr.read_to_string(&mut warnings).unwrap();
    let out = escapade.wait_with_output().unwrap();
    assert!(out.status.success(), "{warnings}");
    assert_eq!(calls, n);

    let live = common::json_lines(&String::from_utf8_lossy(&out.stdout));
    let summary = reported_summary(path);
    assert_eq!(
        live,
        std::slice::from_ref(&summary),
        "report vs record's live summary"
    );
    assert!(
        summary["dropped"].as_u64().unwrap() > 0,
        "no event was lost, so this tests nothing: {summary}"
    );
    let work = function(&summary, "main.work");
    assert_eq!(work["entries"], n, "{summary}");
    assert_eq!(work["returns"], n, "{summary}");
    assert_eq!(histogram(work).iter().sum::<u64>(), n, "{summary}");
    let recorded = common::json_lines(&common::escapade_ok(&["report", path, "--json"]))
        .iter()
        .filter(|l| l["type"] == "entry")
        .count() as u64;
    assert!(recorded < n, "{recorded} calls recorded of {n}");

    let profile = export_pprof(&go, path, "dropped.pb.gz");
    let (counted, _) = top(&go, "kernel_calls", &profile);
    assert_eq!(row(&counted, "main.work").1, n as f64, "{counted:?}");
    let (recorded_calls, _) = top(&go, "calls", &profile);
    assert_eq!(row(&recorded_calls, "main.work").1, recorded as f64);
}

/// With `--entries-only` no return is recorded nor counted, and the recording still has every
/// call, as the kernel counted them, with none still running.
#[test]
fn entries_only_recordings_count_every_call() {
    let go = common::toolchains().pop().unwrap();
    let (file, rounds, summary) =
        record_nested(&go, "entries.esc", &["--entries-only", "main.inner"]);
    let path = file.to_str().unwrap();
    let inner = function(&summary, "main.inner");
    assert!(rounds > 1, "the program ran {rounds} rounds");
    assert_eq!(inner["entries"], rounds, "{summary}");
    assert_eq!(inner["returns"], 0, "{summary}");
    assert_eq!(inner["returns_at_ret"], 0, "{summary}");
    assert_eq!(summary["in_flight"], 0, "{summary}");
    let profile = export_pprof(&go, path, "entries.pb.gz");
    let (calls, _) = top(&go, "kernel_calls", &profile);
    assert_eq!(row(&calls, "main.inner").1, rounds as f64, "{calls:?}");
}
