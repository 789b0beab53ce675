//! Launch mode: `escapade COMMAND ... -- PROGRAM ARGS` starts the program with the probes in
//! place before its first instruction, and exits with its status.

mod common;

use std::process::Command;

use common::{build, json_lines, toolchains};

#[test]
fn counts_from_the_programs_first_call_and_exits_with_its_status() {
    for go in toolchains() {
        for (flags, status) in [(&[][..], 0), (&["-buildmode=pie"][..], 3)] {
            let bin = build(&go, "launch", flags);
            let out = Command::new(env!("CARGO_BIN_EXE_escapade"))
                .args(["trace", "--quiet", "--json", "main.work", "--"])
                .arg(&bin)
                .arg(status.to_string())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(status), "{}: {stderr}", go.version);
            // The program's own line and escapade's summary share stdout.
            let said: u64 = stdout
                .lines()
                .find_map(|l| l.strip_prefix("calls "))
                .unwrap_or_else(|| panic!("{stdout}"))
                .parse()
                .unwrap();
            let summary = json_lines(
                &stdout
                    .lines()
                    .filter(|l| l.starts_with('{'))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
            .pop()
            .unwrap();
            let work = &summary["functions"][0];
            // Its init function's calls too: the probes were there before any code ran.
            assert_eq!(said, 1003);
            assert_eq!(work["entries"], said, "{}: {summary}", go.version);
            assert_eq!(work["returns"], said, "{}: {summary}", go.version);
        }
    }
}

#[test]
fn a_program_that_cannot_start_or_is_not_go_gets_one_line() {
    let missing = common::escapade(&["trace", "main.work", "--", "/nonexistent/program"]);
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/program"), "{stderr}");

    let not_go = common::escapade(&["trace", "main.work", "--", "/bin/true"]);
    assert_eq!(not_go.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&not_go.stderr);
    assert!(stderr.contains("not a Go binary"), "{stderr}");
}
