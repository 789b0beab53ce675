//! Bad input gets one clear line on stderr and exit status 2, never a panic or a hurt target.

mod common;

use common::Target;

/// Runs escapade, expects failure with one line of stderr containing `want`.
fn fails_with(args: &[&str], want: &str) {
    // Should it attach after all, it stops by itself.
    let args = [args, &["--duration", "5s"]].concat();
    let out = common::escapade(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "escapade {args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("escapade: ") && stderr.contains(want),
        "{args:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Each cause is said once, however many layers pass it on.
    let message = stderr.trim_end();
    let message = message.split(" (hint: ").next().unwrap();
    let causes: Vec<&str> = message.split(": ").collect();
    for pair in causes.windows(2) {
        assert!(!pair[0].ends_with(pair[1]), "said twice: {stderr}");
    }
}

#[test]
fn a_pid_that_is_gone() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id().to_string();
    child.wait().unwrap();
    fails_with(
        &["trace", "--pid", &pid, "main.main"],
        &format!("no process with PID {pid}"),
    );
}

#[test]
fn a_process_that_is_not_go() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    fails_with(&["trace", "--pid", &pid, "main.main"], "is not a Go binary");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn missing_and_inlined_functions_are_named() {
    let go = &common::toolchains()[0];
    let bin = common::build(go, "args", &[]);
    let target = Target::start(&bin, &[]);
    let pid = target.pid.to_string();
    fails_with(
        &["trace", "--pid", &pid, "main.NoSuchFunction"],
        "no function matches \"main.NoSuchFunction\"",
    );
    fails_with(
        &["trace", "--pid", &pid, "main.inlinedHelper"],
        "main.inlinedHelper is inlined at every call site",
    );
    kill(target);
}

#[test]
fn go_older_than_1_21_is_refused() {
    let go = &common::toolchains()[0];
    let bin = common::build(go, "args", &[]);
    // Rewrite the version in the build info, keeping its length: the binary still runs.
    let mut bytes = std::fs::read(&bin).unwrap();
    let version = go.version.as_bytes();
    let old = format!("go1.20{}", &go.version[6..]);
    let mut at = 0;
    while let Some(i) = bytes[at..]
        .windows(version.len())
        .position(|w| w == version)
    {
        at += i;
        bytes[at..at + version.len()].copy_from_slice(old.as_bytes());
    }
    let patched = bin.with_file_name("args-go1.20");
    std::fs::write(&patched, bytes).unwrap();
    std::fs::set_permissions(
        &patched,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let target = Target::start(&patched, &[]);
    let pid = target.pid.to_string();
    fails_with(
        &["trace", "--pid", &pid, "main.main"],
        "escapade needs Go 1.21 or newer",
    );
    kill(target);
}

#[test]
fn without_privileges_the_user_is_told_what_to_grant() {
    let go = &common::toolchains()[0];
    let bin = common::build(go, "args", &[]);
    let target = Target::start(&bin, &[]);
    let pid = target.pid.to_string();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_escapade"))
        .args(["trace", "--pid", &pid, "main.main"])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("run escapade as root"), "{stderr}");
    kill(target);
}

#[test]
fn a_stripped_binary_still_resolves_functions_and_callers() {
    for go in common::toolchains() {
        let bin = common::build(&go, "args", &["-ldflags=-s -w"]);
        let mut target = Target::start(&bin, &[]);
        let pid = target.pid.to_string();
        let mut escapade =
            common::Escapade::attach(&["trace", "--pid", &pid, "--json", "main.TracedMany"]);
        target.go();
        escapade.wait_for(2, |l| l.contains(r#""function":"main.TracedMany""#));
        target.go();
        target.finish();
        let events = escapade.finish();
        let entry = events.iter().find(|e| e["type"] == "entry").unwrap();
        assert_eq!(entry["caller"]["function"], "main.main", "{entry}");
        assert!(entry["caller"]["line"].as_u64().unwrap() > 0);
        assert_eq!(
            entry["args"],
            serde_json::json!([]),
            "no DWARF, no parameter names"
        );
        let summary = events.last().unwrap();
        assert_eq!(summary["functions"][0]["paired"], 1, "{summary}");

        // Parameters without names or types cannot be followed: params says so, and what
        // would help.
        let target = Target::start(&bin, &[]);
        let pid = target.pid.to_string();
        fails_with(
            &["params", "--pid", &pid, "main.TracedMany"],
            "no DWARF (-ldflags=-w, or stripped)",
        );
        fails_with(
            &["params", "--pid", &pid, "main.TracedMany"],
            "--symbols FILE",
        );
        kill(target);
    }
}

fn kill(mut target: Target) {
    target.child.kill().unwrap();
    target.child.wait().unwrap();
}
