//! `escapade allocs --exact` against the Go runtime's own count: the objects escapade counted
//! under `main.phase` must equal the `runtime.MemStats.Mallocs` delta the program measured
//! around that phase, each site must carry its type, the goroutines a `go` statement
//! started must be counted at that statement with their stacks, and each GC cycle must carry
//! the pause and live heap the runtime reports for it. Both modes run on stripped builds
//! (`-ldflags=-s -w`, one of them PIE) too.

mod common;

use serde_json::Value;

use common::memprofile::Sampled;
use common::{Escapade, Target};

#[test]
fn exact_counts_equal_the_runtimes_mallocs() {
    for go in common::toolchains() {
        // Stripped builds read the GC record and goroutine stacks from the per-version
        // layouts and the runtime variables found in machine code.
        for flags in [
            &[][..],
            &["-buildmode=pie"][..],
            &["-ldflags=-s -w"][..],
            &["-buildmode=pie", "-ldflags=-s -w"][..],
        ] {
            eprintln!("== {} {flags:?}", go.version);
            let bin = common::build(&go, "allocs", flags);
            check(&bin, &[]);
            if flags.is_empty() {
                // The same from a stripped copy given back its symbols.
                eprintln!("== {} stripped, --symbols", go.version);
                let stripped = common::stripped_copy(&bin, common::Strip::Strip, "strip");
                check(&stripped, &["--symbols", bin.to_str().unwrap()]);
            }
        }
    }
}

/// `extra`: more arguments for `escapade allocs`.
fn check(bin: &std::path::Path, extra: &[&str]) {
    let mut target = Target::start(bin, &[]);
    let pid = target.pid.to_string();
    let args = ["allocs", "--pid", &pid, "--exact", "--json"];
    let escapade = Escapade::attach(&[&args[..], extra].concat());
    target.go();
    let mallocs = target.read_count("mallocs");
    assert_eq!(target.read_lines(1).concat().trim(), "goroutines 37");
    let starting_stack = target.read_count("starting-stack");
    assert_eq!(target.read_count("deep"), 5);
    // (NumGC, PauseNs, /gc/heap/live:bytes) after each forced collection.
    let forced: Vec<(u64, u64, u64)> = target
        .read_lines(3)
        .iter()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f.len() == 6 && f[0] == "gc", "the program printed {line:?}");
            let n = |i: usize| f[i].parse::<u64>().unwrap();
            (n(1), n(3), n(5))
        })
        .collect();
    let gcs = target.read_count("gcs");
    target.go();
    target.finish();
    let result = escapade.finish().pop().expect("one JSON report");
    assert_eq!(result["type"], "allocs");
    assert_eq!(result["lost"], 0);
    for probe in result["probes"].as_array().unwrap() {
        assert!(
            probe["probe"].as_str().unwrap().starts_with("fast"),
            "{probe}"
        );
    }
    let report = &result["report"];
    assert!(gcs >= 3);
    assert_eq!(
        report["gc_cycles"], gcs,
        "GC cycles vs MemStats.NumGC delta"
    );
    let timeline = report["gc"].as_array().unwrap();
    assert_eq!(timeline.len() as u64, gcs, "{timeline:?}");
    for (number, pause, live) in forced {
        let cycle = timeline
            .iter()
            .find(|c| c["number"] == number)
            .unwrap_or_else(|| panic!("no GC cycle {number} in {timeline:?}"));
        assert_eq!(
            cycle["pause_ns"], pause,
            "cycle {number}: pause vs MemStats.PauseNs"
        );
        assert_eq!(
            cycle["heap_marked_bytes"], live,
            "cycle {number}: marked vs /gc/heap/live:bytes"
        );
    }
    each_cycle_is_its_own(timeline);
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
    // An allocation in an inlined function: its own frame, then its caller's.
    let inlined = site("main.buffer");
    assert_eq!(inlined["objects"], 30, "{inlined}");
    assert!(
        stacks.iter().any(|s| {
            let names: Vec<&str> = s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["function"].as_str().unwrap())
                .collect();
            names
                .windows(2)
                .any(|w| w == ["main.buffer", "main.inlinedBuffers"])
        }),
        "main.buffer inlined into main.inlinedBuffers"
    );
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
    assert_eq!(
        spawned[0]["initial_stack_bytes"], starting_stack,
        "vs /gc/stack/starting-size:bytes"
    );
    let deep = report["goroutines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["site"]["function"] == "main.spawnDeep")
        .unwrap_or_else(|| panic!("no go statement in main.spawnDeep: {report}"));
    assert_eq!(deep["count"], 5);
    // 64 frames of 1 KiB: from 2 KiB, at least five doublings to pass 64 KiB.
    assert!(deep["stack_growths"].as_u64().unwrap() >= 5 * 5, "{deep}");
    let max = deep["max_stack_bytes"].as_u64().unwrap();
    assert!(max > 64 << 10 && max.is_power_of_two(), "{deep}");
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

/// Every GC cycle's record holds its own times and pause: read before the next cycle can start
/// rewriting it.
fn each_cycle_is_its_own(timeline: &[Value]) {
    for cycle in timeline {
        let time = |k: &str| cycle[k].as_u64().unwrap();
        assert!(
            time("start_ns") <= time("mark_ns")
                && time("mark_ns") <= time("mark_termination_ns")
                && time("mark_termination_ns") <= time("end_ns")
                && time("pause_ns") > 0,
            "{cycle}"
        );
    }
}

/// Sampled mode against the runtime's own heap profile: with `--mem-profile-rate 1` every
/// object is sampled, so per site the objects escapade saw allocated and freed must equal
/// `runtime.MemProfile`'s counts; the objects still referenced are reported live, the freed
/// ones with a residency; and the rate is restored when escapade detaches.
#[test]
fn sampled_mode_matches_the_runtimes_memprofile() {
    for go in common::toolchains() {
        // Stripped, MemProfileRate is found in the runtime's machine code.
        for flags in [&[][..], &["-ldflags=-s -w"][..]] {
            eprintln!("== {} {flags:?}", go.version);
            sampled_mode_check(&common::build(&go, "profile", flags));
        }
    }
}

fn sampled_mode_check(bin: &std::path::Path) {
    let sampled = common::memprofile::sampled_run(bin);
    common::memprofile::assert_sites_match(&sampled);
    let Sampled {
        report: result,
        runtime_says,
        boxed,
    } = sampled;
    assert_eq!(result["mem_profile_rate"], 1);
    let sites = result["report"]["sites"].as_array().unwrap();
    for (function, (allocated, freed)) in &runtime_says {
        let site = sites.iter().find(|s| s["site"]["function"] == *function);
        assert_eq!(
            site.unwrap()["live_objects"],
            allocated - freed,
            "{function}: still live"
        );
    }
    // The program forces three collections back to back.
    let timeline = result["report"]["gc"].as_array().unwrap();
    assert!(timeline.len() >= 3, "{timeline:?}");
    each_cycle_is_its_own(timeline);
    // Every object is sampled, so every string boxed is seen boxed.
    let boxing = result["report"]["boxing"].as_array().unwrap();
    let seen: u64 = boxing
        .iter()
        .filter(|b| b["site"]["function"] == "main.boxStrings" && b["via"] == "runtime.convTstring")
        .map(|b| b["objects"].as_u64().unwrap())
        .sum();
    assert_eq!(Some(seen), boxed, "strings boxed: {boxing:?}");
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
