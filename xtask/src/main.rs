//! Project tasks for escapade: `cargo xtask setup | test | vmtest | demo | bench | lint`.

/// Prints a message to stderr, prefixed with `xtask:`.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("xtask: {}", format_args!($($arg)*))
    };
}

mod bench;
mod cmd;
mod demo;
mod kernels;
mod lint;
mod paths;
mod setup;
mod test;
mod tracefs;
mod vmtest;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Project tasks for escapade", disable_version_flag = true)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the project needs (rust-src, bpf-linker, the Go version matrix); idempotent.
    Setup,
    /// Run setup, then the workspace tests against every Go version of the matrix (needs root).
    Test(test::Options),
    /// Run the kernel compatibility suite on this machine's kernel, then on Debian 12's 6.1 and
    /// Debian 13's 6.12 under QEMU (installs them, QEMU and virtme-ng; needs root).
    Vmtest(vmtest::Options),
    /// Build escapade and the bundled Go demo, then trace the running demo.
    Demo(demo::Options),
    /// Measure what tracing costs a hot Go function, per call, by probe placement (needs root).
    Bench(bench::Options),
    /// rustfmt check and clippy, for the host crates and for the eBPF crate.
    Lint,
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Setup => setup::run().map(drop),
        Task::Test(options) => test::run(options),
        Task::Vmtest(options) => vmtest::run(options),
        Task::Demo(options) => demo::run(options),
        Task::Bench(options) => bench::run(options),
        Task::Lint => lint::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            say!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_passes_everything_after_the_first_double_dash_to_cargo() {
        let cli =
            Cli::try_parse_from(["xtask", "test", "--", "-p", "escapade", "--", "--nocapture"])
                .unwrap();
        let Task::Test(options) = cli.task else {
            panic!("not the test task")
        };
        assert_eq!(options.cargo_args, ["-p", "escapade", "--", "--nocapture"]);
    }
}
