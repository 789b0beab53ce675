//! `escapade doctor --json` on this machine's kernel (6.18, with every feature escapade uses),
//! and with its fallbacks forced by their environment switches.

use std::process::Command;

/// The report without switches, which two tests read: a run loads every program dozens of
/// times, for seconds.
fn default_report() -> &'static (serde_json::Value, bool) {
    static REPORT: std::sync::OnceLock<(serde_json::Value, bool)> = std::sync::OnceLock::new();
    REPORT.get_or_init(|| doctor(&[]))
}

/// The report, and whether escapade exited 0.
fn doctor(env: &[(&str, &str)]) -> (serde_json::Value, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_escapade"))
        .args(["doctor", "--json"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, out.status.success())
}

fn uname_r() -> String {
    let out = Command::new("uname").arg("-r").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const COMMANDS: [&str; 6] = ["trace", "params", "allocs", "hot", "record", "agent"];

#[test]
fn the_report_names_this_kernel_and_finds_its_features() {
    let (report, _) = default_report();
    assert_eq!(report["kernel"], uname_r());
    let features = &report["features"];
    for feature in [
        "ring_buffer",
        "cookies",
        "uprobes",
        "uprobe_multi",
        "exec_tracepoint",
        "cpu_clock",
        "btf",
    ] {
        assert_eq!(features[feature]["present"], true, "{feature}: {report:#}");
        assert_eq!(features[feature]["used"], true, "{feature}: {report:#}");
    }
    assert_eq!(features["ring_buffer"]["needed"], "required");
    assert_eq!(features["ring_buffer"]["since"], "5.8");
    assert_eq!(features["cookies"]["since"], "5.15");
    assert_eq!(features["uprobe_multi"]["since"], "6.6");
    assert_eq!(features["uprobe_multi"]["needed"], "fallback");
    assert_eq!(features["private_stacks"]["needed"], "no");
    assert_eq!(report["uprobe_links"], "uprobe_multi");
    for capability in ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"] {
        assert_eq!(report["host"]["capabilities"][capability], true);
    }
    for command in COMMANDS {
        let verdict = &report["commands"][command];
        assert!(verdict["verdict"].is_string(), "{command}: {report:#}");
        assert!(
            verdict["fallbacks"].as_array().unwrap().is_empty(),
            "{command} falls back on a kernel with every feature: {verdict:#}"
        );
    }
}

/// Each program of both objects in each configuration the commands load it in; here, every one
/// must load (no call chain over the 512 bytes of stack of kernels without private stacks).
#[test]
fn every_program_loads_and_every_command_works() {
    let (report, success) = default_report();
    let loads = report["programs"].as_array().unwrap();
    let refused: Vec<_> = loads.iter().filter(|l| l["loaded"] != true).collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
    let programs = |object: &str| -> Vec<&str> {
        loads
            .iter()
            .filter(|l| l["object"] == object)
            .map(|l| l["program"].as_str().unwrap())
            .collect()
    };
    for program in [
        "go_entry",
        "go_return",
        "go_allocating",
        "go_allocated",
        "go_empty",
        "go_malloc",
        "go_mprof_malloc",
        "go_free_special",
        "go_gc",
        "go_newproc",
        "go_copystack",
        "cpu_sample",
    ] {
        assert!(programs("probe-ebpf").contains(&program), "{program}");
    }
    assert_eq!(programs("probe-exec"), ["sched_process_exec"]);
    for command in COMMANDS {
        assert_eq!(
            report["commands"][command]["verdict"], "works",
            "{command}: {report:#}"
        );
    }
    assert_eq!(report["ok"], true);
    assert!(*success, "exit status with every command working");
}

#[test]
fn forced_perf_event_uprobes_are_every_commands_fallback() {
    let (report, _) = doctor(&[("ESCAPADE_PERF_EVENT_UPROBES", "1")]);
    let feature = &report["features"]["uprobe_multi"];
    assert_eq!(feature["present"], true);
    assert_eq!(feature["used"], false);
    assert_eq!(feature["detail"], "ESCAPADE_PERF_EVENT_UPROBES is set");
    assert_eq!(report["uprobe_links"], "perf_events");
    for command in COMMANDS {
        let verdict = &report["commands"][command];
        let fallbacks = verdict["fallbacks"].as_array().unwrap();
        assert!(
            fallbacks.iter().any(|f| f["feature"] == "uprobe_multi"
                && f["instead"].as_str().unwrap().contains("perf event")),
            "{command}: {verdict:#}"
        );
    }
    assert_eq!(
        report["commands"]["trace"]["verdict"], "works_with_fallback",
        "{report:#}"
    );
}

#[test]
fn without_the_exec_tracepoint_the_agent_scans_proc() {
    let (report, _) = doctor(&[("ESCAPADE_NO_EXEC_TRACEPOINT", "1")]);
    assert_eq!(report["features"]["exec_tracepoint"]["used"], false);
    let agent = &report["commands"]["agent"];
    let fallbacks = agent["fallbacks"].as_array().unwrap();
    assert!(
        fallbacks.iter().any(|f| f["feature"] == "exec_tracepoint"
            && f["instead"].as_str().unwrap().contains("/proc")),
        "{agent:#}"
    );
    // The other commands never watch execs.
    assert!(
        report["commands"]["trace"]["fallbacks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_text_report_says_the_same() {
    let out = Command::new(env!("CARGO_BIN_EXE_escapade"))
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("kernel {}\n", uname_r())),
        "{text}"
    );
    for line in [
        "BPF ring buffer",
        "uprobe_multi links",
        "commands",
        "  agent ",
    ] {
        assert!(text.contains(line), "{line:?} missing: {text}");
    }
}
