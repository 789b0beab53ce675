//! Probes on a recursive function's entry and return sites while 64 goroutines grow and shrink their
//! stacks under constant garbage collection: the target must not crash, and every entry must
//! pair with its return, exactly as many as the program counted.

mod common;

use serde_json::Value;

use common::{Escapade, Target};

/// Seconds of load per Go version; ESCAPADE_STRESS_SECONDS shortens it for local runs.
fn seconds() -> String {
    std::env::var("ESCAPADE_STRESS_SECONDS").unwrap_or_else(|_| "60".into())
}

#[test]
fn deep_recursion_with_stack_growth_and_gc_pairs_every_call() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        let bin = common::build(&go, "stress", &[]);
        let mut target = Target::start(&bin, &[&seconds()]);
        let pid = target.pid.to_string();
        let escapade =
            Escapade::attach(&["trace", "--pid", &pid, "--json", "--quiet", "main.recurse"]);
        target.go();
        let calls = target.read_count("calls");
        assert!(calls > 100_000, "only {calls} calls: the load did not run");
        // Give escapade a moment to drain the last events, then let the program exit.
        std::thread::sleep(std::time::Duration::from_millis(500));
        target.go();
        target.finish();
        let summary = escapade.finish().pop().expect("a summary");
        assert_eq!(summary["type"], "summary");
        let f = &summary["functions"][0];
        assert_eq!(f["function"], "main.recurse");
        assert_eq!(f["fast"], true, "recurse has a stack check: {f}");
        assert_eq!(summary["dropped"], 0, "{summary}");
        assert_eq!(f["entries"], calls, "every call seen at entry: {summary}");
        assert_eq!(f["returns"], calls, "every call seen at return: {summary}");
        assert_eq!(
            (&f["returns_at_return_site"], &f["returns_at_ret"]),
            (&Value::from(calls), &Value::from(0)),
            "every return seen at the caller's return site: {summary}"
        );
        assert_eq!(
            f["paired"], calls,
            "every entry paired with its return: {summary}"
        );
        assert_eq!(summary["unwound"], 0);
        assert_eq!(summary["in_flight"], 0);
        assert!(
            summary["morestack_retries"].as_u64().unwrap() > 0,
            "stacks never grew: {summary}"
        );
    }
}

/// Attaching to a process already busy in the traced function: calls caught mid-flight show as
/// returns without entry, never as entries without return.
#[test]
fn attaching_mid_call_leaves_no_entry_unpaired() {
    let go = &common::toolchains()[0];
    let bin = common::build(go, "stress", &[]);
    let mut target = Target::start(&bin, &["6"]);
    target.go();
    let pid = target.pid.to_string();
    let escapade = Escapade::attach(&[
        "trace",
        "--pid",
        &pid,
        "--json",
        "--quiet",
        "--duration",
        "3s",
        "main.recurse",
    ]);
    let summary = escapade.finish().pop().expect("a summary");
    let f = &summary["functions"][0];
    assert!(f["entries"].as_u64().unwrap() > 10_000, "{summary}");
    assert_eq!(summary["unwound"], 0, "{summary}");
    let still_running = summary["in_flight"].as_u64().unwrap();
    assert_eq!(
        f["entries"].as_u64().unwrap() - f["paired"].as_u64().unwrap(),
        still_running,
        "every entry pairs with a return unless still running at detach: {summary}"
    );
    target.read_lines(1);
    target.go();
    target.finish();
}

/// A CPU-bound goroutine is preempted by signals, and a signal that lands while the kernel
/// single-steps a probed instruction makes it hit the probe again: each call must still count
/// once, with the entry single-stepped (`--placement entry`) or the returns on the RET
/// (`--returns rets`), and with neither.
#[test]
fn preemption_signals_do_not_duplicate_calls() {
    let go = &common::toolchains()[0];
    let bin = common::build(go, "busy", &[]);
    for (placement, returns) in [("fast", "all"), ("entry", "all"), ("fast", "rets")] {
        let mut target = Target::start(&bin, &["4"]);
        let pid = target.pid.to_string();
        let escapade = Escapade::attach(&[
            "trace",
            "--pid",
            &pid,
            "--json",
            "--quiet",
            "--placement",
            placement,
            "--returns",
            returns,
            "main.hot",
        ]);
        target.go();
        let calls = target.read_count("calls");
        target.go();
        target.finish();
        let summary = escapade.finish().pop().expect("a summary");
        let f = &summary["functions"][0];
        assert_eq!(summary["dropped"], 0, "{summary}");
        assert_eq!(f["entries"], calls, "{placement} {returns}: {summary}");
        assert_eq!(f["returns"], calls, "{placement} {returns}: {summary}");
        assert_eq!(f["paired"], calls, "{placement} {returns}: {summary}");
        assert_eq!(summary["unwound"], 0, "{summary}");
        assert_eq!(summary["unmatched_returns"], 0, "{summary}");
    }
}
