//! Which functions can be entered other than by a direct `CALL`, so that probes after their
//! callers' calls would miss their returns: `tests/go/references.go` reaches functions in each
//! way Go code can, built with every installed Go as an executable and as PIE, each with and
//! without symbols and DWARF, and linked by the C toolchain where `go` can use one (which puts
//! C code and its sections around Go's).

mod common;

use std::collections::HashSet;
use std::process::Command;

use escapade::tracee::gobin::GoBinary;
use escapade::tracee::gobin::pclntab::Pclntab;

const BUILDS: [&[&str]; 4] = [
    &[],
    &["-ldflags=-s -w"],
    &["-buildmode=pie"],
    &["-buildmode=pie", "-ldflags=-s -w"],
];

const EXTERNAL_BUILDS: [&[&str]; 2] = [
    &["-ldflags=-linkmode=external"],
    &["-buildmode=pie", "-ldflags=-linkmode=external"],
];

/// Go turns cgo off by itself when it finds no C compiler.
fn cgo_enabled(go: &common::Go) -> bool {
    let out = Command::new(&go.bin)
        .args(["env", "CGO_ENABLED"])
        .output()
        .unwrap();
    out.status.success() && out.stdout.trim_ascii() == b"1"
}

/// Functions some call reaches other than by a direct `CALL`, and how.
const INDIRECT: [(&str, &str); 7] = [
    ("main.viaFuncValue", "through a func value"),
    ("main.(*T).Method", "through a static itab"),
    ("main.(*W).Dynamic", "through an itab built at run time"),
    (
        "main.(*Outer).M",
        "through an itab: the promoted method's wrapper",
    ),
    (
        "main.(*Inner).M",
        "tail-called by its wrapper (Go 1.26 on), in a method table",
    ),
    ("main.(*V).Bound-fm", "as a method value"),
    ("main.main", "by the runtime, through main.main·f"),
];

/// Functions only ever called directly, and by whom.
const DIRECT: [(&str, &str); 7] = [
    ("main.direct", "main.main"),
    (
        "main.(*T).Lonely",
        "main.main: no interface has its type, so the linker leaves the type out of T's method table",
    ),
    ("main.launched", "the wrapper the go statement runs"),
    ("main.(*V).Bound", "its method value's wrapper"),
    ("main.(*U).Plain", "main.main: U is never in an interface"),
    ("main.callThrough", "main.main"),
    ("main.callDynamic", "main.main"),
];

/// Methods only ever called directly that are kept anyway: the linker writes the offset of
/// every reachable method, exported or not, into its type's method table, and their type,
/// `func(int) int`, is in the binary because `Method`'s is, so nothing in the file tells them
/// from a method an itab built at run time calls.
const KEPT: [&str; 2] = ["main.(*T).OnlyDirect", "main.(*T).unexported"];

#[test]
fn functions_reached_other_than_by_direct_calls() {
    for go in common::toolchains() {
        let external: &[&[&str]] = if cgo_enabled(&go) {
            &EXTERNAL_BUILDS
        } else {
            eprintln!(
                "{}: cgo disabled, skipping externally linked builds",
                go.version
            );
            &[]
        };
        for &flags in BUILDS.iter().chain(external) {
            let what = format!("{} {flags:?}", go.version);
            let path = common::build(&go, "references", flags);
            let data = std::fs::read(&path).unwrap();
            let file = object::File::parse(&*data).unwrap();
            let table = Pclntab::from_object(&file).unwrap();
            let entry = |name: &str| {
                table
                    .func_named(name)
                    .unwrap_or_else(|| panic!("{what}: no {name}"))
                    .entry
            };
            let entries: Vec<u64> = table.funcs().map(|f| f.entry).collect();
            let bin = GoBinary::open(&path, None).unwrap();
            let indirect = bin.called_indirectly(&entries).unwrap();

            for (name, how) in INDIRECT {
                assert!(
                    indirect.contains(&entry(name)),
                    "{what}: {name} is reached {how}"
                );
            }
            // The closure and the goroutine's wrapper are made with their code's address.
            let closures: Vec<&str> = table
                .funcs()
                .map(|f| f.name)
                .filter(|n| n.starts_with("main.main."))
                .collect();
            assert_eq!(closures.len(), 2, "{what}: {closures:?}");
            for name in closures {
                assert!(indirect.contains(&entry(name)), "{what}: closure {name}");
            }
            for (name, caller) in DIRECT {
                assert!(
                    !indirect.contains(&entry(name)),
                    "{what}: {name} is only called directly, by {caller}"
                );
            }
            for name in KEPT {
                assert!(indirect.contains(&entry(name)), "{what}: {name}");
            }

            // Asked about fewer functions, the answer is the same for those.
            let mains: Vec<u64> = table
                .funcs()
                .filter(|f| f.name.starts_with("main."))
                .map(|f| f.entry)
                .collect();
            let expected: HashSet<u64> = mains
                .iter()
                .copied()
                .filter(|e| indirect.contains(e))
                .collect();
            assert_eq!(bin.called_indirectly(&mains).unwrap(), expected, "{what}");
            assert!(bin.called_indirectly(&[]).unwrap().is_empty(), "{what}");
        }
    }
}
