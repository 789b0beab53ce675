//! `escapade trace` against real Go programs: what it decodes from the probes must equal what
//! the program itself printed about the same calls.

mod common;

use serde_json::Value;

use common::{Escapade, Target, arg, compare};

#[test]
fn decodes_every_kind_as_the_program_prints_it() {
    for go in common::toolchains() {
        for flags in [&[][..], &["-buildmode=pie"][..]] {
            eprintln!("== {} {flags:?}", go.version);
            let bin = common::build(&go, "args", flags);
            check_args_program(&bin);
        }
    }
}

/// Traced calls `tests/go/args.go` makes.
const CALLS: usize = 12;

fn check_args_program(bin: &std::path::Path) {
    let mut target = Target::start(bin, &[]);
    let pid = target.pid.to_string();
    let mut escapade = Escapade::attach(&[
        "trace",
        "--pid",
        &pid,
        "--json",
        "--capture-strings",
        "64",
        "main.*Traced*",
    ]);
    target.go();
    let expected = common::json_lines(&target.read_lines(CALLS).concat());
    // The program stays alive until escapade has decoded every call, since decoding reads
    // run-time data (itabs) from the process.
    escapade.wait_for(2 * CALLS, |l| {
        l.contains(r#""type":"entry""#) || l.contains(r#""type":"return""#)
    });
    target.go();
    target.finish();
    let events = escapade.finish();

    assert_eq!(expected.len(), CALLS);
    for call in &expected {
        let function = call["function"].as_str().unwrap();
        let (entries, returns) = (
            of(&events, "entry", function),
            of(&events, "return", function),
        );
        let declared = |e: &Value, list: &str| e[list].as_array().unwrap().len();
        assert_eq!(
            (entries.len(), returns.len()),
            (1, 1),
            "{function}: one entry, one return"
        );
        let (entry, ret) = (entries[0], returns[0]);
        // Each result kind, read at the caller's return site.
        let counted = summary_of(&events, function);
        assert_eq!(counted["returns_at_return_site"], 1, "{counted}");
        assert_eq!(entry["goid"], call["goid"], "{function}: goroutine id");
        assert_eq!(
            entry["caller"]["function"], "main.main",
            "{function}: caller"
        );
        assert!(
            entry["caller"]["file"]
                .as_str()
                .unwrap()
                .ends_with("args.go")
        );
        assert!(
            ret["duration_ns"].as_u64().is_some(),
            "{function}: return paired with entry"
        );
        let printed = |list: &str| call[list].as_object().unwrap().len();
        if function != "main.TracedFloats" {
            assert_eq!(
                declared(entry, "args"),
                printed("args"),
                "{function}: parameter count"
            );
        }
        assert_eq!(
            declared(ret, "results"),
            printed("results"),
            "{function}: result count"
        );

        for (what, printed, decoded) in [
            ("args", &call["args"], &entry["args"]),
            ("results", &call["results"], &ret["results"]),
        ] {
            for (name, want) in printed.as_object().unwrap() {
                if function == "main.TracedFloats" && what == "results" {
                    continue; // a float result sits in X0: checked below
                }
                let got = arg(decoded, name)
                    .unwrap_or_else(|| panic!("{function}: no {what} {name} in {decoded}"));
                compare(&format!("{function} {name}"), want, &got["value"]);
            }
        }
    }

    let entry = |f: &str| {
        events
            .iter()
            .find(|e| e["type"] == "entry" && e["function"] == f)
            .unwrap()
            .clone()
    };
    // Where pointers point, as the program arranged it.
    let pointers = entry("main.TracedPointers");
    for (name, region) in [
        ("heap", "heap"),
        ("stack", "stack"),
        ("bss", "bss"),
        ("data", "data"),
        ("none", "nil"),
    ] {
        assert_eq!(
            arg(&pointers["args"], name).unwrap()["value"]["region"],
            region,
            "{name}"
        );
    }
    // Floats are located but not readable: pt_regs has no XMM registers.
    let floats = entry("main.TracedFloats");
    for (name, reg) in [("x", "X0"), ("y", "X1")] {
        let a = arg(&floats["args"], name).unwrap();
        assert_eq!(a["location"], reg);
        assert_eq!(a["value"]["kind"], "unreadable");
        assert!(a["value"]["reason"].as_str().unwrap().contains(reg));
    }
    assert_eq!(arg(&floats["args"], "j").unwrap()["location"], "RBX");
    // Stack-passed words and a struct too big for registers.
    let many = entry("main.TracedMany");
    assert_eq!(arg(&many["args"], "i").unwrap()["location"], "R11");
    assert_eq!(arg(&many["args"], "j").unwrap()["location"], "stack+0");
    assert_eq!(arg(&many["args"], "k").unwrap()["location"], "stack+8");
    assert_eq!(
        arg(&entry("main.TracedBig")["args"], "big").unwrap()["location"],
        "stack+0"
    );
    assert_eq!(
        arg(&entry("main.TracedStructs")["args"], "p").unwrap()["location"],
        "RAX+RBX"
    );

    let summary = events
        .iter()
        .find(|e| e["type"] == "summary")
        .expect("a summary line");
    assert_eq!(summary["dropped"], 0);
    assert_eq!(summary["unmatched_returns"], 0);
    assert_eq!(summary["in_flight"], 0);
    assert_eq!(summary["ended"], "target_exited");
}

/// `--entries-only` decodes arguments as usual and puts no probe on any `RET`.
#[test]
fn entries_only_decodes_arguments_without_return_probes() {
    let go = &common::toolchains()[0];
    let bin = common::build(go, "args", &[]);
    let mut target = Target::start(&bin, &[]);
    let pid = target.pid.to_string();
    let mut escapade = Escapade::attach(&[
        "trace",
        "--pid",
        &pid,
        "--json",
        "--entries-only",
        "main.TracedMany",
    ]);
    target.go();
    let printed = common::json_lines(&target.read_lines(CALLS).concat());
    escapade.wait_for(1, |l| l.contains(r#""type":"entry""#));
    target.go();
    target.finish();
    let events = escapade.finish();
    assert!(
        events.iter().all(|e| e["type"] != "return"),
        "no return events"
    );
    let call = printed
        .iter()
        .find(|c| c["function"] == "main.TracedMany")
        .unwrap();
    let entry = events.iter().find(|e| e["type"] == "entry").unwrap();
    for (name, want) in call["args"].as_object().unwrap() {
        compare(
            &format!("TracedMany {name}"),
            want,
            &arg(&entry["args"], name).unwrap()["value"],
        );
    }
    let summary = events.last().unwrap();
    assert_eq!(summary["functions"][0]["return_probes"], 0, "{summary}");
    assert_eq!(summary["functions"][0]["entries"], 1, "{summary}");
}

/// One function per prologue shape: every call yields exactly one entry and one return, the
/// values decode as the program printed them, and each probe sits where the placement says.
#[test]
fn every_prologue_shape_gives_one_entry_and_one_return_per_call() {
    for go in common::toolchains() {
        let bin = common::build(&go, "shapes", &[]);
        for placement in ["fast", "callsites"] {
            eprintln!("== {} --placement {placement}", go.version);
            check_shapes(&bin, placement, Links::UprobeMulti);
        }
    }
}

/// Kernels before 6.6 have no `uprobe_multi` links; escapade then attaches one perf event per
/// uprobe (slower to detach), and sees the same calls.
#[test]
fn perf_event_uprobes_see_the_same_calls() {
    for go in common::toolchains() {
        let bin = common::build(&go, "shapes", &[]);
        eprintln!("== {}", go.version);
        check_shapes(&bin, "fast", Links::PerfEvents);
    }
}

/// How escapade holds its uprobes.
#[derive(PartialEq)]
enum Links {
    /// One `uprobe_multi` link per kind of probe, where the kernel has them (6.6+).
    UprobeMulti,
    /// One perf event per uprobe, forced with `ESCAPADE_PERF_EVENT_UPROBES`.
    PerfEvents,
}

fn check_shapes(bin: &std::path::Path, placement: &str, links: Links) {
    let functions = [
        "main.small",
        "main.large",
        "main.huge",
        "main.leaf",
        "main.(*calc).method",
        "main.makeClosure.func1",
        "main.gen[go.shape.int]",
        "main.deep",
    ];
    let mut target = Target::start(bin, &[]);
    let pid = target.pid.to_string();
    let mut args = vec!["trace", "--pid", &pid, "--json", "--placement", placement];
    args.extend(functions);
    let env: &[(&str, &str)] = match links {
        Links::UprobeMulti => &[],
        Links::PerfEvents => &[("ESCAPADE_PERF_EVENT_UPROBES", "1")],
    };
    let mut escapade = Escapade::attach_with_env(&args, env);
    // An entry and a return probe for each of the 8 functions, at least.
    let (multi, perf) = (
        escapade.bpf_links("uprobe_multi"),
        escapade.bpf_links("perf"),
    );
    match links {
        Links::UprobeMulti => assert!(multi >= 2 && perf == 0, "{multi} {perf}"),
        Links::PerfEvents => assert!(multi == 0 && perf >= 16, "{multi} {perf}"),
    }
    target.go();
    // 3 rounds of 7 functions, then deep(100) which prints once but runs 101 calls.
    let printed = common::json_lines(&target.read_lines(3 * 7 + 1).concat());
    let deep_calls = 101;
    escapade.wait_for(2 * (3 * 7 + deep_calls), |l| {
        l.contains(r#""type":"entry""#) || l.contains(r#""type":"return""#)
    });
    target.go();
    target.finish();
    let events = escapade.finish();

    for function in functions {
        let calls: Vec<&Value> = printed
            .iter()
            .filter(|c| c["function"] == function)
            .collect();
        let (entries, returns) = (
            of(&events, "entry", function),
            of(&events, "return", function),
        );
        let expected = if function == "main.deep" {
            deep_calls
        } else {
            calls.len()
        };
        assert_eq!(entries.len(), expected, "{function} ({placement}): entries");
        assert_eq!(returns.len(), expected, "{function} ({placement}): returns");
        // The summary's counts are the kernel's, which pairs calls the same way.
        let counted = summary_of(&events, function);
        assert_eq!(counted["entries"], expected, "{function}: {counted}");
        assert_eq!(counted["returns"], expected, "{function}: {counted}");
        // Returns at the caller's return site wherever the call is direct and its result is
        // not consumed at once: the closure is called through a func value, and deep's own
        // recursive calls add to its result right after returning.
        let by_mechanism = match function {
            "main.makeClosure.func1" => (0, expected),
            "main.deep" => (1, expected - 1),
            _ => (expected, 0),
        };
        assert_eq!(
            (
                counted["returns_at_return_site"].as_u64().unwrap() as usize,
                counted["returns_at_ret"].as_u64().unwrap() as usize
            ),
            by_mechanism,
            "{function} ({placement}): {counted}"
        );
        if function == "main.deep" {
            // The outermost call is the first entry and the last return.
            compare(
                "main.deep a",
                &calls[0]["args"]["a"],
                &arg(&entries[0]["args"], "n").unwrap()["value"],
            );
            compare(
                "main.deep r",
                &calls[0]["results"]["~r0"],
                &arg(&returns[expected - 1]["results"], "~r0").unwrap()["value"],
            );
            continue;
        }
        for (call, (entry, ret)) in calls.iter().zip(entries.iter().zip(&returns)) {
            for name in ["a", "b"] {
                let got = arg(&entry["args"], name).unwrap_or_else(|| panic!("{function}: {name}"));
                compare(
                    &format!("{function} {name}"),
                    &call["args"][name],
                    &got["value"],
                );
            }
            let got = arg(&ret["results"], "~r0").unwrap();
            compare(
                &format!("{function} ~r0"),
                &call["results"]["~r0"],
                &got["value"],
            );
            assert!(ret["duration_ns"].as_u64().is_some(), "{function}: paired");
        }
    }

    let summary = events
        .iter()
        .find(|e| e["type"] == "summary")
        .expect("a summary");
    assert_eq!(summary["dropped"], 0);
    assert_eq!(summary["unmatched_returns"], 0, "{summary}");
    assert_eq!(summary["unwound"], 0, "{summary}");
    assert!(
        summary["morestack_retries"].as_u64().unwrap() > 0,
        "deep never grew its stack"
    );
    for f in summary["functions"].as_array().unwrap() {
        let probe = f["entry_probe"].as_str().unwrap();
        let want = match (f["function"].as_str().unwrap(), placement) {
            ("main.leaf", "fast") => "slow: first instruction",
            ("main.leaf", _) => "direct call sites",
            _ => "fast: stack-check JBE",
        };
        assert!(probe.starts_with(want) || probe.contains(want), "{f}");
    }
}

/// The events of one kind (`entry`, `return`) of one function.
/// The summary's line for `function`.
fn summary_of<'a>(events: &'a [Value], function: &str) -> &'a Value {
    events
        .iter()
        .filter(|e| e["type"] == "summary")
        .flat_map(|s| s["functions"].as_array().unwrap())
        .find(|f| f["function"] == function)
        .unwrap_or_else(|| panic!("no summary line for {function}"))
}

fn of<'a>(events: &'a [Value], kind: &str, function: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["function"] == function)
        .collect()
}

