//! `escapade allocs --exact` against the Go runtime's own count: the objects escapade counted
//! under `main.phase` must equal the `runtime.MemStats.Mallocs` delta the program measured
//! around that phase, each site must carry its type, and the goroutines a `go` statement
//! started must be counted at that statement.

mod common;

use serde_json::Value;

use common::{Escapade, Target};

#[test]
fn exact_counts_equal_the_runtimes_mallocs() {
    for go in common::toolchains() {
        for flags in [&[][..], &["-buildmode=pie"][..]] {
            eprintln!("== {} {flags:?}", go.version);
            check(&common::build(&go, "allocs", flags));
        }
    }
}

fn check(bin: &std::path::Path) {
    let mut target = Target::start(bin, &[]);
    let pid = target.pid.to_string();
    let escapade = Escapade::attach(&["allocs", "--pid", &pid, "--exact", "--json"]);
    target.go();
    let mallocs = target.read_count("mallocs");
    assert_eq!(target.read_lines(1).concat().trim(), "goroutines 37");
    let gcs = target.read_count("gcs");
    target.go();
    target.finish();
    let result = escapade.finish().pop().expect("one JSON report");
    assert_eq!(result["type"], "allocs");
    assert_eq!(result["lost"], 0);
    for probe in result["probes"].as_array().unwrap() {
        assert!(
            probe["entry_probe"].as_str().unwrap().starts_with("fast"),
            "{probe}"
        );
    }
    let report = &result["report"];
    assert!(gcs >= 3);
    assert_eq!(
        report["gc_cycles"], gcs,
        "GC cycles vs MemStats.NumGC delta"
    );
    assert_eq!(report["without_stack"], 0, "every allocation has its stack");

    let stacks = report["stacks"].as_array().unwrap();
    let in_phase = |s: &&Value| {
        s["frames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["function"] == "main.phase")
    };
    let counted: u64 = stacks
        .iter()
        .filter(in_phase)
        .map(|s| s["objects"].as_u64().unwrap())
        .sum();
    assert_eq!(
        counted, mallocs,
        "escapade's count under main.phase vs MemStats.Mallocs delta"
    );

    // Each helper is a site, with what it allocated.
    let site = |function: &str| {
        report["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["site"]["function"] == function
                    && s["site"]["file"].as_str().unwrap().ends_with("allocs.go")
            })
            .unwrap_or_else(|| panic!("no site {function} in {report}"))
            .clone()
    };
    let nodes = site("main.newNodes");
    assert_eq!(nodes["objects"], 1000);
    assert_eq!(nodes["types"][0][0], "main.node", "{nodes}");
    let big = site("main.bigBuffers");
    let big_bytes: Vec<u64> = big["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[2].as_u64().unwrap())
        .collect();
    assert!(
        big_bytes[0] >= 50 * (64 << 10),
        "50 buffers of 64 KiB: {big}"
    );

    let spawned: Vec<&Value> = report["goroutines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["function"] == "main.worker")
        .collect();
    assert_eq!(
        spawned.len(),
        1,
        "one go statement starts main.worker: {report}"
    );
    assert_eq!(spawned[0]["count"], 37);
    assert_eq!(spawned[0]["site"]["function"], "main.spawn");
    assert!(
        spawned[0]["site"]["file"]
            .as_str()
            .unwrap()
            .ends_with("allocs.go")
    );

    // Appending to []any boxes each value.
    let boxed = |function: &str, via: &str| -> u64 {
        report["boxing"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["site"]["function"] == function && b["via"] == via)
            .map(|b| b["objects"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        boxed("main.tinyBuffers", "runtime.convTslice"),
        2000,
        "{}",
        report["boxing"]
    );
    assert_eq!(
        boxed("main.strs", "runtime.convTstring"),
        500,
        "{}",
        report["boxing"]
    );
}

/// Sampled mode against the runtime's own heap profile: with `--mem-profile-rate 1` every
/// object is sampled, so per site the objects escapade saw allocated and freed must equal
/// `runtime.MemProfile`'s counts; the objects still referenced are reported live, the freed
/// ones with a residency; and the rate is restored when escapade detaches.
#[test]
fn sampled_mode_matches_the_runtimes_memprofile() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        let bin = common::build(&go, "profile", &[]);
        let mut target = Target::start(&bin, &[]);
        let pid = target.pid.to_string();
        let escapade = Escapade::attach(&[
            "allocs",
            "--pid",
            &pid,
            "--json",
            "--mem-profile-rate",
            "1",
            "--duration",
            "6s",
        ]);
        target.go();
        let mut runtime_says = std::collections::HashMap::<String, (u64, u64)>::new();
        loop {
            let line = target.read_lines(1).concat();
            let line = line.trim();
            if line == "done" {
                break;
            }
            let f: Vec<&str> = line.split(' ').collect();
            assert!(
                f.len() == 6 && f[0] == "site",
                "the program printed {line:?}"
            );
            let counts = runtime_says.entry(f[1].to_string()).or_default();
            counts.0 += f[3].parse::<u64>().unwrap();
            counts.1 += f[5].parse::<u64>().unwrap();
        }
        let lines = escapade.finish();
        target.go();
        assert_eq!(
            target.read_lines(1).concat().trim(),
            "rate 524288",
            "MemProfileRate restored on detach"
        );
        target.go();
        target.finish();

        let result = lines.last().expect("one JSON report");
        assert_eq!(result["mode"], "sampled");
        assert_eq!(result["mem_profile_rate"], 1);
        assert_eq!(result["lost"], 0);
        let sites = result["report"]["sites"].as_array().unwrap();
        for (function, (allocated, freed)) in &runtime_says {
            let site = sites
                .iter()
                .find(|s| s["site"]["function"] == *function)
                .unwrap_or_else(|| panic!("no site {function} in {sites:?}"));
            assert_eq!(
                site["objects"], *allocated,
                "{function}: allocated, vs MemProfile"
            );
            assert_eq!(
                site["freed_objects"], *freed,
                "{function}: freed, vs MemProfile"
            );
            assert_eq!(
                site["live_objects"],
                allocated - freed,
                "{function}: still live"
            );
        }
        assert_eq!(runtime_says["main.keepNodes"], (700, 0));
        assert_eq!(runtime_says["main.makeGarbage"].0, 900);
        let garbage = sites
            .iter()
            .find(|s| s["site"]["function"] == "main.makeGarbage")
            .unwrap();
        assert!(
            garbage["residency"]["median_ns"].as_u64().unwrap() > 0,
            "{garbage}"
        );
    }
}
