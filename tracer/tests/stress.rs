//! Probes on a recursive function's entry and RETs while 64 goroutines grow and shrink their
//! stacks under constant garbage collection: the target must not crash, and every entry must
//! pair with its return, exactly as many as the program counted.

mod common;

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
        let line = target.read_lines(1).concat();
        let calls: u64 = line
            .strip_prefix("calls ")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("the program printed {line:?}"));
        assert!(calls > 100_000, "only {calls} calls: the load did not run");
        // Give escapade a moment to drain the last events, then let the program exit.
        std::thread::sleep(std::time::Duration::from_millis(500));
        target.go();
        target.finish();
        let (status, out) = escapade.finish();
        assert!(status.success(), "escapade failed: {status}");
        let summary = common::json_lines(&out).pop().expect("a summary");
        assert_eq!(summary["type"], "summary");
        let f = &summary["functions"][0];
        assert_eq!(f["function"], "main.recurse");
        assert_eq!(f["fast"], true, "recurse has a stack check: {f}");
        assert_eq!(summary["dropped"], 0, "{summary}");
        assert_eq!(f["entries"], calls, "every call seen at entry: {summary}");
        assert_eq!(f["returns"], calls, "every call seen at return: {summary}");
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