/// A pointer into heap memory the runtime mapped after escapade attached is still `heap`:
/// the process's mappings as read at attach do not have it.
#[test]
fn heap_grown_after_attach_is_heap() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        let bin = common::build(&go, "grow", &[]);
        let mut target = Target::start(&bin, &[]);
        let pid = target.pid.to_string();
        let mut escapade = Escapade::attach(&["trace", "--pid", &pid, "--json", "main.touch"]);
        target.go();
        let addr = target.read_count("addr");
        escapade.wait_for(1, |l| l.contains(r#""type":"entry""#));
        target.go();
        target.finish();
        let events = escapade.finish();
        let entry = events.iter().find(|e| e["type"] == "entry").unwrap();
        let value = &entry["args"][0]["value"];
        assert_eq!(value["addr"], addr, "{entry}");
        assert_eq!(value["region"], "heap", "{entry}");
    }
}

/// A sink slower than the probes (every call of a function called in a tight loop, decoded
/// into JSON lines by this debug build) does not keep escapade from stopping at its deadline:
/// it stops, and says how many events it could not take.
#[test]
fn a_sink_slower_than_the_probes_still_stops_at_its_deadline() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let go = common::toolchains().pop().unwrap();
    let bin = common::build(&go, "agent", &[]);
    let mut target = Target::start(&bin, &["2000000000"]);
    let pid = target.pid.to_string();
    let escapade = Command::new(env!("CARGO_BIN_EXE_escapade"))
        .args([
            "trace",
            "--pid",
            &pid,
            "--json",
            "--duration",
            "3s",
            "main.work",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    target.go();
    let out = escapade.wait_with_output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("events were lost"),
        "the sink kept up, so this tests nothing: {stderr}"
    );
    // Before the fix it ran on for over a minute, one drain after another.
    assert!(took < Duration::from_secs(30), "stopped after {took:?}");
    target.child.kill().unwrap();
    target.child.wait().unwrap();
}

