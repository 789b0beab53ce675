//! Golden outputs: what `trace`, `params`, `allocs`, `record`, `report` and `export --pprof`
//! (read by the Go toolchain's own `go tool pprof -top`) print for bundled test programs must
//! equal the files under `tests/golden/<go minor>/`, one set per Go minor version, since type
//! names, layouts and allocations differ between them. What differs from run to run (times,
//! durations, addresses, thread ids, PIDs, paths, rates) is masked first; everything else,
//! down to each column's width and the order of rows escapade ranks equal, must be as it was. A
//! change meant to keep behaviour (issue 11's restructuring) passes unchanged; one that changes
//! an output fails with `diff -u` of each file it changed.
//!
//! `ESCAPADE_BLESS=1` writes the files from this run instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

use common::{Escapade, Go, Target};

#[test]
fn outputs_equal_the_golden_files() {
    let mut failures = Vec::new();
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        let mut golden = Golden::new(&go);
        trace_args(&go, &mut golden);
        escape_corpus(&go, &mut golden);
        failures.extend(golden.finish());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `trace` of `tests/go/args.go`, which passes one argument of each kind escapade decodes, all
/// on its main goroutine.
fn trace_args(go: &Go, golden: &mut Golden) {
    let bin = common::build(go, "args", &[]);
    for (name, format) in [
        ("trace-args.txt", None),
        ("trace-args.json", Some("--json")),
    ] {
        let args: Vec<&str> = ["trace", "--pid", PID]
            .into_iter()
            .chain(format)
            .chain(["--capture-strings", "64", "main.*Traced*"])
            .collect();
        let out = session(&bin, &args, |_, escapade| {
            // Decoding reads run-time data (itabs) from the process: it stays until escapade
            // printed the last return, TracedDefer's.
            escapade.wait_for(1, |line| {
                line.contains("main.TracedDefer")
                    && (line.contains(" <- ") || line.contains(r#""type":"return""#))
            });
        });
        golden.check(name, &args, &out);
    }
}

/// `params`, `allocs --exact` and `record` of `tests/go/escape.go`, then `report` and
/// `export --pprof` of the recording. The corpus calls each of its functions three times on one
/// goroutine, starts no goroutine and triggers no collection: what it allocates is the same in
/// every run.
fn escape_corpus(go: &Go, golden: &mut Golden) {
    let bin = common::build(go, "escape", &[]);
    let corpus = |args: &[&str]| {
        session(&bin, args, |target, _| {
            let done = target.read_lines(1).concat();
            assert_eq!(done.trim(), "done", "the corpus printed {done:?}");
            // params (and record --params) checks a move to the heap by reading the new
            // object from the live process a few milliseconds after the call returned.
            std::thread::sleep(Duration::from_secs(1));
        })
    };
    for (command, option) in [("params", "main.*"), ("allocs", "--exact")] {
        for (suffix, format) in [("txt", None), ("json", Some("--json"))] {
            let args: Vec<&str> = [command, "--pid", PID]
                .into_iter()
                .chain(format)
                .chain([option])
                .collect();
            let out = corpus(&args);
            golden.check(&format!("{command}-escape.{suffix}"), &args, &out);
        }
    }

    let recording = golden.scratch.join("escape.esc");
    let recording = recording.to_str().unwrap();
    let args = [
        "record",
        "--pid",
        PID,
        "-o",
        recording,
        "--params",
        "--allocs",
        "--exact",
        "main.moved*",
        "main.box*",
        "main.Keep*",
        "main.T.*",
        "main.(*T).*",
    ];
    let out = corpus(&args);
    golden.check("record-escape.txt", &args, &out);
    for (name, format) in [
        ("report-escape.txt", None),
        ("report-escape.json", Some("--json")),
    ] {
        let args: Vec<&str> = ["report", recording].into_iter().chain(format).collect();
        let out = common::escapade_ok(&args);
        golden.check(name, &args, &out);
    }

    let profile = golden.scratch.join("escape.pb.gz");
    let profile = profile.to_str().unwrap();
    common::escapade_ok(&["export", recording, "--pprof", profile]);
    // The default (allocated bytes), and what else the export holds that is exact.
    for sample_index in ["alloc_space", "alloc_objects", "calls", "kernel_calls"] {
        let index = format!("-sample_index={sample_index}");
        let out = common::go_tool(go, &["pprof", "-top", &index, profile]);
        let command = format!("go tool pprof -top {index} escape.pb.gz");
        golden.compare(
            &format!("pprof-{sample_index}.txt"),
            &command,
            &mask_text(&out),
        );
    }
}

/// Stands for the target's PID in escapade's arguments.
const PID: &str = "<pid>";

/// Runs `bin`, a program of `tests/go/`, under `escapade <args>` (with its PID for [`PID`]):
/// lets it work, calls `settle` while it waits to exit, lets it exit, and returns escapade's
/// stdout.
fn session(bin: &Path, args: &[&str], settle: impl FnOnce(&mut Target, &mut Escapade)) -> String {
    // One P: sync.Pool then always hands fmt's printer back to the next print. With more,
    // whichever P the main goroutine resumes on after reading stdin decides whether fmt
    // allocates a new one. No preemption signal: one landing while the kernel single-steps a
    // probe makes it fire twice, and the second hit is one more event.
    let env = [("GOMAXPROCS", "1"), ("GODEBUG", "asyncpreemptoff=1")];
    let mut target = Target::start_with_env(bin, &[], &env);
    let pid = target.pid.to_string();
    let args: Vec<&str> = args
        .iter()
        .map(|&a| if a == PID { pid.as_str() } else { a })
        .collect();
    let mut escapade = Escapade::attach(&args);
    target.go();
    settle(&mut target, &mut escapade);
    target.go();
    target.finish();
    escapade.finish_text()
}

/// The golden files of one Go minor version.
struct Golden {
    dir: PathBuf,
    /// Where this run writes its outputs (the recording, and each output compared), for `diff`
    /// and for a look after a failure.
    scratch: PathBuf,
    bless: bool,
    checked: Vec<PathBuf>,
    failures: Vec<String>,
}

impl Golden {
    fn new(go: &Go) -> Golden {
        let minor: Vec<&str> = go.version.split('.').take(2).collect();
        let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("golden")
            .join(&go.version);
        std::fs::create_dir_all(&scratch).unwrap();
        Golden {
            dir: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join(minor.join(".")),
            scratch,
            bless: std::env::var_os("ESCAPADE_BLESS").is_some_and(|v| v == "1"),
            checked: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Checks what `escapade <args>` printed: JSON lines if `args` asked for them, else text.
    fn check(&mut self, name: &str, args: &[&str], out: &str) {
        // Paths (the recording's) by their file names: the scratch directory is this
        // checkout's.
        let shown: Vec<&str> = args
            .iter()
            .map(|a| {
                if a.starts_with('/') {
                    a.rsplit('/').next().unwrap()
                } else {
                    a
                }
            })
            .collect();
        let masked = if args.contains(&"--json") {
            mask_json_lines(out)
        } else {
            mask_text(out)
        };
        self.compare(name, &format!("escapade {}", shown.join(" ")), &masked);
    }

    /// Compares the file `name` with `$ command` followed by `masked`, or writes it so.
    fn compare(&mut self, name: &str, command: &str, masked: &str) {
        let text = format!("$ {command}\n{masked}");
        let golden = self.dir.join(name);
        self.checked.push(golden.clone());
        if self.bless {
            std::fs::create_dir_all(&self.dir).unwrap();
            std::fs::write(&golden, text).unwrap();
            return;
        }
        let actual = self.scratch.join(name);
        std::fs::write(&actual, &text).unwrap();
        match std::fs::read_to_string(&golden) {
            Ok(expected) if expected == text => {}
            Ok(_) => {
                let diff = Command::new("diff")
                    .arg("-u")
                    .arg(&golden)
                    .arg(&actual)
                    .output()
                    .expect("running diff");
                self.failures.push(format!(
                    "{} is not what this run printed (- golden, + this run; \
                     ESCAPADE_BLESS=1 takes this run's):\n{}",
                    golden.display(),
                    String::from_utf8_lossy(&diff.stdout)
                ));
            }
            Err(e) => self.failures.push(format!(
                "{}: {e} (ESCAPADE_BLESS=1 writes it from this run)",
                golden.display()
            )),
        }
    }

    /// The failures, with the golden files of this version no check compared (left behind by a
    /// case taken out of the test), which blessing removes.
    fn finish(mut self) -> Vec<String> {
        for file in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = file.path();
            if self.checked.contains(&path) {
                continue;
            }
            if self.bless {
                std::fs::remove_file(&path).unwrap();
            } else {
                self.failures.push(format!(
                    "{}: no case of this test prints it",
                    path.display()
                ));
            }
        }
        self.failures
    }
}

/// What differs from run to run in a line of text, and what stands in its place; where a rule
/// has a group, only the group is masked. Addresses go before durations, so that no hex digits
/// read as a duration.
static TEXT_MASKS: LazyLock<Vec<(Regex, &str)>> = LazyLock::new(|| {
    [
        // When a call was made.
        (r"\b\d\d:\d\d:\d\d\.\d{6}\b", "hh:mm:ss.uuuuuu"),
        // Heap and stack addresses, and the binary's, which move with the length of the
        // checkout's paths it holds; nil stays.
        (r"\b0x0*[1-9a-f][0-9a-f]*\b", "<addr>"),
        // Durations, and the latency buckets' bounds.
        (r"<?\b\d+(?:\.\d+)?(?:ns|us|ms|s)\b", "<time>"),
        // A preemption request fails a function's stack check as a stack growth would: the
        // runtime asks once a goroutine has run 10 ms, which the probes' time may or may not
        // add up to.
        (r"stack-growth retries (\d+)", "<n>"),
        // Allocation rates: the allocs header's, and its sites table's third column.
        (r"\((\d+) objects/s\)", "<n>"),
        (r"^ +\d+ +\d+ +(\d+)  \S", "<rate>"),
        // pprof's header: the profile's build ID and time, and the recording's maker (whose
        // version moves with releases, not behaviour), PID and path.
        (r"^Build ID: (.+)", "<build id>"),
        (r"^Time: (.+)", "<date>"),
        (r"^escapade (\S+) recording of PID", "<version>"),
        (r"recording of PID (\d+)", "<pid>"),
        // (After the PID's rule, as it reads that rule's work.)
        (r"recording of PID <pid> \((/[^,]+), go", "<path>"),
    ]
    .into_iter()
    .map(|(re, with)| (Regex::new(re).unwrap(), with))
    .collect()
});

fn mask_text(text: &str) -> String {
    text.lines()
        .map(|line| format!("{}\n", mask_line(line)))
        .collect()
}

fn mask_line(line: &str) -> String {
    TEXT_MASKS
        .iter()
        .fold(line.to_string(), |line, (re, with)| mask(&line, re, with))
}

/// Replaces each match of `re` in `line` (its group, if it has one) with `with`. A value in a
/// right-aligned column (two spaces or more before it) takes its padding along, so that the
/// placeholder ends where the value ended and the table keeps its shape whatever the value.
fn mask(line: &str, re: &Regex, with: &str) -> String {
    let mut out = String::new();
    let mut last = 0;
    for found in re.captures_iter(line) {
        let value = found.get(1).or_else(|| found.get(0)).unwrap();
        let before = &line[last..value.start()];
        let text = before.trim_end_matches(' ');
        let padding = before.len() - text.len();
        if padding >= 2 {
            out.push_str(text);
            out.push_str(&format!("{with:>0$}", padding + value.len()));
        } else {
            out.push_str(before);
            out.push_str(with);
        }
        last = value.end();
    }
    out.push_str(&line[last..]);
    out
}

/// escapade's JSON lines, masked and pretty-printed one after another, so that a difference
/// shows as the fields that differ. Each line must be exactly what serde_json prints for its
/// value (sorted keys, no spaces), so the pretty form hides no change in how it was printed.
fn mask_json_lines(text: &str) -> String {
    text.lines()
        .map(|line| {
            let mut value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("escapade printed {line:?}, not JSON: {e}"));
            assert_eq!(serde_json::to_string(&value).unwrap(), line);
            mask_json(&mut value);
            serde_json::to_string_pretty(&value).unwrap() + "\n"
        })
        .collect()
}

fn mask_json(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                match key.as_str() {
                    "time_ns" | "duration_ns" | "total_ns" | "p50_below_ns" | "p90_below_ns"
                    | "p99_below_ns" | "seconds" => *field = "<time>".into(),
                    // Which bucket each call fell in is timing; how many calls it holds is not.
                    "latency_log2_ns" => {
                        let calls: u64 = field
                            .as_array()
                            .unwrap()
                            .iter()
                            .flat_map(Value::as_u64)
                            .sum();
                        *field = format!("<{calls} calls>").into();
                    }
                    // Pointers, an interface's data word, a call's stack pointer and return
                    // address, an allocation stack's code addresses.
                    "addr" | "data" | "sp" | "return_addr" | "pcs" => mask_addresses(field),
                    "tid" => *field = "<tid>".into(),
                    "morestack_retries" => *field = "<n>".into(),
                    // Source files by name: their directory is the checkout's.
                    "file" => {
                        let name = field.as_str().unwrap().rsplit('/').next().unwrap();
                        *field = name.into();
                    }
                    _ => mask_json(field),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        Value::String(text) => *text = mask_line(text),
        _ => {}
    }
}

/// An address, or each of a list of them, as `<addr>`; nil stays.
fn mask_addresses(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(mask_addresses),
        Value::Number(n) if n.as_u64() == Some(0) => {}
        Value::String(s) if s == "0x0" => {}
        _ => *value = "<addr>".into(),
    }
}
