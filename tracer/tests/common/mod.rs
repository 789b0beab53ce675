//! Helpers shared by the integration tests: find the Go toolchains `cargo xtask setup` installed
//! and build the Go programs under `tests/go/`.
#![allow(dead_code)] // each test binary uses a different subset

pub mod agent;
pub mod memprofile;
pub mod synthetic;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A Go toolchain installed side by side with the others.
#[derive(Clone, Debug)]
pub struct Go {
    pub version: String,
    pub bin: PathBuf,
}

/// The Go toolchains to test against: `ESCAPADE_GO` (a `:`-separated list of `go` binaries, set
/// by `cargo xtask test`), else every toolchain under the escapade cache.
pub fn toolchains() -> Vec<Go> {
    let bins: Vec<PathBuf> = match std::env::var_os("ESCAPADE_GO") {
        Some(list) => std::env::split_paths(&list).collect(),
        None => {
            let root = cache_dir().join("go");
            let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("go/bin/go"))
                .filter(|p| p.exists())
                .collect();
            found.sort();
            found
        }
    };
    assert!(
        !bins.is_empty(),
        "no Go toolchain found: run `cargo xtask setup` (or set ESCAPADE_GO)"
    );
    bins.into_iter()
        .map(|bin| {
            let out = Command::new(&bin)
                .arg("env")
                .arg("GOVERSION")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} env GOVERSION failed",
                bin.display()
            );
            let version = String::from_utf8(out.stdout).unwrap().trim().to_string();
            Go { version, bin }
        })
        .collect()
}

pub fn cache_dir() -> PathBuf {
    match std::env::var_os("ESCAPADE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/escapade"),
    }
}

/// How long to wait for what takes at most `seconds` here: `ESCAPADE_TEST_SLOWDOWN` times
/// longer in a virtual machine under QEMU's emulation (`cargo xtask vmtest` sets it), where
/// attaching takes minutes.
pub fn patience(seconds: u64) -> std::time::Duration {
    let slowdown = std::env::var("ESCAPADE_TEST_SLOWDOWN").ok();
    let slowdown: u64 = slowdown.and_then(|s| s.parse().ok()).unwrap_or(1);
    std::time::Duration::from_secs(seconds * slowdown)
}

/// Directory of the Go programs used by the tests.
pub fn go_programs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go")
}

/// Builds `tests/go/<name>.go` with `go` and extra `go build` flags; returns the binary's path.
/// Binaries go under the cargo target dir, one directory per Go version and flag set.
pub fn build(go: &Go, name: &str, flags: &[&str]) -> PathBuf {
    let tag: String = flags
        .join("_")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("go")
        .join(&go.version)
        .join(tag);
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(name);
    let src = go_programs().join(format!("{name}.go"));
    // Under QEMU's emulation (`cargo xtask vmtest`) even a `go build` with nothing to do takes
    // minutes; the suite's run on the machine built the programs before.
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if modified(&out).is_some_and(|built| Some(built) >= modified(&src)) {
        return out;
    }
    let gocache = cache_dir().join("gocache");
    let status = Command::new(&go.bin)
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .env("GOCACHE", gocache)
        .env("GOTOOLCHAIN", "local")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "go build {} with {} failed",
        src.display(),
        go.version
    );
    out
}

/// A Go test program started under the tests' control: it prints `ready <pid>` and waits for a
/// line on stdin before doing its work, so probes can attach first.
pub struct Target {
    pub child: std::process::Child,
    pub pid: u32,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Target {
    pub fn start(bin: &Path, args: &[&str]) -> Target {
        Target::spawn(bin, args, &[], std::process::Stdio::inherit())
    }

    /// As [`Target::start`], with variables added to the program's environment.
    pub fn start_with_env(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Target {
        Target::spawn(bin, args, env, std::process::Stdio::inherit())
    }

    /// As [`Target::start`], keeping the program's stderr for [`Target::crashed`].
    pub fn start_capturing_stderr(bin: &Path, args: &[&str]) -> Target {
        Target::spawn(bin, args, &[], std::process::Stdio::piped())
    }

    fn spawn(
        bin: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        stderr: std::process::Stdio,
    ) -> Target {
        use std::io::BufRead as _;
        use std::process::Stdio;
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let pid = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{} printed {line:?} instead of `ready <pid>`",
                    bin.display()
                )
            });
        Target { child, pid, stdout }
    }

    /// Lets the program run its calls.
    pub fn go(&mut self) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Reads the next `n` lines the program prints.
    pub fn read_lines(&mut self, n: usize) -> Vec<String> {
        use std::io::BufRead as _;
        (0..n)
            .map(|_| {
                let mut line = String::new();
                self.stdout.read_line(&mut line).unwrap();
                line
            })
            .collect()
    }

    /// Reads the next line, which must be `<word> <count>`, and returns the count.
    pub fn read_count(&mut self, word: &str) -> u64 {
        let line = self.read_lines(1).concat();
        line.strip_prefix(word)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("the program printed {line:?}, not `{word} <count>`"))
    }

    /// Waits for a program started by [`Target::start_capturing_stderr`] to fail, as a panic
    /// ends it, and returns its stderr.
    pub fn crashed(mut self) -> String {
        use std::io::Read as _;
        let mut err = String::new();
        let mut stderr = self.child.stderr.take().expect("stderr captured");
        stderr.read_to_string(&mut err).unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "the program did not fail:\n{err}");
        err
    }

    /// Waits for the program to exit successfully and returns the rest of its stdout.
    pub fn finish(mut self) -> String {
        use std::io::Read as _;
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "the traced program failed: {status}\n{out}"
        );
        out
    }
}

