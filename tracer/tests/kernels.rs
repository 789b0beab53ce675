//! The kernel compatibility suite: each command of escapade once against a real Go program,
//! its counts and values compared with what the program itself printed. It is small enough to
//! run under QEMU's emulation: `cargo xtask vmtest` runs it on the machine's own kernel and on
//! Debian's 6.1 and 6.12 in virtual machines, and `cargo test` runs it with the rest. The
//! programs are built with the newest Go of the matrix; the other test files cover the others.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::agent::{Agent, install, run_traced, target_config, temp_dir, wait_until};
use common::{Escapade, Go, Target, arg, compare, json_lines};

/// The newest Go of the matrix.
fn go() -> Go {
    let key = |go: &Go| -> Vec<u32> {
        let version = go.version.trim_start_matches("go");
        version.split('.').map(|n| n.parse().unwrap_or(0)).collect()
    };
    common::toolchains().into_iter().max_by_key(key).unwrap()
}

fn program(name: &str) -> PathBuf {
    common::build(&go(), name, &[])
}

/// Whether the kernel has `uprobe_multi` links (6.6 and later), from `uname -r`.
fn has_uprobe_multi() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (numbers.next().unwrap(), numbers.next().unwrap()) >= (6, 6)
}

/// The summary's entry for `function`.
fn summary_of<'a>(lines: &'a [Value], function: &str) -> &'a Value {
    lines
        .iter()
        .filter(|l| l["type"] == "summary")
        .flat_map(|s| s["functions"].as_array().unwrap())
        .find(|f| f["function"] == function)
        .unwrap_or_else(|| panic!("no summary of {function} in {lines:?}"))
}

/// Traced calls `args.go` makes, each printed as a JSON line.
const ARGS_CALLS: usize = 12;

#[test]
fn trace_json_decodes_what_the_program_passed_and_got() {
    let mut target = Target::start(&program("args"), &[]);
    let pid = target.pid.to_string();
    let functions = [
        "main.TracedScalars",
        "main.TracedString",
        "main.TracedStructs",
    ];
    let mut args = vec!["trace", "--pid", &pid, "--json", "--capture-strings", "64"];
    args.extend(functions);
    let mut escapade = Escapade::attach(&args);
    target.go();
    let printed = json_lines(&target.read_lines(ARGS_CALLS).concat());
    // The program stays until its calls are decoded: strings are read from its memory.
    escapade.wait_for(2 * functions.len(), |l| {
        l.contains(r#""type":"entry""#) || l.contains(r#""type":"return""#)
    });
    target.go();
    target.finish();
    let events = escapade.finish();
    for function in functions {
        let call = printed.iter().find(|c| c["function"] == function).unwrap();
        let of = |kind: &str| -> Vec<&Value> {
            let is = |e: &&Value| e["type"] == kind && e["function"] == function;
            events.iter().filter(is).collect()
        };
        let (entries, returns) = (of("entry"), of("return"));
        assert_eq!((entries.len(), returns.len()), (1, 1), "{function}");
        for (list, decoded) in [
            ("args", &entries[0]["args"]),
            ("results", &returns[0]["results"]),
        ] {
            for (name, want) in call[list].as_object().unwrap() {
                let got = arg(decoded, name).unwrap_or_else(|| panic!("{function} {name}"));
                compare(&format!("{function} {name}"), want, &got["value"]);
            }
        }
    }
    let summary = events.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["dropped"], 0, "{summary}");
    assert_eq!(summary["ended"], "target_exited", "{summary}");
}

/// Calls `tail.go` makes.
const TAIL_CALLS: u64 = 100;

/// One run of `tail.go` under `escapade trace --pid PID <options> main.work`.
struct Tail {
    /// The calls the program found slow, and those that failed.
    slow: BTreeSet<i64>,
    failed: BTreeSet<i64>,
    /// What escapade printed.
    stdout: String,
}

