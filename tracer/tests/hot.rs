//! `escapade hot` against known call paths and the runtime's own CPU profile: the CPU shares
//! of two paths burning CPU about 70/30 must match the split the program measured with its
//! thread's CPU clock and its `runtime/pprof` profile of the same run; the parameter lifetime
//! overlap of a call nested in another must be the ratio of their durations (in a PIE and in a
//! stripped binary); a sampling rate the kernel refuses must say which setting. Recorded with
//! `record --cpu`, the samples export as a CPU profile `go tool pprof` reads and as a CPU
//! flame graph.

mod common;

use std::path::Path;

use serde_json::Value;

use common::{Escapade, Go, Target};

/// Samples per second for both escapade and the program's own profile: at pprof's default of
/// 100 Hz a few seconds give too few samples for shares to settle within a point or two.
const HZ: &str = "499";

#[test]
fn cpu_shares_match_the_split_and_the_runtimes_profile() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        cpu_split(&go);
    }
}

fn cpu_split(go: &Go) {
    let bin = common::build(go, "hot", &[]);
    let profile = bin.with_file_name("hot.cpu.pprof");
    let profile_arg = profile.to_str().unwrap();
    let (lines, split) = session(
        &bin,
        &["split", "6", profile_arg, HZ],
        &[
            "hot",
            "main.path*",
            "--json",
            "--hz",
            HZ,
            "--duration",
            "8s",
        ],
    );

    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "hot_summary", "{lines:?}");
    assert_eq!(summary["hz"], 499);
    let samples = summary["samples"].as_u64().unwrap();
    assert!(
        samples > 1000,
        "only {samples} samples in a 6 s run at 499 Hz"
    );
    let share = |function: &str| {
        let row = path(&lines, &[function]);
        // Each call of a one-function path is an occurrence whose parameters' lifetimes are
        // the call itself.
        assert!(row["occurrences"].as_u64().unwrap() > 100, "{row}");
        assert_eq!(row["plo"], 1.0, "{row}");
        let cpu = row["cpu"].as_f64().unwrap();
        let score = row["score"].as_f64().unwrap();
        assert!((score - (0.6 * cpu + 0.4)).abs() < 1e-3, "{row}");
        cpu
    };
    let (a, b) = (share("main.pathA"), share("main.pathB"));
    // The split is between the two paths; the rest of the samples are the loop around them,
    // the runtime, and the profiler's writer.
    let theirs = own_split(&split);
    eprintln!("hot: pathA {a:.3}, pathB {b:.3}; the program's own split {theirs:.3}");
    assert!(
        (a / (a + b) - theirs).abs() < 0.05,
        "pathA {a:.3} and pathB {b:.3}: not the program's own {theirs:.3} split"
    );
    assert!(
        a + b > 0.8,
        "pathA {a:.3} + pathB {b:.3}: too little of the CPU"
    );

    // The runtime's profile puts some of a loaded machine's samples outside both paths (Go
    // 1.27 under CI's load: pathA 0.627 where escapade and the thread's own clock said 0.68
    // and 0.70), so the two profiles are compared on how they split the paths' CPU.
    let top = common::go_tool(go, &["pprof", "-top", "-cum", profile_arg]);
    let (pa, pb) = (
        common::cum_share(&top, "main.pathA"),
        common::cum_share(&top, "main.pathB"),
    );
    eprintln!("runtime/pprof: pathA {pa:.3}, pathB {pb:.3}");
    assert!(
        (a / (a + b) - pa / (pa + pb)).abs() < 0.05,
        "escapade splits pathA {a:.3} / pathB {b:.3}, runtime/pprof {pa:.3} / {pb:.3}\n{top}"
    );
}

#[test]
fn recorded_samples_export_as_a_cpu_profile() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        recorded(&go);
    }
}

fn recorded(go: &Go) {
    let bin = common::build(go, "hot", &[]);
    let dir = bin.parent().unwrap();
    let own_profile = dir.join("hot.recorded.pprof");
    let recording = dir.join("hot.esc");
    let recording = recording.to_str().unwrap();
    // Sampling only: no traced function.
    let (lines, split) = session(
        &bin,
        &["split", "4", own_profile.to_str().unwrap(), "100"],
        &[
            "record",
            "-o",
            recording,
            "--json",
            "--cpu",
            "--hz",
            HZ,
            "--duration",
            "6s",
        ],
    );

    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "cpu_summary", "{lines:?}");
    assert_eq!(summary["hz"], 499);
    assert!(summary["samples"].as_u64().unwrap() > 500, "{summary}");
    let pprof = dir.join("hot.cpu.pb.gz");
    let svg = dir.join("hot.cpu.svg");
    let out = common::escapade(&[
        "export",
        recording,
        "--pprof",
        pprof.to_str().unwrap(),
        "--flamegraph",
        svg.to_str().unwrap(),
        "--weight",
        "cpu",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let top = common::go_tool(go, &["pprof", "-top", "-cum", pprof.to_str().unwrap()]);
    assert!(top.contains("Type: cpu"), "{top}");
    let (a, b) = (
        common::cum_share(&top, "main.pathA"),
        common::cum_share(&top, "main.pathB"),
    );
    let at = |f: &str| top.find(f).unwrap();
    assert!(at("main.pathA") < at("main.pathB"), "{top}");
    let theirs = own_split(&split);
    eprintln!("exported: pathA {a:.3}, pathB {b:.3}; the program's own split {theirs:.3}");
    assert!(
        (a / (a + b) - theirs).abs() < 0.05,
        "pathA {a:.3}, pathB {b:.3}: not the program's own {theirs:.3} split\n{top}"
    );
    // Each sample stands for 1/499 s: pprof's total is samples times that period.
    let raw = common::go_tool(go, &["pprof", "-raw", pprof.to_str().unwrap()]);
    assert!(raw.contains("samples/count cpu/nanoseconds"), "{raw}");
    assert!(raw.contains("Period: 2004008"), "{raw}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.contains("main.pathA") && svg.contains("samples"),
        "{svg}"
    );
}

#[test]
fn nested_calls_overlap_by_their_durations() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        // Position-independent: sampled stacks resolve through the load bias. main.main was
        // running before escapade attached and never returns: its paths count the
        // occurrences of the calls inside it, and it has no parameters to add a lifetime.
        let pie = common::build(&go, "hot", &["-buildmode=pie"]);
        nested(&pie, &["main.*"], &["main.main"]);
        // Without symbols or DWARF, stacks resolve through pclntab; parameters are unknown,
        // so each traced call adds its lifetime (main.main's would span the whole session).
        let stripped = common::build(&go, "hot", &["-ldflags=-s -w"]);
        let functions = ["main.outer", "main.inner", "main.siblings", "main.sib?"];
        nested(&stripped, &functions, &[]);
    }
}