/// Starts `escapade <args>` with its stdout and stderr piped and waits until it says it
/// attached; returns it and its stderr past that line, for tests that signal it or read its
/// output whole themselves (see [`Escapade`] for line-by-line reading).
pub fn spawn_attached(
    args: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
) {
    use std::io::BufRead as _;
    use std::process::Stdio;
    let mut escapade = Command::new(env!("CARGO_BIN_EXE_escapade"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(escapade.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("attached to PID") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "escapade did not attach"
        );
    }
    (escapade, stderr)
}

/// `escapade` run against a target; its stdout is read line by line as it comes.
pub struct Escapade {
    child: std::process::Child,
    stdout_lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Escapade {
    /// Starts `escapade <args>` and waits until it reports that its probes are attached.
    pub fn attach(args: &[&str]) -> Escapade {
        Escapade::attach_with_env(args, &[])
    }

    /// [`Escapade::attach`] with variables added to escapade's environment.
    pub fn attach_with_env(args: &[&str], env: &[(&str, &str)]) -> Escapade {
        use std::process::Stdio;
        let mut child = Command::new(env!("CARGO_BIN_EXE_escapade"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr_lines = lines_of(child.stderr.take().unwrap(), "[escapade] ");
        let stdout_lines = lines_of(child.stdout.take().unwrap(), "");
        loop {
            match stderr_lines.recv_timeout(patience(60)) {
                Ok(line) if line.contains("attached to PID") => break,
                Ok(_) => {}
                Err(_) => {
                    let status = child.wait().unwrap();
                    panic!("escapade did not attach: {status}");
                }
            }
        }
        // Keep echoing stderr for the test log.
        std::thread::spawn(move || stderr_lines.iter().for_each(drop));
        Escapade {
            child,
            stdout_lines,
            seen: Vec::new(),
        }
    }

    /// Waits until `n` lines of escapade's stdout satisfy `pred` (at most 60 s).
    pub fn wait_for(&mut self, n: usize, pred: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + patience(60);
        while self.seen.iter().filter(|l| pred(l)).count() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("escapade printed only {:?}", self.seen),
            }
        }
    }

    /// Waits for escapade to exit (it does when the target exits), checks that it succeeded,
    /// and returns its stdout as JSON lines.
    pub fn finish(self) -> Vec<serde_json::Value> {
        json_lines(&self.finish_text())
    }

    /// [`Escapade::finish`], returning stdout as it was printed.
    pub fn finish_text(mut self) -> String {
        let status = self.child.wait().unwrap();
        self.seen.extend(self.stdout_lines.iter());
        assert!(status.success(), "escapade failed: {status}");
        self.seen.iter().map(|line| format!("{line}\n")).collect()
    }
}

impl Escapade {
    /// How many BPF links of `link_type` (`uprobe_multi`, `perf`, ...) escapade holds, as
    /// the kernel reports them in /proc/PID/fdinfo.
    pub fn bpf_links(&self, link_type: &str) -> usize {
        let want = format!("link_type:\t{link_type}");
        std::fs::read_dir(format!("/proc/{}/fdinfo", self.child.id()))
            .unwrap()
            .filter_map(|fd| std::fs::read_to_string(fd.ok()?.path()).ok())
            .filter(|info| info.lines().any(|l| l == want))
            .count()
    }

    /// Kills escapade with SIGKILL, as a crash would end it, and waits for it.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Forwards the lines of `pipe` through a channel, echoing them to stderr when `echo` is set.
fn lines_of(
    pipe: impl std::io::Read + Send + 'static,
    echo: &'static str,
) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if !echo.is_empty() {
                eprintln!("{echo}{line}");
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs `escapade <args>` to completion (for commands that fail before attaching).
pub fn escapade(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_escapade"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `escapade <args>` to completion, expects success, and returns its stdout.
pub fn escapade_ok(args: &[&str]) -> String {
    let out = escapade(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "escapade {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Parses JSON lines.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Runs `go tool <args>` from the toolchain `go` (e.g. `pprof -top FILE`), checks that it
/// succeeded, and returns its stdout.
pub fn go_tool(go: &Go, args: &[&str]) -> String {
    go_in(go, Path::new("."), &[&["tool"], args].concat())
}

/// Runs `go ARGS` from the toolchain `go` in `dir` (the module cache off: the tests use the
/// standard library only), checks that it succeeded, and returns its stdout.
pub fn go_in(go: &Go, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(&go.bin)
        .args(args)
        .current_dir(dir)
        .env("GOCACHE", cache_dir().join("gocache"))
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "go {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A copy of `bin` with no DWARF or symbol table, by `strip` or `objcopy --strip-all`, named
/// `<bin>.<name>` (tests running at once each use their own).
pub fn stripped_copy(bin: &Path, tool: Strip, name: &str) -> PathBuf {
    let out = bin.with_extension(name);
    let mut cmd = match tool {
        Strip::Strip => Command::new("strip"),
        Strip::ObjcopyStripAll => Command::new("objcopy"),
    };
    match tool {
        Strip::Strip => cmd.arg("-o").arg(&out).arg(bin),
        Strip::ObjcopyStripAll => cmd.arg("--strip-all").arg(bin).arg(&out),
    };
    run(&mut cmd);
    out
}

/// How a copy is stripped.
#[derive(Clone, Copy)]
pub enum Strip {
    Strip,
    ObjcopyStripAll,
}

/// `objcopy --only-keep-debug` of `bin`.
pub fn debug_file(bin: &Path) -> PathBuf {
    let out = bin.with_extension("debug");
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(bin)
        .arg(&out));
    out
}

/// Runs `cmd`, which must succeed.
fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap();
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// The cum% column of `function` in `go tool pprof -top -cum`, as a fraction.
pub fn cum_share(top: &str, function: &str) -> f64 {
    let line = top
        .lines()
        .find(|l| l.split_whitespace().last() == Some(function))
        .unwrap_or_else(|| panic!("{function} not in\n{top}"));
    let cum = line.split_whitespace().nth(4).unwrap();
    cum.trim_end_matches('%').parse::<f64>().unwrap() / 100.0
}

/// The argument or result `name` in an event's `args` or `results`.
pub fn arg<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|a| a["name"] == name)
}

/// Compares what a Go test program printed (as JSON) with the value escapade decoded.
pub fn compare(at: &str, want: &Value, got: &Value) {
    let hex = |v: &Value| format!("{:#x}", v.as_u64().unwrap_or_else(|| panic!("{at}: {v}")));
    match want {
        Value::Bool(_) | Value::Number(_) => {
            assert!(
                ["int", "uint", "bool"].contains(&got["kind"].as_str().unwrap()),
                "{at}: {got}"
            );
            let same = match (want, &got["value"]) {
                (Value::Number(w), Value::Number(g)) => w.as_f64() == g.as_f64(),
                (w, g) => w == g,
            };
            assert!(same, "{at}: program printed {want}, escapade decoded {got}");
        }
        Value::String(addr) => {
            assert_eq!(got["kind"], "pointer", "{at}: {got}");
            assert_eq!(&hex(&got["addr"]), addr, "{at}");
        }
        Value::Array(items) => {
            let elems = got["elems"]
                .as_array()
                .unwrap_or_else(|| panic!("{at}: {got}"));
            assert_eq!(elems.len(), items.len(), "{at}");
            for (i, (w, g)) in items.iter().zip(elems).enumerate() {
                compare(&format!("{at}[{i}]"), w, g);
            }
        }
        Value::Object(map) if map.contains_key("type") => {
            assert_eq!(got["kind"], "interface", "{at}: {got}");
            let want_type = map["type"].as_str().unwrap();
            let got_type = got["type"].as_str().unwrap_or("");
            assert_eq!(got_type, want_type, "{at}: dynamic type");
            assert_eq!(
                &Value::String(hex(&got["data"])),
                &map["data"],
                "{at}: data"
            );
        }
        Value::Object(map) if map.contains_key("len") => {
            assert_eq!(
                &Value::String(hex(&got["addr"])),
                &map["addr"],
                "{at}: addr"
            );
            assert_eq!(got["len"], map["len"], "{at}: len");
            if let Some(cap) = map.get("cap") {
                assert_eq!(got["kind"], "slice", "{at}");
                assert_eq!(&got["cap"], cap, "{at}: cap");
            }
            if let Some(text) = map.get("text") {
                let text = text.as_str().unwrap();
                assert_eq!(
                    got["text"].as_str(),
                    Some(&text[..text.len().min(64)]),
                    "{at}: text"
                );
            }
        }
        Value::Object(map) => {
            assert_eq!(got["kind"], "struct", "{at}: {got}");
            let fields = got["fields"].as_array().unwrap();
            for (name, w) in map {
                let field = fields
                    .iter()
                    .find(|f| f[0] == *name)
                    .unwrap_or_else(|| panic!("{at}: no field {name} in {got}"));
                compare(&format!("{at}.{name}"), w, &field[1]);
            }
        }
        Value::Null => panic!("{at}: the program printed null"),
    }
}