impl Tail {
    fn run(bin: &Path, options: &[&str]) -> Tail {
        let mut target = Target::start(bin, &[]);
        let pid = target.pid.to_string();
        let args = [&["trace", "--pid", &pid][..], options, &["main.work"]].concat();
        let escapade = Escapade::attach(&args);
        target.go();
        let mut set = |word: &str| -> BTreeSet<i64> {
            let line = target.read_lines(1).concat();
            let list = line
                .strip_prefix(word)
                .unwrap_or_else(|| panic!("{line:?}"));
            serde_json::from_str(list.trim()).unwrap()
        };
        let (slow, failed) = (set("slow "), set("failed "));
        target.go();
        target.finish();
        Tail {
            slow,
            failed,
            stdout: escapade.finish_text(),
        }
    }

    /// Checks what `--slower-than 5ms` showed: every call that slept 10 ms, and only calls the
    /// program found slow. The program's own timing includes the probes' traps, which escapade's
    /// leaves out: under emulation a trap can take milliseconds and make a fast call slow to the
    /// program alone. Without DWARF the calls are told apart by their count only.
    fn check_slow_calls_shown(&self, dwarf: bool) {
        let slept: BTreeSet<i64> = (0..TAIL_CALLS as i64).step_by(7).collect();
        let events = self.events();
        let returns = events.iter().filter(|e| e["type"] == "return");
        let durations: Vec<u64> = returns
            .map(|r| r["duration_ns"].as_u64().unwrap())
            .collect();
        assert!(durations.iter().all(|&ns| ns >= 5_000_000), "{durations:?}");
        let entries = events.iter().filter(|e| e["type"] == "entry").count();
        assert_eq!(
            entries,
            durations.len(),
            "an entry and a return per call shown"
        );
        let fits = slept.len() <= entries && entries <= self.slow.len();
        assert!(
            fits,
            "{entries} shown, {slept:?} slept, {:?} slow",
            self.slow
        );
        if dwarf {
            let shown = self.shown();
            assert!(slept.is_subset(&shown), "{shown:?} lacks some of {slept:?}");
            assert!(
                shown.is_subset(&self.slow),
                "{shown:?}, slow: {:?}",
                self.slow
            );
        }
    }

    fn events(&self) -> Vec<Value> {
        json_lines(&self.stdout)
    }

