//! Stripped binaries (`-ldflags=-s -w`) against the same program built with its symbol table
//! and DWARF: the runtime variables escapade finds in machine code must sit where the symbol
//! table says, and the per-version runtime layouts must equal DWARF's, for each Go version.
//! `tests/allocs.rs` runs sampled and exact allocs, GC cycles and stack growth on stripped
//! builds end to end.

mod common;

use escapade::tracee::gobin::GoBinary;
use escapade::tracee::gobin::dwarf::DwarfInfo;
use escapade::tracee::gobin::layouts;

/// A stripped build and the one it was made from: same Go, same flags but `-s -w`, so the
/// linker puts code and variables at the same addresses.
fn builds(go: &common::Go, pie: bool) -> (GoBinary, GoBinary) {
    let flags: &[&str] = if pie { &["-buildmode=pie"] } else { &[] };
    let full = common::build(go, "profile", flags);
    let stripped = common::build(go, "profile", &[flags, &["-ldflags=-s -w"]].concat());
    let open = |p: &std::path::Path| {
        GoBinary::open(p, None).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    (open(&full), open(&stripped))
}

#[test]
fn runtime_variables_found_in_code_are_where_the_symbol_table_says() {
    for go in common::toolchains() {
        for pie in [false, true] {
            let what = format!("{} pie={pie}", go.version);
            let (full, stripped) = builds(&go, pie);
            assert!(full.has_dwarf() && !stripped.has_dwarf(), "{what}");
            let symbols = |b: &GoBinary| {
                let data = std::fs::read(&b.path).unwrap();
                let file = object::File::parse(&*data).unwrap();
                object::Object::symbols(&file).count()
            };
            assert!(
                symbols(&full) > 0,
                "{what}: the reference has a symbol table"
            );
            assert_eq!(symbols(&stripped), 0, "{what}: -s drops the symbol table");

            // Read-only data can sit a few bytes apart in the two builds (Go 1.27's do), so the
            // section rule is checked on the build whose symbol table says where it is.
            assert_eq!(
                layouts::types_section(&full.sections).map(|s| s.addr),
                full.types_base,
                "{what}: runtime.types, which type names are relative to"
            );
            same_runtime_addresses(&full, &stripped, &what);
        }
    }
}

/// What sampled allocs and GC cycles read in `stripped` is where `full`'s symbol table says.
fn same_runtime_addresses(full: &GoBinary, stripped: &GoBinary, what: &str) {
    let (want, got) = (&full.runtime_vars, &stripped.runtime_vars);
    let words = [
        (
            "runtime.MemProfileRate",
            full.mem_profile_rate,
            stripped.mem_profile_rate,
        ),
        (
            "runtime.disableMemoryProfiling",
            full.disable_memory_profiling,
            stripped.disable_memory_profiling,
        ),
        (
            "runtime.startingStackSize",
            want.starting_stack_size,
            got.starting_stack_size,
        ),
        ("runtime.g.gopc", want.g_gopc, got.g_gopc),
        ("runtime.g.startpc", want.g_startpc, got.g_startpc),
    ];
    for (name, want, got) in words {
        assert!(want.is_some(), "{what}: the reference has {name}");
        assert_eq!(got, want, "{what}: {name}");
    }
    // Each is a variable's address plus a field's offset: runtime.work, memstats and
    // gcController from the code, the offsets from the per-version table.
    assert!(want.gc_fields.is_some(), "{what}");
    assert_eq!(
        got.gc_fields, want.gc_fields,
        "{what}: GC record fields (probe_common::GC_*)"
    );
}

/// A large real program nobody here wrote: each toolchain's own `go` command (a symbol table,
/// no DWARF, built with the release's own compiler settings), and a copy of it run through
/// `strip`.
#[test]
fn the_go_command_stripped_has_its_runtime_variables_found() {
    for go in common::toolchains() {
        let copy = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("go-command-{}-stripped", go.version));
        let status = std::process::Command::new("strip")
            .arg("-o")
            .arg(&copy)
            .arg(&go.bin)
            .status()
            .expect("strip (binutils)");
        assert!(status.success(), "strip {}", go.bin.display());
        let full = GoBinary::open(&go.bin, None).unwrap();
        let stripped = GoBinary::open(&copy, None).unwrap();
        same_runtime_addresses(&full, &stripped, &format!("{} go command", go.version));
    }
}

#[test]
fn runtime_layout_table_equals_dwarf() {
    let mut wrong = Vec::new();
    for go in common::toolchains() {
        let bin = common::build(&go, "profile", &[]);
        let data = std::fs::read(&bin).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let dwarf = DwarfInfo::load(&file).unwrap().expect("DWARF");
        let binary = GoBinary::open(&bin, None).unwrap();
        for (ty, field) in layouts::RUNTIME_FIELDS {
            let want = dwarf.field_offset(ty, &[field]).unwrap();
            assert!(want.is_some(), "{}: DWARF has no {ty}.{field}", go.version);
            let got = layouts::field_offset(binary.version, ty, field);
            if got != want {
                wrong.push(format!(
                    "{}: {ty}.{field}: table {got:?}, DWARF {want:?}",
                    go.version
                ));
            }
        }
        let g = dwarf.g_layout().unwrap().expect("runtime.g in DWARF");
        if layouts::g_layout(binary.version) != Some(g) {
            wrong.push(format!("{}: runtime.g: DWARF {g:?}", go.version));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The heap profiler's state, read through the variables found in the code as through the
/// symbol table: a program that never asks for a heap profile (the linker turned sampling off),
/// and one that turned it off itself (`MemProfileRate = 0`).
#[test]
fn a_stripped_binary_tells_why_nothing_is_sampled() {
    for go in common::toolchains() {
        for flags in [&[][..], &["-ldflags=-s -w"][..]] {
            let what = format!("{} {flags:?}", go.version);
            let never = common::build(&go, "args", flags);
            refused(
                &never,
                &[],
                "the linker turned heap-profile sampling off",
                &what,
            );
            let off = common::build(&go, "profile", flags);
            refused(&off, &["off"], "runtime.MemProfileRate is 0 in PID", &what);
        }
    }
}

/// Sampled `allocs` on `bin` started with `args` fails with one line saying `why`.
fn refused(bin: &std::path::Path, args: &[&str], why: &str, what: &str) {
    let mut target = common::Target::start(bin, args);
    let pid = target.pid.to_string();
    let out = common::escapade(&["allocs", "--pid", &pid, "--duration", "5s"]);
    target.child.kill().unwrap();
    target.child.wait().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
    assert!(stderr.contains(why), "{what}: {stderr}");
}