/// Checks the paths below `outside` of `hot` on the program's nested calls, tracing
/// `functions`.
fn nested(bin: &Path, functions: &[&str], outside: &[&str]) {
    let mut args = vec!["hot", "--json", "--duration", "4s"];
    args.extend(functions);
    let (lines, _) = session(bin, &["nested", "6"], &args);

    let plo = |p: &[&str]| {
        let p: Vec<&str> = outside.iter().chain(p).copied().collect();
        let row = path(&lines, &p);
        assert!(row["occurrences"].as_u64().unwrap() > 20, "{row}");
        row["plo"].as_f64().unwrap()
    };
    // outer runs 30 ms, inner 10 ms inside it: 10 / 30.
    let nested = plo(&["main.outer", "main.inner"]);
    eprintln!("outer > inner: PLO {nested:.3}");
    assert!(
        (nested - 1.0 / 3.0).abs() < 0.05,
        "outer > inner: PLO {nested:.3}, not 1/3"
    );
    assert_eq!(plo(&["main.outer"]), 1.0);
    // sibA and sibB run one after the other inside siblings, 10 ms of its 20 ms each; their
    // own lifetimes never meet (the pair's PLO is 0), so no path holds both.
    for sibling in ["main.sibA", "main.sibB"] {
        let half = plo(&["main.siblings", sibling]);
        assert!(
            (half - 0.5).abs() < 0.05,
            "siblings > {sibling}: PLO {half:.3}"
        );
    }
    assert!(
        lines
            .iter()
            .filter(|l| l["type"] == "path")
            .all(|l| !(l["path"].to_string().contains("sibA")
                && l["path"].to_string().contains("sibB"))),
        "{lines:?}"
    );
    // Highest score first.
    let scores: Vec<f64> = lines
        .iter()
        .filter(|l| l["type"] == "path")
        .map(|l| l["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
}

#[test]
fn a_rate_above_the_kernels_limit_names_the_setting() {
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let go = &common::toolchains()[0];
    let bin = common::build(go, "hot", &[]);
    let mut target = Target::start(&bin, &["nested", "0"]);
    let pid = target.pid.to_string();
    let hz = (max + 1).to_string();
    let recording = bin.with_file_name("hot.refused.esc");
    let _ = std::fs::remove_file(&recording);
    let refused = [
        common::escapade(&["hot", "--pid", &pid, "main.outer", "--hz", &hz]),
        common::escapade(&[
            "record",
            "--pid",
            &pid,
            "-o",
            recording.to_str().unwrap(),
            "--cpu",
            "--hz",
            &hz,
        ]),
    ];
    target.go();
    target.read_count("done");
    target.go();
    target.finish();
    for out in refused {
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("kernel.perf_event_max_sample_rate"),
            "{stderr}"
        );
    }
    assert!(!recording.exists(), "a refused recording left a file");
}

/// Runs `bin` with `program` arguments under `escapade <command> --pid PID <rest>`; returns
/// escapade's JSON lines and what the program printed after `done`. Where the program's own
/// measurements are compared, escapade's `--duration` covers the program's whole run (it
/// starts before and waits after), so both see the same CPU time.
fn session(bin: &Path, program: &[&str], escapade: &[&str]) -> (Vec<Value>, String) {
    let mut target = Target::start(bin, program);
    let pid = target.pid.to_string();
    let mut args = vec![escapade[0], "--pid", &pid];
    args.extend(&escapade[1..]);
    let escapade = Escapade::attach(&args);
    target.go();
    let lines = escapade.finish();
    assert!(target.read_count("done") > 0);
    target.go();
    (lines, target.finish())
}

/// pathA's share of the CPU time the two paths took, as the program's `cpu <A ns> <B ns>` line
/// says; on an idle machine 0.7, less when the machine is busy (see `go/hot.go`).
fn own_split(printed: &str) -> f64 {
    let ns: Vec<f64> = printed
        .strip_prefix("cpu ")
        .map(|rest| {
            rest.split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect()
        })
        .unwrap_or_else(|| panic!("the program printed {printed:?}, not `cpu <ns> <ns>`"));
    let split = ns[0] / (ns[0] + ns[1]);
    assert!(
        (split - 0.7).abs() < 0.1,
        "the program's own split is {split:.3}"
    );
    split
}

/// The row of `path` in `hot --json` output.
fn path<'a>(lines: &'a [Value], path: &[&str]) -> &'a Value {
    lines
        .iter()
        .find(|l| l["type"] == "path" && l["path"] == serde_json::json!(path))
        .unwrap_or_else(|| panic!("no path {path:?} in {lines:?}"))
}
