//! Stripped targets: the argument words escapade prints without DWARF must be the words Go's own
//! panic traceback prints for the same call, and a stripped copy traced with the symbols it was
//! stripped of (`--symbols`, or a debug file under /usr/lib/debug/.build-id) must decode every
//! call exactly as the unstripped binary does.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

use common::{Escapade, Strip, Target};

#[test]
fn words_equal_the_panic_traceback() {
    for go in common::toolchains() {
        // The PIE build is recorded, and its words read back from the recording.
        for (flags, recorded) in [
            (&["-ldflags=-s -w"][..], false),
            (&["-buildmode=pie", "-ldflags=-s -w"], true),
        ] {
            let bin = common::build(&go, "traceback", flags);
            for function in ["parse", "narrow"] {
                eprintln!("== {} {flags:?} {function}", go.version);
                check_traceback(&bin, function, recorded);
            }
        }
    }
}

/// Traces (or records) `main.<function>` of `tests/go/traceback.go` until it panics in its
/// last call, and compares the words escapade printed for that call with the traceback's.
fn check_traceback(bin: &Path, function: &str, recorded: bool) {
    let mut target = Target::start_capturing_stderr(bin, &[function]);
    let pid = target.pid.to_string();
    let name = format!("main.{function}");
    let recording = bin.with_extension(format!("{function}.esc"));
    let mut args = vec!["trace", "--pid", &pid, "--json", &name];
    if recorded {
        args[0] = "record";
        args.extend(["-o", recording.to_str().unwrap()]);
    }
    let escapade = Escapade::attach(&args);
    target.go();
    let stderr = target.crashed();
    let mut events = escapade.finish();
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("{name}(")))
        .unwrap_or_else(|| panic!("no {name} frame in the traceback:\n{stderr}"));
    let theirs = &line[name.len() + 1..line.rfind(')').unwrap()];
    if recorded {
        let report = |json: &[&str]| {
            let out = common::escapade(&[&["report", recording.to_str().unwrap()], json].concat());
            assert!(out.status.success(), "report {json:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        events = common::json_lines(&report(&["--json"]));
        // The text view prints the words as the traceback does.
        let text = report(&[]);
        let entry = format!("-> {name}(");
        let last = text.lines().rfind(|l| l.contains(&entry)).unwrap();
        let start = last.find(&entry).unwrap() + entry.len();
        let ours = &last[start..last.rfind(") from ").unwrap()];
        compare_words(ours, theirs);
        assert!(
            text.contains("--symbols FILE"),
            "the summary says what --symbols adds:\n{text}"
        );
    }
    let entries: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "entry" && e["function"] == name.as_str())
        .collect();
    assert_eq!(entries.len(), 200, "one entry per call");
    let last = entries.last().unwrap();
    assert_eq!(
        last["args"],
        serde_json::json!([]),
        "no DWARF, no named args"
    );
    compare_words(&words_text(last["words"].as_array().unwrap()), theirs);
}

/// Compares the words escapade printed with the traceback's.
fn compare_words(ours: &str, theirs: &str) {
    let (ours, theirs) = (tokens(ours), tokens(theirs));
    assert_eq!(
        ours.len(),
        theirs.len(),
        "escapade printed {ours:?}, the traceback {theirs:?}"
    );
    let mut compared = 0;
    for (o, t) in ours.iter().zip(&theirs) {
        // A word the traceback marks `?` is a spill slot the function had not written: not
        // the argument's value.
        if t.ends_with('?') {
            continue;
        }
        assert_eq!(o, t, "escapade printed {ours:?}, the traceback {theirs:?}");
        compared += usize::from(t.starts_with("0x"));
    }
    // Every word of `narrow` is certain; in `parse` the int, the string's and the slice's
    // lengths, and the stack-passed struct's words are.
    assert!(
        compared >= 6,
        "only {compared} words to compare: {theirs:?}\n{ours:?}"
    );
}

