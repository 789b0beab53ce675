//! Helpers shared by the integration tests: find the Go toolchains `cargo xtask setup` installed
//! and build the Go programs under `tests/go/`.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

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
