//! `escapade params` on real code under load: the functions of Go's own `encoding/json` whose
//! parameters the compiler reports as leaking, traced by PID while the package's benchmarks
//! run. The kernel does the work, so nothing is lost to a full ring buffer, and what it
//! concludes holds against the compiler's escape analysis.

mod common;

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// How long escapade watches the benchmarks.
const WATCH: &str = "8s";

#[test]
fn params_on_encoding_json_lose_nothing() {
    for go in common::toolchains() {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("go")
            .join(&go.version)
            .join("encoding_json");
        std::fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("json.test");
        common::go_in(
            &go,
            &dir,
            &["test", "-c", "-o", "json.test", "encoding/json"],
        );
        let mut leaking = leaking_params(&go, &dir);
        let functions = functions_declared_at(&binary, &mut leaking);
        assert!(
            functions.len() >= 40,
            "{}: only {} functions of encoding/json leak a parameter: {functions:?}",
            go.version,
            functions.len()
        );

        let goroot = PathBuf::from(common::go_in(&go, &dir, &["env", "GOROOT"]).trim());
        // Started by escapade, with the probes in place from its first instruction: every
        // return then has its entry.
        let mut args = vec!["params", "--json", "--duration", WATCH];
        args.extend(functions.iter().map(String::as_str));
        args.extend(["--", binary.to_str().unwrap()]);
        args.extend(["-test.run=^$", "-test.bench=.", "-test.benchtime=300ms"]);
        let mut escapade = Command::new(env!("CARGO_BIN_EXE_escapade"))
            .args(&args)
            // The benchmarks read their inputs from the package's testdata.
            .current_dir(goroot.join("src/encoding/json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = escapade.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
        // The benchmarks print their results on the same stdout.
        let mut json = String::new();
        for line in std::io::BufReader::new(escapade.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if line.starts_with('{') {
                json.push_str(&line);
                json.push('\n');
            }
            if line.contains("params_summary") {
                break;
            }
        }
        // Detached after WATCH, escapade waits for the benchmarks to end: end them.
        let children = format!("/proc/{0}/task/{0}/children", escapade.id());
        for pid in std::fs::read_to_string(children)
            .unwrap_or_default()
            .split_whitespace()
        {
            let _ = Command::new("kill").arg(pid).status();
        }
        let status = escapade.wait().unwrap();
        let stderr = stderr.join().unwrap();
        assert!(
            json.contains("params_summary"),
            "{}: escapade params printed no summary ({status}): {stderr}",
            go.version
        );
        let lines = common::json_lines(&json);
        let summary = lines
            .iter()
            .find(|l| l["type"] == "params_summary")
            .expect("a params summary");
        check_nothing_lost(&go.version, summary);
        check_against_escape_analysis(&go.version, &lines, &leaking);
    }
}

/// Every call counted in the kernel, none sent, none lost, every return paired.
fn check_nothing_lost(version: &str, summary: &Value) {
    let calls: u64 = summary["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["calls"].as_u64().unwrap())
        .sum();
    eprintln!("   {version}: {calls} calls in {WATCH}: {summary}");
    assert!(calls > 50_000, "{version}: only {calls} calls seen");
    for field in ["events", "dropped", "malformed", "read_errors"] {
        assert_eq!(summary[field], 0, "{version}: {field} in {summary}");
    }
    // The probes were there before the program ran: no call was running at attach.
    assert_eq!(
        summary["unmatched_returns"], 0,
        "{version}: returns without entry in {summary}"
    );
}

/// A parameter the compiler says leaks (not just its content) can never point into its
/// caller's stack.
fn check_against_escape_analysis(version: &str, lines: &[Value], leaking: &Leaking) {
    let mut checked = 0;
    for row in lines.iter().filter(|l| l["type"] == "param") {
        let key = (
            row["function"].as_str().unwrap().to_string(),
            row["param"].as_str().unwrap().to_string(),
        );
        if !leaking.whole.contains(&key) || row["pointee"].is_null() {
            continue;
        }
        checked += 1;
        assert_eq!(
            row["pointee"]["stack"], 0,
            "{version}: a leaking parameter pointed into the stack: {row}"
        );
        assert_eq!(
            row["pointee"]["unknown"], 0,
            "{version}: a pointer the kernel could not place: {row}"
        );
    }
    assert!(
        checked >= 10,
        "{version}: only {checked} leaking parameters called"
    );
}

/// What `-gcflags=-m` says of encoding/json's parameters.
#[derive(Default)]
struct Leaking {
    /// (source path, line) of each function declaration with a leaking parameter.
    declared_at: BTreeSet<(String, u32)>,
    /// (source path, line, parameter) for parameters that leak themselves, not only their
    /// content.
    whole_at: BTreeSet<(String, u32, String)>,
    /// The same, by (function, parameter), once the binary says which function is where.
    whole: BTreeSet<(String, String)>,
}

fn leaking_params(go: &common::Go, dir: &Path) -> Leaking {
    // Built again (from the cache) so that the compiler prints its decisions.
    let out = Command::new(&go.bin)
        // With its own packages: since Go 1.27 encoding/json works through encoding/json/v2.
        .args([
            "build",
            "-gcflags=encoding/json/...=-m",
            "-o",
            "/dev/null",
            "encoding/json",
        ])
        .current_dir(dir)
        .env("GOCACHE", common::cache_dir().join("gocache"))
        .env("GOTOOLCHAIN", "local")
        .output()
        .unwrap();
    assert!(out.status.success(), "go build -gcflags=-m encoding/json");
    let mut leaking = Leaking::default();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        // /.../encoding/json/encode.go:571:49: leaking param: v
        let Some((at, what)) = line.split_once(": leaking param") else {
            continue;
        };
        let mut parts = at.rsplitn(3, ':');
        let (_column, line_no, file) = (parts.next(), parts.next(), parts.next());
        let (Some(line_no), Some(file)) = (line_no.and_then(|l| l.parse().ok()), file) else {
            continue;
        };
        let file = source_path(file);
        leaking.declared_at.insert((file.clone(), line_no));
        // ": v" (to the heap), ": v to result ~r0 level=0" (to the caller, whose stack it
        // may be on), or " content: v".
        if let Some(param) = what.strip_prefix(": ")
            && !param.contains(' ')
        {
            leaking.whole_at.insert((file, line_no, param.to_string()));
        }
    }
    leaking
}

/// The encoding/json functions of `binary` declared where a leaking parameter is, by the line
/// of their first instruction (the `func` line); fills `leaking.whole` with their names.
fn functions_declared_at(binary: &Path, leaking: &mut Leaking) -> Vec<String> {
    let go_binary = escapade::tracee::gobin::GoBinary::open(binary, None).unwrap();
    let mut names = Vec::new();
    for f in go_binary.resolve(&["encoding/json*".to_string()]).unwrap() {
        let Some(frame) = go_binary.symbolize(f.entry) else {
            continue;
        };
        let (Some(file), Some(line)) = (frame.file, frame.line) else {
            continue;
        };
        let file = source_path(&file);
        if !leaking.declared_at.contains(&(file.clone(), line)) {
            continue;
        }
        for (_, _, param) in leaking
            .whole_at
            .iter()
            .filter(|(f, l, _)| *f == file && *l == line)
        {
            leaking.whole.insert((f.name.clone(), param.clone()));
        }
        names.push(f.name);
    }
    names
}

/// A source file's path from GOROOT/src on, as the compiler and the line table both name it.
fn source_path(file: &str) -> String {
    file.rsplit_once("/src/")
        .map_or(file, |(_, path)| path)
        .to_string()
}