    /// The argument of each call whose entry was shown.
    fn shown(&self) -> BTreeSet<i64> {
        let entries = self.events().into_iter().filter(|e| e["type"] == "entry");
        entries
            .map(|e| {
                arg(&e["args"], "i").unwrap()["value"]["value"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    }

    /// Every call was counted and timed in the kernel, whatever was shown.
    fn check_summary(&self, returns: u64) {
        let events = self.events();
        let work = summary_of(&events, "main.work");
        assert_eq!(work["entries"], TAIL_CALLS, "{work}");
        assert_eq!(work["returns"], returns, "{work}");
        let histogram = work["latency_log2_ns"].as_array().unwrap();
        let timed: u64 = histogram.iter().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(timed, returns, "{work}");
    }
}

#[test]
fn trace_prints_a_line_per_entry_and_return() {
    let tail = Tail::run(&program("tail"), &[]);
    let lines = |arrow: &str| tail.stdout.lines().filter(|l| l.contains(arrow)).count();
    assert_eq!(lines(" -> main.work("), 100, "{}", tail.stdout);
    assert_eq!(lines(" <- main.work in "), 100, "{}", tail.stdout);
}

#[test]
fn trace_entries_only_shows_every_entry_and_no_return() {
    let tail = Tail::run(&program("tail"), &["--json", "--entries-only"]);
    assert_eq!(tail.shown(), (0..TAIL_CALLS as i64).collect());
    assert!(tail.events().iter().all(|e| e["type"] != "return"));
    tail.check_summary(0);
}

#[test]
fn trace_quiet_counts_and_times_every_call_in_the_kernel() {
    let tail = Tail::run(&program("tail"), &["--json", "--quiet"]);
    assert_eq!(tail.events().len(), 1, "only the summary: {}", tail.stdout);
    tail.check_summary(TAIL_CALLS);
}

#[test]
fn trace_slower_than_shows_the_slow_calls_only() {
    let tail = Tail::run(&program("tail"), &["--json", "--slower-than", "5ms"]);
    tail.check_slow_calls_shown(true);
    tail.check_summary(TAIL_CALLS);
}

#[test]
fn trace_errors_shows_the_failed_calls_only() {
    let tail = Tail::run(&program("tail"), &["--json", "--errors"]);
    assert!(!tail.failed.is_empty());
    assert_eq!(tail.shown(), tail.failed);
    tail.check_summary(TAIL_CALLS);
}

/// Durations need no DWARF nor symbol table: a stripped copy's slow calls are captured the same.
#[test]
fn trace_of_a_stripped_copy_captures_its_slow_calls() {
    let stripped = common::stripped_copy(&program("tail"), common::Strip::Strip, "kernels");
    let tail = Tail::run(&stripped, &["--json", "--slower-than", "5ms"]);
    tail.check_slow_calls_shown(false);
    tail.check_summary(TAIL_CALLS);
}

/// `--returns sampled`: calls through func values are seen on the RETs in the windows and
/// counted as unobserved between them; direct calls are all seen at their return sites. The
/// windows need `uprobe_multi` links: without them escapade says so.
#[test]
fn trace_returns_sampled_sees_indirect_calls_in_windows() {
    let bin = program("returns");
    // About 3.5 s of calls: the 2 s period's window of 40 % opens once or twice.
    let mut target = Target::start(&bin, &["300", "10"]);
    let pid = target.pid.to_string();
    let args = [
        "trace",
        "--pid",
        &pid,
        "--json",
        "--returns",
        "sampled=40%",
        "main.double",
    ];
    if !has_uprobe_multi() {
        let refused = common::escapade(&args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("uprobe_multi"), "{stderr}");
        return;
    }
    let escapade = Escapade::attach(&args);
    target.go();
    let counts = loop {
        let line = target.read_lines(1).concat();
        if let Some(counts) = line.strip_prefix("counts ") {
            break serde_json::from_str::<Value>(counts).unwrap();
        }
    };
    target.go();
    target.finish();
    let events = escapade.finish();
    let count = |name: &str| counts[name].as_u64().unwrap();
    let (direct, indirect) = (count("double_direct"), count("double_func_value"));
    let double = summary_of(&events, "main.double");
    let n = |k: &str| double[k].as_u64().unwrap();
    assert_eq!(n("entries"), direct + indirect, "{double}");
    assert_eq!(n("returns_at_return_site"), direct, "{double}");
    assert_eq!(n("returns_at_ret") + n("unobserved"), indirect, "{double}");
    assert!(n("returns_at_ret") > 0 && n("unobserved") > 0, "{double}");
}

/// `params` on a function given a pointer into each region, and `--events`, a line per call,
/// agreeing with the rows.
#[test]
fn params_tells_where_each_pointer_pointed() {
    let bin = program("args");
    let expected = [
        ("heap", "pointee_heap"),
        ("stack", "pointee_stack"),
        ("bss", "pointee_global"),
        ("data", "pointee_global"),
        ("none", "nil"),
    ];
    for options in [&[][..], &["--events"][..]] {
        let mut target = Target::start(&bin, &[]);
        let pid = target.pid.to_string();
        let args = [&["params", "--pid", &pid, "--json"][..], options].concat();
        let escapade = Escapade::attach(&[&args[..], &["main.TracedPointers"]].concat());
        target.go();
        target.read_lines(ARGS_CALLS);
        // Moves to the heap are checked by reading the process after the call.
        std::thread::sleep(Duration::from_millis(500));
        target.go();
        target.finish();
        let lines = escapade.finish();
        for (param, verdict) in expected {
            let row = lines
                .iter()
                .find(|l| l["type"] == "param" && l["param"] == param)
                .unwrap_or_else(|| panic!("{options:?}: no row for {param} in {lines:?}"));
            assert_eq!(row["verdict"], verdict, "{options:?}: {row}");
            assert_eq!(row["calls"], 1, "{options:?}: {row}");
        }
        let calls = lines.iter().filter(|l| l["type"] == "call").count();
        assert_eq!(
            calls,
            options.len(),
            "{options:?}: a call line with --events only"
        );
    }
}

/// Sampled `allocs` with every object sampled: per site, the objects escapade saw allocated
/// and freed are those of the runtime's own heap profile.
#[test]
fn allocs_sampled_matches_the_runtimes_memprofile() {
    common::memprofile::assert_sites_match(&common::memprofile::sampled_run(&program("profile")));
}

/// `allocs --exact`: every object allocated under `main.phase`, as `runtime.MemStats` counted
/// them, and the goroutines started.
#[test]
fn allocs_exact_counts_the_runtimes_mallocs() {
    let mut target = Target::start(&program("allocs"), &[]);
    let pid = target.pid.to_string();
    let escapade = Escapade::attach(&["allocs", "--pid", &pid, "--exact", "--json"]);
    target.go();
    let mallocs = target.read_count("mallocs");
    target.read_lines(6);
    let gcs = target.read_count("gcs");
    target.go();
    target.finish();
    let result = escapade.finish().pop().unwrap();
    assert_eq!(result["lost"], 0);
    let report = &result["report"];
    assert_eq!(report["gc_cycles"], gcs);
    let in_phase = |s: &&Value| s["frames"].to_string().contains("\"main.phase\"");
    let stacks = report["stacks"].as_array().unwrap();
    let counted: u64 = stacks
        .iter()
        .filter(in_phase)
        .map(|s| s["objects"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, mallocs, "under main.phase vs MemStats.Mallocs");
}

/// `hot` on a call nested in another: the inner call's parameters live a third of the outer's
/// lifetime, as the program spins 10 ms of 30.
#[test]
fn hot_overlaps_nested_calls_by_their_durations() {
    let mut target = Target::start(&program("hot"), &["nested", "4"]);
    let pid = target.pid.to_string();
    let args = [
        "hot",
        "--pid",
        &pid,
        "--json",
        "--duration",
        "3s",
        "main.outer",
        "main.inner",
    ];
    let escapade = Escapade::attach(&args);
    target.go();
    let lines = escapade.finish();
    assert!(target.read_count("done") > 0);
    target.go();
    target.finish();
    let path = |path: &[&str]| {
        let row = lines
            .iter()
            .find(|l| l["type"] == "path" && l["path"] == serde_json::json!(path));
        row.unwrap_or_else(|| panic!("no path {path:?} in {lines:?}"))
            .clone()
    };
    let nested = path(&["main.outer", "main.inner"]);
    assert!(nested["occurrences"].as_u64().unwrap() > 20, "{nested}");
    let plo = nested["plo"].as_f64().unwrap();
    assert!((plo - 1.0 / 3.0).abs() < 0.05, "outer > inner: {nested}");
    assert_eq!(path(&["main.outer"])["plo"], 1.0);
}

/// `record`, then `report` of the file alone prints what `record` printed live, and
/// `export --pprof` writes a profile `go tool pprof` reads, with every call.
#[test]
fn record_report_and_export_agree_with_the_program() {
    let dir = temp_dir("kernels-record");
    let (file, profile) = (dir.join("run.esc"), dir.join("run.pb.gz"));
    let (file, profile) = (file.to_str().unwrap(), profile.to_str().unwrap());
    let mut target = Target::start(&program("record"), &[]);
    let pid = target.pid.to_string();
    let escapade = Escapade::attach(&[
        "record", "--pid", &pid, "-o", file, "--json", "--allocs", "--exact", "main.add",
    ]);
    target.go();
    let sum = target.read_count("sum");
    target.read_count("gcs");
    target.go();
    target.finish();
    let live = escapade.finish();
    assert_eq!(summary_of(&live, "main.add")["entries"], 300);

    let offline = json_lines(&common::escapade_ok(&["report", file, "--quiet", "--json"]));
    assert_eq!(offline, live, "report vs record's live summary");
    let calls = json_lines(&common::escapade_ok(&["report", file, "--json"]));
    let returns: Vec<&Value> = calls.iter().filter(|l| l["type"] == "return").collect();
    assert_eq!(returns.len(), 300);
    assert_eq!(
        returns[299]["results"][0]["value"]["value"], sum,
        "the last add's result"
    );

    common::escapade_ok(&["export", file, "--pprof", profile]);
    let top = common::go_tool(&go(), &["pprof", "-top", "-sample_index=calls", profile]);
    let add = top.lines().find(|l| l.trim_end().ends_with(" main.add"));
    let add = add.unwrap_or_else(|| panic!("no main.add in\n{top}"));
    assert_eq!(add.split_whitespace().next(), Some("300"), "{top}");
}

/// Launch mode: the probes are in place before the program's first instruction, so its init
/// function's calls are counted too, and escapade exits with the program's status.
#[test]
fn launch_counts_from_the_first_call_and_exits_with_the_status() {
    let out = Command::new(env!("CARGO_BIN_EXE_escapade"))
        .args(["trace", "--quiet", "--json", "main.work", "--"])
        .arg(program("launch"))
        .arg("3")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let said = stdout.lines().find_map(|l| l.strip_prefix("calls "));
    assert_eq!(said, Some("1003"), "{stdout}");
    let summary: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    let summary = json_lines(&summary.join("\n"));
    let work = summary_of(&summary, "main.work");
    assert_eq!(
        (&work["entries"], &work["returns"]),
        (&1003.into(), &1003.into()),
        "{work}"
    );
}

/// The agent with a counting target, a recording one, and one that counts calls only (with one
/// set of probes in its file for every process), each program run twice: the counts go on
/// across the restart, and the recordings hold every call.
#[test]
fn agent_counts_and_records_across_a_restart() {
    let dir = temp_dir("kernels-agent");
    let go = go();
    let recordings = dir.join("recordings");
    let config = format!(
        "{}{}{}",
        target_config("counted", &dir.join("counted"), "allocs = \"exact\"\n"),
        target_config("every", &dir.join("every"), "allocs = \"off\"\n"),
        target_config(
            "recorded",
            &dir.join("recorded"),
            &format!(
                "allocs = \"off\"\nrecord = {{ dir = \"{}\" }}\n",
                recordings.display()
            ),
        ),
    );
    let agent = Agent::start(&dir, &config);
    for name in ["counted", "every", "recorded"] {
        let bin = install(&dir, name, &go, &[]);
        let mut total = 0;
        for n in [300, 301] {
            let (ran, _) = run_traced(&agent, name, &bin, n);
            assert_eq!(ran.calls, n);
            total += n;
            let series =
                format!("escapade_calls_total{{target=\"{name}\",function=\"main.work\"}}");
            let seen = wait_until(common::patience(20), "the calls counted", || {
                agent.metric(&series).filter(|&v| v == total as f64)
            });
            assert_eq!(seen, total as f64, "{name}");
        }
        if name == "counted" {
            let site =
                "escapade_alloc_objects_total{target=\"counted\",site=\"main.work (agent.go:27)\"}";
            assert_eq!(agent.metric(site), Some(total as f64));
        }
    }
    assert_eq!(agent.metric("escapade_events_dropped_total"), Some(0.0));
    drop(agent);
    let recorded: usize = std::fs::read_dir(&recordings)
        .unwrap()
        .flatten()
        .map(|file| {
            let report = common::escapade_ok(&["report", file.path().to_str().unwrap(), "--json"]);
            let entries = json_lines(&report)
                .into_iter()
                .filter(|l| l["type"] == "entry");
            entries.count()
        })
        .sum();
    assert_eq!(recorded, 300 + 301, "calls in the recordings");
}

/// `escapade doctor` tells the truth about the kernel it runs on: its release, every command
/// working (with the perf-event fallback where `uprobe_multi` links are missing, as on 6.1),
/// and what it says about `uprobe_multi` agreeing with the release.
#[test]
fn doctor_tells_what_this_kernel_has() {
    let out = Command::new(env!("CARGO_BIN_EXE_escapade"))
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        panic!("not JSON ({e}): {stdout}\n{stderr}")
    });
    assert!(out.status.success(), "{report:#}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(report["kernel"], release.trim());
    let multi = has_uprobe_multi();
    assert_eq!(
        report["features"]["uprobe_multi"]["present"], multi,
        "{report:#}"
    );
    let links = if multi { "uprobe_multi" } else { "perf_events" };
    assert_eq!(report["uprobe_links"], links, "{report:#}");
    for (command, verdict) in report["commands"].as_object().unwrap() {
        let expected = if multi {
            "works"
        } else {
            "works_with_fallback"
        };
        assert_eq!(verdict["verdict"], expected, "{command}: {report:#}");
    }
}
