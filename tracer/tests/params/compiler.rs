//! Ground truth for `escapade params`, from the Go compiler alone: what
//! `go build -gcflags=-m=2` says about the corpus `tests/go/escape.go`, where the compiler's
//! DWARF puts each parameter at entry (`tests/go/dwarflocs`), and which line builds each
//! argument (`tests/go/callsites`, syntax only). Every expected verdict carries the compiler
//! lines it was derived from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{self, Go};

/// The corpus file, in `tests/go/`.
const CORPUS: &str = "escape.go";

/// The verdict for a parameter the compiler's DWARF leaves out: escapade must print no row.
pub const ABSENT: &str = "absent from DWARF";

/// One parameter's expected verdict.
pub struct Expected {
    pub function: String,
    pub param: String,
    /// As `escapade params --json` spells it, or [`ABSENT`].
    pub verdict: &'static str,
    /// The compiler lines (or DWARF location) the verdict was derived from.
    pub reason: String,
    /// What the corpus exercises with this parameter, for the coverage checks.
    pub categories: BTreeSet<&'static str>,
}

/// The corpus built with one toolchain, and what the compiler said about it.
pub struct GroundTruth {
    /// The binary, built with `-gcflags=-m=2` (which changes no code).
    pub binary: PathBuf,
    /// One entry per corpus parameter, in call order.
    pub expected: Vec<Expected>,
    /// Parameters whose verdict could not be derived, with why: the corpus left the forms the
    /// derivation knows.
    pub underived: Vec<String>,
}

/// The `./escape.go:L:C:` lines of the compiler's output at one position.
#[derive(Default)]
struct Said {
    /// Conclusions (`moved to heap: x`, `leaking param: p`, `make(...) does not escape`).
    finals: Vec<String>,
    /// `-m=2` explanations: headers ending in `:` and their indented `flow:`/`from` lines.
    details: Vec<String>,
}

type Diagnostics = BTreeMap<(u32, u32), Said>;

/// Builds the corpus and its helpers with `go` under a directory of their own for `test`:
/// tests run in parallel, and a build must not overwrite a binary another test is running.
pub fn ground_truth(go: &Go, test: &str) -> GroundTruth {
    let dir = out_dir(go, test);
    let binary = dir.join("escape");
    let out = go_command(go)
        .args(["build", "-gcflags=-m=2", "-o"])
        .arg(&binary)
        .arg(CORPUS)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "go build -gcflags=-m=2 {CORPUS} with {} failed:\n{stderr}",
        go.version
    );
    let diagnostics = parse_diagnostics(&stderr);
    assert!(
        !diagnostics.is_empty(),
        "go build -gcflags=-m=2 printed no diagnostics for {CORPUS} with {}",
        go.version
    );

    let dwarflocs = build_helper(go, &dir, "dwarflocs");
    let callsites = build_helper(go, &dir, "callsites");
    let params = dwarf_params(&run_helper(&dwarflocs, &binary));
    let calls = common::json_lines(&run_helper(&callsites, &common::go_programs().join(CORPUS)));
    assert!(!calls.is_empty(), "callsites found no corpus calls");

    let mut expected = Vec::new();
    let mut underived = Vec::new();
    let mut seen = BTreeSet::new();
    for call in &calls {
        let function = call["function"].as_str().unwrap();
        for p in call["params"].as_array().unwrap() {
            let name = p["name"].as_str().unwrap();
            if !seen.insert((function.to_string(), name.to_string())) {
                underived.push(format!(
                    "{function} {name}: called from more than one place (line {}), so no single \
                     origin decides its pointee",
                    call["line"]
                ));
                continue;
            }
            match derive(function, p, params.get(function), &diagnostics) {
                Ok(e) => expected.push(e),
                Err(why) => underived.push(format!("{function} {name}: {why}")),
            }
        }
    }
    GroundTruth {
        binary,
        expected,
        underived,
    }
}