/// The JSON form of the words, printed back as the traceback prints them.
fn words_text(words: &[Value]) -> String {
    words
        .iter()
        .map(|w| match w["kind"].as_str().unwrap() {
            "word" => format!(
                "{:#x}",
                w["value"].as_u64().expect("every word readable here")
            ),
            "aggregate" => format!("{{{}}}", words_text(w["words"].as_array().unwrap())),
            "dotdotdot" => "...".into(),
            "offset_too_large" => "_".into(),
            other => panic!("unknown word kind {other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `0x1, {0x2?, ...}` -> ["0x1", "{", "0x2?", "...", "}"].
fn tokens(text: &str) -> Vec<String> {
    text.replace('{', " { ")
        .replace('}', " } ")
        .split([',', ' '])
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn stripped_copy_with_symbols_decodes_as_unstripped() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        let bin = common::build(&go, "args", &[]);
        let unstripped = traced_args(&bin, &[]);
        assert!(
            unstripped
                .iter()
                .any(|e| e["args"].as_array().is_some_and(|a| !a.is_empty())),
            "the unstripped binary's arguments are decoded"
        );
        let stripped = common::stripped_copy(&bin, Strip::Strip, "strip");
        let symbols = bin.to_str().unwrap();
        assert_same(
            &traced_args(&stripped, &["--symbols", symbols]),
            &unstripped,
            "strip, --symbols the binary",
        );
        let debug = common::debug_file(&bin);
        assert_same(
            &traced_args(&stripped, &["--symbols", debug.to_str().unwrap()]),
            &unstripped,
            "strip, --symbols its objcopy --only-keep-debug file",
        );
        let stripped_all = common::stripped_copy(&bin, Strip::ObjcopyStripAll, "stripall");
        assert_same(
            &traced_args(&stripped_all, &["--symbols", symbols]),
            &unstripped,
            "objcopy --strip-all, --symbols the binary",
        );
    }
}

#[test]
fn params_of_a_stripped_copy_with_symbols_as_unstripped() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        let bin = common::build(&go, "args", &[]);
        let unstripped = params_rows(&bin, &[]);
        assert!(unstripped.len() >= 10, "{unstripped:?}");
        let stripped = common::stripped_copy(&bin, Strip::Strip, "params");
        let rows = params_rows(&stripped, &["--symbols", bin.to_str().unwrap()]);
        assert_same(&rows, &unstripped, "params, strip, --symbols the binary");
    }
}

/// The rows of `params --json` for `tests/go/args.go`'s traced functions.
fn params_rows(bin: &Path, extra: &[&str]) -> Vec<Value> {
    let mut target = Target::start(bin, &[]);
    let pid = target.pid.to_string();
    let args = ["params", "--pid", &pid, "--json"];
    let escapade = Escapade::attach(&[&args[..], extra, &["main.*Traced*"]].concat());
    target.go();
    target.read_lines(12);
    target.go();
    target.finish();
    escapade
        .finish()
        .into_iter()
        .filter(|l| l["type"] == "param")
        .collect()
}

/// `trace --json` of `tests/go/args.go`'s traced calls with `extra` arguments: its entry and
/// return lines without what changes from run to run (times, threads, stack addresses).
fn traced_args(bin: &Path, extra: &[&str]) -> Vec<Value> {
    let mut target = Target::start(bin, &[]);
    let pid = target.pid.to_string();
    let mut args = vec!["trace", "--pid", &pid, "--json", "--capture-strings", "64"];
    args.extend(extra);
    args.push("main.*Traced*");
    let mut escapade = Escapade::attach(&args);
    target.go();
    // As tests/trace.rs: 12 calls, one line each.
    target.read_lines(12);
    escapade.wait_for(24, |l| {
        l.contains(r#""type":"entry""#) || l.contains(r#""type":"return""#)
    });
    target.go();
    target.finish();
    calls_masked(escapade.finish())
}

fn calls_masked(events: Vec<Value>) -> Vec<Value> {
    events
        .into_iter()
        .filter(|e| e["type"] == "entry" || e["type"] == "return")
        .map(|mut e| {
            for key in ["time_ns", "tid", "duration_ns", "sp", "return_addr"] {
                if let Some(o) = e.as_object_mut() {
                    o.remove(key);
                }
            }
            mask_addresses(&mut e);
            e
        })
        .collect()
}

/// Heap and stack addresses change from run to run (the region they point into stays).
fn mask_addresses(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (key, value) in o.iter_mut() {
                if key == "addr" || key == "data" {
                    *value = Value::Null;
                } else {
                    mask_addresses(value);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_addresses),
        _ => {}
    }
}

/// The same calls, line by line.
fn assert_same(ours: &[Value], unstripped: &[Value], what: &str) {
    for (o, u) in ours.iter().zip(unstripped) {
        assert_eq!(o, u, "{what}");
    }
    assert_eq!(ours.len(), unstripped.len(), "{what}: as many lines");
}

#[test]
fn symbols_of_another_build_fail_in_one_line() {
    let go = &common::toolchains()[0];
    let bin = common::build(go, "args", &[]);
    let other = common::build(go, "traceback", &[]);
    let stripped = common::stripped_copy(&bin, Strip::Strip, "mismatch");
    for (symbols, says) in [
        (other.to_str().unwrap(), "is from another build"),
        ("/nonexistent/symbols", "cannot read it"),
        ("/etc/hostname", "not an ELF file"),
    ] {
        let mut target = Target::start(&stripped, &[]);
        let pid = target.pid.to_string();
        let out = common::escapade(&["trace", "--pid", &pid, "--symbols", symbols, "main.*"]);
        target.go();
        target.go();
        target.finish();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{symbols}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{symbols}: one line: {stderr}");
        assert!(stderr.contains(says), "{symbols}: {stderr}");
    }
}

/// A file placed for the test, removed when the test ends, passed or not.
struct Placed(PathBuf);

impl Drop for Placed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        // The `xx` directory too, unless something else lives there.
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn debug_file_found_by_gnu_build_id_and_recorded() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        // Go writes a GNU build ID only when asked (`-B gobuildid` needs Go 1.22); one per
        // toolchain, so that each build's debug file has its own place.
        let id: String = format!("escapade {}", go.version)
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        let bin = common::build(&go, "args", &[&format!("-ldflags=-B 0x{id}")]);
        let unstripped = traced_args(&bin, &[]);
        let stripped = common::stripped_copy(&bin, Strip::Strip, "strip");
        assert_eq!(gnu_build_id(&bin), id);
        let path = Path::new("/usr/lib/debug/.build-id")
            .join(&id[..2])
            .join(format!("{}.debug", &id[2..]));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(common::debug_file(&bin), &path).unwrap();
        let placed = Placed(path);
        assert_same(
            &traced_args(&stripped, &[]),
            &unstripped,
            "debug file found by build ID",
        );

        let recording = stripped.with_extension("esc");
        let mut target = Target::start(&stripped, &[]);
        let pid = target.pid.to_string();
        let args = [
            "record",
            "--pid",
            &pid,
            "--json",
            "--capture-strings",
            "64",
            "-o",
            recording.to_str().unwrap(),
        ];
        let escapade = Escapade::attach(&[&args[..], &["main.*Traced*"]].concat());
        target.go();
        target.read_lines(12);
        target.go();
        target.finish();
        escapade.finish();
        drop(placed);
        let report = common::escapade(&["report", "--json", recording.to_str().unwrap()]);
        assert!(report.status.success());
        assert_same(
            &calls_masked(common::json_lines(&String::from_utf8_lossy(&report.stdout))),
            &unstripped,
            "recorded with the debug file found by build ID",
        );
        let header = recording_header(&recording);
        assert_eq!(header["dwarf"], true);
        assert!(
            header["symbols"]
                .as_str()
                .is_some_and(|s| s.contains(&id[2..]) && s.contains("by GNU build ID")),
            "header: {header}"
        );
    }
}

/// The GNU build ID of `bin` in hex, as `readelf -n` prints it.
fn gnu_build_id(bin: &Path) -> String {
    let data = std::fs::read(bin).unwrap();
    let file = object::File::parse(&*data).unwrap();
    use object::Object as _;
    let id = file.build_id().unwrap().expect("built with -B gobuildid");
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The JSON header of a recording: after the magic and the version, frame 0's length and CRC.
fn recording_header(path: &Path) -> Value {
    let data = std::fs::read(path).unwrap();
    let len = u32::from_le_bytes(data[12..16].try_into().unwrap()) as usize;
    serde_json::from_slice(&data[20..20 + len]).unwrap()
}