/// The kernel counts and times every call, with no event per call under `--quiet`: the counts
/// equal the program's rounds, and the log2 latency histogram holds each function's calls
/// where their known durations put them: `main.outer` spins 30 ms in all, `main.inner` 10 ms
/// (2^24 <= 30 ms < 2^25 ns, 2^23 <= 10 ms < 2^24 ns). No call takes less; a busy machine may
/// deschedule a spinning thread past the end of its spin, so the median may be a bucket up.
#[test]
fn quiet_counts_and_times_every_call_in_the_kernel() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        let bin = common::build(&go, "hot", &[]);
        let mut target = Target::start(&bin, &["nested", "2"]);
        let pid = target.pid.to_string();
        let escapade = Escapade::attach(&[
            "trace",
            "--pid",
            &pid,
            "--quiet",
            "--json",
            "main.outer",
            "main.inner",
        ]);
        target.go();
        let rounds = target.read_count("done");
        target.go();
        target.finish();
        let lines = escapade.finish();
        let summary = lines
            .iter()
            .find(|l| l["type"] == "summary")
            .expect("a summary");
        assert_eq!(summary["events"], 0, "an event per call: {summary}");
        for (name, below) in [("main.outer", 1u64 << 25), ("main.inner", 1 << 24)] {
            let f = summary["functions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["function"] == name)
                .unwrap();
            assert_eq!(f["entries"], rounds, "{f}");
            assert_eq!(f["returns"], rounds, "{f}");
            let histogram: Vec<u64> = f["latency_log2_ns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
                .collect();
            assert_eq!(histogram.iter().sum::<u64>(), rounds, "{f}");
            let bucket = below.trailing_zeros() as usize - 1;
            assert_eq!(
                histogram[..bucket].iter().sum::<u64>(),
                0,
                "faster than it spins: {f}"
            );
            let p50 = f["p50_below_ns"].as_u64().unwrap();
            assert!(p50 == below || p50 == 2 * below, "{f}");
        }
    }
}

