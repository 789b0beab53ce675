//! Tail capture: with `--slower-than` and `--errors` the kernel sends a call's entry and return
//! only when the call was slow or failed, and still counts and times every call. What escapade
//! shows must be exactly the calls `tests/go/tail.go` found slow or failing.

mod common;

use std::collections::BTreeSet;

use serde_json::Value;

use common::{Escapade, Target};

/// Calls `tail.go` makes.
const CALLS: u64 = 100;

struct Captured {
    /// The argument of each call shown (entry and return), in order.
    shown: Vec<i64>,
    /// The calls the program found slow, and those that failed.
    slow: BTreeSet<i64>,
    failed: BTreeSet<i64>,
    events: Vec<Value>,
}

fn capture(bin: &std::path::Path, options: &[&str]) -> Captured {
    let mut target = Target::start(bin, &[]);
    let pid = target.pid.to_string();
    let mut args = vec!["trace", "--pid", &pid, "--json"];
    args.extend(options);
    args.push("main.work");
    let escapade = Escapade::attach(&args);
    target.go();
    let set = |line: String, word: &str| -> BTreeSet<i64> {
        let list = line
            .strip_prefix(word)
            .unwrap_or_else(|| panic!("{line:?}"))
            .trim();
        serde_json::from_str(list).unwrap()
    };
    let slow = set(target.read_lines(1).concat(), "slow ");
    let failed = set(target.read_lines(1).concat(), "failed ");
    // Decoding reads the process, so it stays until escapade has printed the calls.
    std::thread::sleep(std::time::Duration::from_millis(500));
    target.go();
    target.finish();
    let events = escapade.finish();
    let shown = events
        .iter()
        .filter(|e| e["type"] == "entry")
        .map(|e| e["args"][0]["value"]["value"].as_i64().unwrap_or(-1))
        .collect();
    Captured {
        shown,
        slow,
        failed,
        events,
    }
}

impl Captured {
    fn shown(&self) -> BTreeSet<i64> {
        self.shown.iter().copied().collect()
    }

    fn returns(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["type"] == "return")
            .collect()
    }

    /// Every call counted and timed in the kernel, shown or not.
    fn check_counts(&self) {
        let summary = self.events.iter().find(|e| e["type"] == "summary").unwrap();
        let f = &summary["functions"][0];
        assert_eq!(f["entries"], CALLS, "{f}");
        assert_eq!(f["returns"], CALLS, "{f}");
        let histogram: u64 = f["latency_log2_ns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(histogram, CALLS, "{f}");
        assert_eq!(summary["dropped"], 0, "{summary}");
    }
}

#[test]
fn only_slow_or_failing_calls_are_sent_and_every_call_is_counted() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        let bin = common::build(&go, "tail", &[]);

        let slow = capture(&bin, &["--slower-than", "5ms"]);
        assert!(!slow.slow.is_empty());
        assert_eq!(slow.shown(), slow.slow, "--slower-than 5ms");
        assert_eq!(
            slow.shown.len(),
            slow.returns().len(),
            "entry and return each"
        );
        for ret in slow.returns() {
            assert!(ret["duration_ns"].as_u64().unwrap() >= 5_000_000, "{ret}");
        }
        slow.check_counts();

        // The caller keeps only the error's type word (for `err != nil`): at its return site
        // the error shows as discarded, and is decided on by that word.
        let failing = capture(&bin, &["--errors"]);
        assert!(!failing.failed.is_empty());
        assert_eq!(failing.shown(), failing.failed, "--errors");
        for ret in failing.returns() {
            assert_eq!(ret["results"][1]["value"]["kind"], "discarded", "{ret}");
        }
        failing.check_counts();

        // With the RET probed for that call site, the whole error is seen.
        let exact = capture(&bin, &["--errors", "--results", "exact"]);
        assert_eq!(exact.shown(), exact.failed, "--errors --results exact");
        for ret in exact.returns() {
            let err = &ret["results"][1]["value"];
            assert_eq!(err["kind"], "interface", "{ret}");
            assert_eq!(err["type"], "*errors.errorString", "{ret}");
        }
        exact.check_counts();

        let either = capture(&bin, &["--slower-than", "5ms", "--errors"]);
        let union: BTreeSet<i64> = either.slow.union(&either.failed).copied().collect();
        assert_eq!(either.shown(), union, "--slower-than 5ms --errors");
        either.check_counts();
    }
}

/// Durations need no DWARF: a stripped build's slow calls are captured the same.
#[test]
fn slow_calls_of_a_stripped_build_are_captured() {
    let go = &common::toolchains()[0];
    let bin = common::build(go, "tail", &["-ldflags=-s -w"]);
    let slow = capture(&bin, &["--slower-than", "5ms"]);
    assert_eq!(slow.shown.len(), slow.slow.len(), "{:?}", slow.slow);
    slow.check_counts();
}