fn out_dir(go: &Go, test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("go")
        .join(&go.version)
        .join("params")
        .join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `go` run from `tests/go/`, so that its diagnostics name the corpus `./escape.go`.
fn go_command(go: &Go) -> Command {
    let mut cmd = Command::new(&go.bin);
    cmd.current_dir(common::go_programs())
        .env("GOCACHE", common::cache_dir().join("gocache"))
        .env("GOTOOLCHAIN", "local");
    cmd
}

/// Builds `tests/go/<name>/main.go` with the same toolchain as the corpus, whose DWARF and
/// syntax it must read.
fn build_helper(go: &Go, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let status = go_command(go)
        .args(["build", "-o"])
        .arg(&out)
        .arg(format!("./{name}/main.go"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "go build tests/go/{name} with {} failed",
        go.version
    );
    out
}

fn run_helper(helper: &Path, arg: &Path) -> String {
    let out = Command::new(helper).arg(arg).output().unwrap();
    assert!(
        out.status.success(),
        "{} {} failed: {}",
        helper.display(),
        arg.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A parameter as the compiler's DWARF describes it.
struct DwarfParam {
    pointer: bool,
    location: String,
}

/// Each function's parameters, by name.
fn dwarf_params(json: &str) -> BTreeMap<String, BTreeMap<String, DwarfParam>> {
    let mut params = BTreeMap::new();
    for f in common::json_lines(json) {
        let function: &mut BTreeMap<_, _> = params
            .entry(f["function"].as_str().unwrap().to_string())
            .or_default();
        for p in f["params"].as_array().unwrap() {
            function.insert(
                p["name"].as_str().unwrap().to_string(),
                DwarfParam {
                    pointer: p["pointer"].as_bool().unwrap(),
                    location: p["location"].as_str().unwrap().to_string(),
                },
            );
        }
    }
    params
}

/// Groups the compiler's lines about the corpus by position. Lines about other files (generic
/// code of the standard library instantiated here) are left out.
fn parse_diagnostics(stderr: &str) -> Diagnostics {
    let mut out = Diagnostics::new();
    let prefix = format!("./{CORPUS}:");
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let mut parts = rest.splitn(3, ':');
        let (Some(l), Some(c), Some(text)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(l), Ok(c)) = (l.parse(), c.parse()) else {
            continue;
        };
        let text = text.strip_prefix(' ').unwrap_or(text);
        let said = out.entry((l, c)).or_default();
        if text.starts_with(' ') || text.ends_with(':') {
            said.details.push(text.trim().to_string());
        } else {
            said.finals.push(text.to_string());
        }
    }
    out
}

fn derive(
    function: &str,
    p: &Value,
    function_dwarf: Option<&BTreeMap<String, DwarfParam>>,
    said: &Diagnostics,
) -> Result<Expected, String> {
    let name = p["name"].as_str().unwrap();
    let pos = (
        p["line"].as_u64().unwrap() as u32,
        p["col"].as_u64().unwrap() as u32,
    );
    let function_dwarf =
        function_dwarf.ok_or("not in the binary's DWARF (inlined, or named differently)")?;
    let Some(dwarf) = function_dwarf.get(name) else {
        if name.starts_with("~p") {
            // Go 1.21 describes only named parameters; what the compiler did not describe, no
            // DWARF reader can report.
            return Ok(Expected {
                function: function.to_string(),
                param: name.to_string(),
                verdict: ABSENT,
                reason: "the compiler's DWARF does not list this unnamed parameter".into(),
                categories: BTreeSet::from([ABSENT]),
            });
        }
        return Err(format!(
            "its function is in DWARF, but not the parameter (DWARF has {:?})",
            function_dwarf.keys().collect::<Vec<_>>()
        ));
    };
    let at_param = said.get(&pos);
    let finals_at_param: Vec<&String> = at_param
        .map(|s| s.finals.iter().collect())
        .unwrap_or_default();
    let here = |text: &str| format!("{CORPUS}:{}:{}: {text}", pos.0, pos.1);
    let mut categories = categories(function, p, at_param);

    let moved = format!("moved to heap: {name}");
    let (verdict, reason) = if finals_at_param.iter().any(|f| **f == moved) {
        ("moved_to_heap", here(&moved))
    } else if dwarf.pointer {
        let (verdict, why) = pointee(&p["origin"], said)?;
        let callee = match finals_at_param.as_slice() {
            [] => "callee: no diagnostic".to_string(),
            finals => format!(
                "callee: {}",
                finals
                    .iter()
                    .map(|f| here(f))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        (verdict, format!("{why} ({callee})"))
    } else {
        let verdict = match dwarf.location.as_str() {
            l if l.starts_with("stack") => "stack",
            l if l.starts_with('R') || l.starts_with('X') => "registers",
            l => {
                return Err(format!(
                    "no pointer, and DWARF gives no entry location ({l})"
                ));
            }
        };
        (
            verdict,
            format!(
                "no pointer word; DWARF location at entry: {}",
                dwarf.location
            ),
        )
    };
    categories.insert(verdict);
    Ok(Expected {
        function: function.to_string(),
        param: name.to_string(),
        verdict,
        reason,
        categories,
    })
}

/// Where an argument's (first) pointer word points, from how the caller built it and what the
/// compiler said about that.
fn pointee(origin: &Value, said: &Diagnostics) -> Result<(&'static str, String), String> {
    let text = origin["text"].as_str().unwrap_or_default();
    let line = origin["line"].as_u64().unwrap_or_default() as u32;
    let at = |l: u32, c: u32, t: &str| format!("{CORPUS}:{l}:{c}: {t}");
    match origin["kind"].as_str().unwrap() {
        "literal" => Ok((
            "pointee_global",
            format!("argument {text} (line {line}) is a string literal: read-only data"),
        )),
        "nil" => Ok(("nil", format!("argument {text} (line {line}) is nil"))),
        "global" => Ok(("pointee_global", format!("argument {text}: a global"))),
        "var" => {
            let name = origin["name"].as_str().unwrap();
            let col = origin["col"].as_u64().unwrap() as u32;
            let moved = format!("moved to heap: {name}");
            if said
                .get(&(line, col))
                .is_some_and(|s| s.finals.contains(&moved))
            {
                Ok((
                    "pointee_heap",
                    format!("argument {text}: {}", at(line, col, &moved)),
                ))
            } else {
                Ok((
                    "pointee_stack",
                    format!(
                        "argument {text}: no `{moved}` at {CORPUS}:{line}:{col}, so {name} \
                         stays in the caller's frame"
                    ),
                ))
            }
        }
        "alloc" => {
            let on_line: Vec<((u32, u32), &String)> = said
                .range((line, 0)..(line + 1, 0))
                .flat_map(|(&pos, s)| s.finals.iter().map(move |f| (pos, f)))
                .collect();
            if let Some(((l, c), f)) = on_line
                .iter()
                .find(|(_, f)| f.as_str() == "zero-copy string->[]byte conversion")
            {
                // The slice reuses the string's bytes: it points where the string does.
                let (verdict, why) = pointee(&origin["source"], said)?;
                return Ok((
                    verdict,
                    format!("argument {text}: {}; {why}", at(*l, *c, f)),
                ));
            }
            let verdicts: Vec<_> = on_line
                .iter()
                .filter_map(|&((l, c), f)| {
                    if f.ends_with(" escapes to heap") {
                        Some(("pointee_heap", at(l, c, f)))
                    } else if f.ends_with(" does not escape") {
                        Some(("pointee_stack", at(l, c, f)))
                    } else {
                        None
                    }
                })
                .collect();
            match verdicts.as_slice() {
                [(verdict, why)] => Ok((verdict, format!("argument {text}: {why}"))),
                [] => Err(format!(
                    "no escape diagnostic on line {line} for the allocation {text}"
                )),
                _ => Err(format!(
                    "several escape diagnostics on line {line}, so none decides {text}: {verdicts:?}"
                )),
            }
        }
        "chan" => Ok((
            "pointee_heap",
            format!(
                "argument {text} (line {line}): the compiler never stack-allocates a channel \
                 (runtime.makechan), so it prints no escape diagnostic for it"
            ),
        )),
        kind => Err(format!(
            "it has a pointer word, but its argument {text} (line {line}) is a {kind} the \
             derivation cannot place"
        )),
    }
}

/// What the corpus exercises with a parameter: how the compiler says it leaks (its `-m=2`
/// flow explanations), the kind of function, and how the corpus uses it.
fn categories(function: &str, p: &Value, said: Option<&Said>) -> BTreeSet<&'static str> {
    let name = p["name"].as_str().unwrap();
    let mut out = BTreeSet::new();
    if let Some(said) = said {
        for f in &said.finals {
            if *f == format!("leaking param: {name}") {
                out.insert("leaks to the heap");
            } else if f.starts_with(&format!("leaking param: {name} to result")) {
                out.insert("leaks to a result");
            } else if *f == format!("leaking param content: {name}") {
                out.insert("leaks its content");
            }
        }
        for d in &said.details {
            for (flow, category) in [
                ("(send)", "sent on a channel"),
                ("(captured by a closure)", "captured by a closure"),
                ("(interface-converted)", "converted to an interface"),
            ] {
                if d.contains(flow) {
                    out.insert(category);
                }
            }
        }
    }
    if function.contains("[go.shape.") {
        out.insert("generic");
    }
    if function.contains("(*") {
        out.insert("pointer receiver");
    } else if p["receiver"].as_bool() == Some(true) {
        out.insert("value receiver");
    }
    if p["appended"].as_bool() == Some(true) {
        out.insert("slice that grows");
    }
    if p["bytes"].as_bool() == Some(true) {
        out.insert("string converted to []byte");
    }
    out
}