/// When the sink falls behind and the ring buffer drops events, the summary's counts, which
/// the kernel keeps, still equal the program's calls.
#[test]
fn summary_counts_lose_nothing_when_events_are_dropped() {
    use std::io::BufRead as _;
    let go = common::toolchains().pop().unwrap();
    let bin = common::build(&go, "agent", &[]);
    let n: u64 = 1_500_000;
    let mut target = Target::start(&bin, &[&n.to_string()]);
    let pid = target.pid.to_string();
    let (mut escapade, mut stderr) =
        common::spawn_attached(&["trace", "--pid", &pid, "--json", "main.work"]);
    target.go();
    let calls = target.read_count("calls");
    target.finish();
    let stdout = std::io::BufReader::new(escapade.stdout.take().unwrap());
    let last = stdout.lines().map(Result::unwrap).last().unwrap();
    let mut warnings = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut warnings).unwrap();
    assert!(escapade.wait().unwrap().success(), "{warnings}");
    assert!(
        warnings.contains("events were lost"),
        "the sink kept up, so this tests nothing: {warnings}"
    );
    let summary: Value = serde_json::from_str(&last).unwrap();
    let work = &summary["functions"][0];
    assert_eq!(calls, n);
    assert_eq!(work["entries"], n, "{summary}");
    assert_eq!(work["returns"], n, "{summary}");
}

/// With no return probes (`--entries-only`), the kernel counts every entry, however often the
/// same call site calls again at the same depth, and reports none of them as still running.
#[test]
fn entries_only_counts_every_call_in_the_kernel() {
    let go = common::toolchains().pop().unwrap();
    let bin = common::build(&go, "hot", &[]);
    let mut target = Target::start(&bin, &["nested", "1"]);
    let pid = target.pid.to_string();
    let escapade = Escapade::attach(&[
        "trace",
        "--pid",
        &pid,
        "--quiet",
        "--json",
        "--entries-only",
        "main.inner",
    ]);
    target.go();
    let rounds = target.read_count("done");
    target.go();
    target.finish();
    let summary = escapade.finish().pop().expect("a summary");
    let inner = &summary["functions"][0];
    assert!(rounds > 1, "the program ran {rounds} rounds");
    assert_eq!(inner["entries"], rounds, "{summary}");
    assert_eq!(inner["returns"], 0, "{summary}");
    assert_eq!(summary["in_flight"], 0, "{summary}");
}
