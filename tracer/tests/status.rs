//! The status line of long-running commands: on a terminal (a pseudo-terminal made by
//! `script`), once a second on stderr; off a terminal, nothing.

mod common;

use std::process::Command;

use common::{Target, build, toolchains};

/// Runs escapade with `args` under a pseudo-terminal; returns what the terminal showed.
fn on_terminal(args: &[&str]) -> String {
    let command: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_escapade"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect();
    let out = Command::new("script")
        .args([
            "--quiet",
            "--return",
            "--command",
            &command.join(" "),
            "/dev/null",
        ])
        .output()
        .expect("running script (util-linux)");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{shown}");
    shown
}

#[test]
fn long_running_commands_show_a_status_line_on_a_terminal_only() {
    let go = toolchains().pop().unwrap();
    let bin = build(&go, "agent", &[]);
    let mut program = Target::start(&bin, &["10"]);
    let pid = program.pid.to_string();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let recording = dir.join("status.esc");
    let recording = recording.to_str().unwrap();

    let allocs = ["allocs", "--pid", &pid, "--exact", "--duration", "2500ms"];
    let shown = on_terminal(&allocs);
    assert!(shown.contains("\r\x1b[Kescapade: 1s, "), "{shown:?}");
    assert!(shown.contains(" events/s, 0 dropped"), "{shown:?}");

    let record = [
        "record",
        "--pid",
        &pid,
        "-o",
        recording,
        "--duration",
        "2500ms",
        "main.work",
    ];
    let shown = on_terminal(&record);
    assert!(shown.contains("MB written to"), "{shown:?}");
    assert!(shown.contains(recording), "{shown:?}");

    // Off a terminal, and while trace prints its lines on it, nothing extra.
    let off = common::escapade(&allocs);
    assert!(off.status.success());
    assert!(!String::from_utf8_lossy(&off.stderr).contains("events/s"));
    let trace = ["trace", "--pid", &pid, "--duration", "2500ms", "main.work"];
    let shown = on_terminal(&trace);
    assert!(!shown.contains("events/s"), "{shown:?}");
    program.go();
    assert_eq!(program.read_count("calls"), 10);
    program.finish();
}
