//! `cargo xtask test [-- cargo test args]`: the workspace tests against the Go version matrix.

use std::{env, ffi::OsString, fs, process::Command};

use anyhow::{Context, Result, bail};

use crate::{cmd, paths, setup};

#[derive(clap::Args)]
pub struct Options {
    /// Extra arguments for `cargo test` (after `--`), e.g. `-- -p escapade -- --nocapture`.
    #[arg(last = true)]
    pub(crate) cargo_args: Vec<OsString>,
}

pub fn run(options: Options) -> Result<()> {
    if !is_root()? {
        bail!("the tests load eBPF programs and must run as root (try `sudo -E cargo xtask test`)");
    }
    let tools = setup::run()?;
    let go_path = env::join_paths(tools.go.iter().map(|(_, go)| go))
        .context("a go binary's path contains ':'")?;
    let mut test = Command::new("cargo");
    test.current_dir(paths::workspace_root())
        .args(["test", "--workspace", "--exclude", "probe-ebpf"])
        .args(&options.cargo_args)
        .env("ESCAPADE_GO", go_path)
        .env("ESCAPADE_CACHE", &tools.cache);
    say!("running `{}`", cmd::display(&test));
    cmd::run(&mut test)
}

/// Whether the effective user is root, from the `Uid:` line of /proc/self/status.
pub fn is_root() -> Result<bool> {
    let status =
        fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    Ok(effective == "0")
}
