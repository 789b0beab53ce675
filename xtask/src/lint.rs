//! `cargo xtask lint`: rustfmt and clippy.
//!
//! Clippy runs twice, as in aya-template's test.sh: the eBPF crate cannot be checked together
//! with the host crates, because feature unification would turn on the `user` (std) side of
//! `probe-common` for it too, and because it only builds for `bpfel-unknown-none` on nightly
//! (`-C panic=abort`: unwinding panics are not supported without std).

use std::process::Command;

use anyhow::{Result, bail};

use crate::{cmd, paths, setup};

pub fn run() -> Result<()> {
    // The tracer's build script builds the eBPF crate: it needs rust-src and bpf-linker.
    setup::rust(&paths::cache_dir()?)?;

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);

    let mut clippy = cargo();
    clippy.args(["clippy", "--all-targets", "--", "-D", "warnings"]);

    let mut clippy_ebpf = cargo();
    clippy_ebpf
        .args(["+nightly", "clippy", "-p", "probe-ebpf"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"])
        .env("RUSTFLAGS", "-C panic=abort");

    let mut failed = Vec::new();
    for command in [&mut fmt, &mut clippy, &mut clippy_ebpf] {
        say!("running `{}`", cmd::display(command));
        if let Err(error) = cmd::run(command) {
            say!("{error:#}");
            failed.push(cmd::display(command));
        }
    }
    match failed.as_slice() {
        [] => Ok(()),
        [one] => bail!("lint failed: `{one}`"),
        many => bail!("{} lint steps failed: `{}`", many.len(), many.join("`, `")),
    }
}

fn cargo() -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(paths::workspace_root());
    command
}
