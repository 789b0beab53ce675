//! The Go function table and build info, read from real binaries of every installed Go, checked
//! against what the ELF symbol table says where the binary still has one.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use escapade::tracee::gobin::buildinfo::{self, BuildInfoError};
use escapade::tracee::gobin::pclntab::{Func, Pclntab, PclntabError};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

const MAIN_FUNCS: [&str; 6] = [
    "main.Plain",
    "main.(*T).M",
    "main.T.V",
    "main.main",
    "main.main.func1",
    "main.Max[go.shape.int]",
];

struct Build {
    flags: &'static [&'static str],
    has_symtab: bool,
}

/// Default, stripped and PIE; then, where `go` can use a C toolchain, external linking, which
/// puts C start-up code before `runtime.text` and, for PIE, merges the pclntab into
/// `.data.rel.ro`.
fn builds(go: &common::Go) -> Vec<Build> {
    let mut builds = vec![
        Build {
            flags: &[],
            has_symtab: true,
        },
        Build {
            flags: &["-ldflags=-s -w"],
            has_symtab: false,
        },
        Build {
            flags: &["-buildmode=pie"],
            has_symtab: true,
        },
    ];
    if cgo_enabled(go) {
        builds.push(Build {
            flags: &["-ldflags=-linkmode=external"],
            has_symtab: true,
        });
        builds.push(Build {
            flags: &["-buildmode=pie", "-ldflags=-linkmode=external"],
            has_symtab: true,
        });
    } else {
        eprintln!(
            "{}: cgo disabled, skipping externally linked builds",
            go.version
        );
    }
    builds
}

/// Go turns cgo off by itself when it finds no C compiler.
fn cgo_enabled(go: &common::Go) -> bool {
    let out = Command::new(&go.bin)
        .args(["env", "CGO_ENABLED"])
        .output()
        .unwrap();
    out.status.success() && out.stdout.trim_ascii() == b"1"
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every Go function in the ELF symbol table, by name and entry: the functions between
/// `runtime.text` and `runtime.etext`, as external linking adds C code around them. Names are
/// spelled as in pclntab: the symbol table marks ABI0 functions (assembly, and wrappers that let
/// assembly call Go) with an ".abi0" suffix that pclntab lacks, so there an ABI0 wrapper shares
/// its name with the function it wraps; and it writes the "·" of function-local type names
/// (`pkg.(*T·1).M`) as ".".
fn symtab_funcs(file: &object::File) -> Vec<(String, u64)> {
    let marker = |name| file.symbol_by_name(name).unwrap().address();
    let go_text = marker("runtime.text")..marker("runtime.etext");
    file.symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .filter(|s| go_text.contains(&s.address()))
        .map(|s| {
            let name = s.name().unwrap();
            (
                name.strip_suffix(".abi0").unwrap_or(name).to_string(),
                s.address(),
            )
        })
        .collect()
}

/// Every Go function in `expected` is in `funcs` under the same name; at the same address if
/// `same_addresses`.
fn assert_funcs_match(
    what: &str,
    funcs: &[Func],
    expected: &[(String, u64)],
    same_addresses: bool,
) {
    let mut by_name: HashMap<String, Vec<u64>> = HashMap::new();
    for f in funcs {
        by_name
            .entry(f.name.replace('·', "."))
            .or_default()
            .push(f.entry);
    }
    let mut missing = Vec::new();
    for (name, addr) in expected {
        match by_name.get(name) {
            None => missing.push(format!("{name} missing")),
            Some(entries) if same_addresses && !entries.contains(addr) => {
                missing.push(format!("{name} at {entries:x?}, symtab says {addr:#x}"))
            }
            Some(_) => {}
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "{what}: {} of {} symtab functions disagree with pclntab, e.g. {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(20)]
    );
}

fn assert_table_consistent(what: &str, table: &Pclntab, funcs: &[Func]) {
    assert!(!funcs.is_empty(), "{what}: no functions");
    for pair in funcs.windows(2) {
        assert!(
            pair[0].entry < pair[0].end,
            "{what}: {:?} is empty",
            pair[0]
        );
        assert_eq!(
            pair[0].end, pair[1].entry,
            "{what}: {:?} does not end where the next begins",
            pair[0]
        );
    }
    for f in funcs {
        assert_eq!(
            table.func_for_pc(f.entry).as_ref(),
            Some(f),
            "{what}: func_for_pc(entry)"
        );
        assert_eq!(
            table.func_for_pc(f.end - 1).as_ref(),
            Some(f),
            "{what}: func_for_pc(end - 1)"
        );
    }
    assert_eq!(
        table.func_for_pc(funcs[0].entry - 1),
        None,
        "{what}: before the first function"
    );
    assert_eq!(
        table.func_for_pc(funcs.last().unwrap().end),
        None,
        "{what}: past the last function"
    );
}

#[test]
fn symbols_program() {
    let source = std::fs::read_to_string(common::go_programs().join("symbols.go")).unwrap();
    let main_line = source
        .lines()
        .position(|l| l.starts_with("func main() {"))
        .expect("symbols.go has func main") as u32
        + 1;

    for go in common::toolchains() {
        let reference_path = common::build(&go, "symbols", &[]);
        let reference_data = read(&reference_path);
        let reference = symtab_funcs(&object::File::parse(&*reference_data).unwrap());
        for name in MAIN_FUNCS {
            assert!(
                reference.iter().any(|(n, _)| n == name),
                "{}: symtab has no {name}",
                go.version
            );
        }

        for build in builds(&go) {
            let what = format!("{} {:?}", go.version, build.flags);
            let data = read(&common::build(&go, "symbols", build.flags));
            let file = object::File::parse(&*data).unwrap();

            let info = buildinfo::read(&file).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(info.go_version, go.version, "{what}");
            assert_eq!(
                info.main_module.as_deref(),
                Some("command-line-arguments"),
                "{what}"
            );
            let version = buildinfo::parse_go_version(&info.go_version);
            assert!(version >= Some((1, 21, 0)), "{what}: version {version:?}");

            let table = Pclntab::from_object(&file).unwrap_or_else(|e| panic!("{what}: {e}"));
            let funcs: Vec<Func> = table.funcs().collect();
            assert_table_consistent(&what, &table, &funcs);
            if build.has_symtab {
                assert_funcs_match(&what, &funcs, &symtab_funcs(&file), true);
            } else {
                assert_funcs_match(&what, &funcs, &reference, false);
            }

            let main = funcs
                .iter()
                .find(|f| f.name == "main.main")
                .unwrap_or_else(|| panic!("{what}: no main.main"));
            let (path, line) = table
                .file_line(main.entry)
                .unwrap_or_else(|| panic!("{what}: no position for main.main"));
            assert!(path.ends_with("/symbols.go"), "{what}: main.main in {path}");
            assert_eq!(line, main_line, "{what}: line of main.main");

            assert!(
                table.has_name("main.alwaysInlined"),
                "{what}: inlined name missing"
            );
            assert!(
                !funcs.iter().any(|f| f.name == "main.alwaysInlined"),
                "{what}: main.alwaysInlined was not inlined"
            );
            assert!(!table.has_name("main.noSuchFunction"), "{what}");
        }
    }
}

/// The go command: a large real binary (tens of thousands of functions) with a symbol table.
#[test]
fn go_command() {
    for go in common::toolchains() {
        let data = read(&go.bin);
        let file = object::File::parse(&*data).unwrap();
        let info = buildinfo::read(&file).unwrap();
        assert_eq!(info.go_version, go.version);
        assert_eq!(info.main_module.as_deref(), Some("cmd/go"));

        let table = Pclntab::from_object(&file).unwrap();
        let funcs: Vec<Func> = table.funcs().collect();
        assert_table_consistent(&go.version, &table, &funcs);
        assert_funcs_match(&go.version, &funcs, &symtab_funcs(&file), true);
    }
}

#[test]
fn not_a_go_binary() {
    let data = read(Path::new("/bin/ls"));
    let file = object::File::parse(&*data).unwrap();
    let err = buildinfo::read(&file).unwrap_err();
    assert!(matches!(err, BuildInfoError::NotGo), "{err:?}");
    let err = Pclntab::from_object(&file)
        .err()
        .expect("/bin/ls has a pclntab");
    assert!(matches!(err, PclntabError::NotGo), "{err:?}");
    assert!(!err.to_string().contains('\n'));
}

/// A Go 1.18/1.19 pclntab (the same header with an older magic) is refused with the reason.
#[test]
fn old_pclntab_magic() {
    let go = &common::toolchains()[0];
    let mut data = read(&common::build(go, "symbols", &[]));
    let magic_at = {
        let file = object::File::parse(&*data).unwrap();
        let section = file.section_by_name(".gopclntab").unwrap();
        section.file_range().unwrap().0 as usize
    };
    data[magic_at..magic_at + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let file = object::File::parse(&*data).unwrap();
    let err = Pclntab::from_object(&file)
        .err()
        .expect("old magic accepted");
    assert!(matches!(err, PclntabError::TooOld(_)), "{err:?}");
    assert!(err.to_string().contains("1.21+"), "{err}");
}

/// Built as a module, the binary records the module's path and version.
#[test]
fn module_build() {
    for go in common::toolchains() {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("go-module")
            .join(&go.version);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("go.mod"),
            "module example.com/symbols\n\ngo 1.21\n",
        )
        .unwrap();
        std::fs::copy(
            common::go_programs().join("symbols.go"),
            dir.join("symbols.go"),
        )
        .unwrap();
        let status = Command::new(&go.bin)
            .args(["build", "-o", "symbols", "."])
            .current_dir(&dir)
            .env("GOCACHE", common::cache_dir().join("gocache"))
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-buildvcs=false")
            .status()
            .unwrap();
        assert!(
            status.success(),
            "{}: go build in {}",
            go.version,
            dir.display()
        );

        let data = read(&dir.join("symbols"));
        let info = buildinfo::read(&object::File::parse(&*data).unwrap()).unwrap();
        assert_eq!(info.main_module.as_deref(), Some("example.com/symbols"));
        assert_eq!(info.main_module_version.as_deref(), Some("(devel)"));
    }
}

/// Inlined calls expand into one frame per function, innermost first, exactly as the runtime's
/// `CallersFrames` reports them: `tests/go/inlines.go` prints its view of a return address in
/// `main.outer`, where `main.mid` and `main.leaf` are inlined. Non-PIE builds run at their
/// link-time addresses, so the runtime pc is the pclntab pc.
#[test]
fn inlined_frames() {
    for go in common::toolchains() {
        for flags in [&[][..], &["-ldflags=-s -w"][..]] {
            let what = format!("{} {flags:?}", go.version);
            let path = common::build(&go, "inlines", flags);
            let out = Command::new(&path).output().unwrap();
            assert!(out.status.success(), "{what}: inlines failed: {out:?}");
            let stdout = String::from_utf8(out.stdout).unwrap();
            let mut expected = Vec::new();
            let mut pc = None;
            for line in stdout.lines() {
                let words: Vec<&str> = line.split(' ').collect();
                match words[..] {
                    ["frame", function, line, file] => expected.push((
                        function.to_string(),
                        file.to_string(),
                        line.parse::<u32>().unwrap(),
                    )),
                    ["pc", hex] => {
                        pc = Some(u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap())
                    }
                    _ => panic!("{what}: unexpected output line {line:?}"),
                }
            }
            let pc = pc.unwrap_or_else(|| panic!("{what}: no pc in {stdout:?}"));
            let names: Vec<&str> = expected.iter().map(|(f, _, _)| f.as_str()).collect();
            assert_eq!(
                names,
                ["main.leaf", "main.mid", "main.outer"],
                "{what}: the runtime's frames (were leaf and mid not inlined?)"
            );

            let data = read(&path);
            let table = Pclntab::from_object(&object::File::parse(&*data).unwrap())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let frames: Vec<(String, String, u32)> = table
                .frames(pc - 1)
                .into_iter()
                .map(|(function, position)| {
                    let (file, line) =
                        position.unwrap_or_else(|| panic!("{what}: no position in {function}"));
                    (function, file, line)
                })
                .collect();
            assert_eq!(frames, expected, "{what}: frames at {:#x}", pc - 1);
            // The physical function is still the outermost frame.
            assert_eq!(
                table.func_for_pc(pc - 1).map(|f| f.name),
                Some("main.outer"),
                "{what}"
            );

            let binary = escapade::tracee::gobin::GoBinary::open(&path, None)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let symbolized = binary.symbolize_inlined(pc - 1);
            assert_eq!(
                symbolized
                    .iter()
                    .map(|f| (f.function.clone(), f.file.clone().unwrap(), f.line.unwrap()))
                    .collect::<Vec<_>>(),
                expected,
                "{what}: symbolize_inlined"
            );
            assert_eq!(
                binary.symbolize(pc - 1).as_ref(),
                symbolized.first(),
                "{what}: symbolize"
            );
        }
    }
}
