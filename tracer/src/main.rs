//! The `escapade` binary: parse arguments, run the command (`commands/`, one file each), print
//! errors with a hint.

mod commands;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use escapade::cli::{Cli, Command};
use escapade::hints::hint;

fn main() -> ExitCode {
    keep_malloc_from_hoarding();
    let cli = Cli::parse();
    let filter = if cli.verbose {
        "escapade=debug"
    } else {
        "escapade=warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = runtime
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            match hint(&err) {
                Some(hint) => eprintln!("escapade: {err:#} (hint: {hint})"),
                None => eprintln!("escapade: {err:#}"),
            }
            ExitCode::from(2)
        }
    }
}

/// glibc's malloc raises its mmap threshold to the size of any big block freed (up to 32 MB),
/// and its trim threshold to twice that, after which freed heap memory stays with the process:
/// the section copies freed while a big binary is modelled would leave the agent holding
/// another 15 MB for good. A fixed threshold turns that adjustment off, so big blocks go back
/// to the kernel when freed. Not glibc's initial 128 KiB: buffers of a few hundred KiB that
/// come and go with every batch of events (a deep call stack's in-flight calls) would then be
/// mapped and unmapped each time, slowly enough to lose events (tests/stress.rs).
fn keep_malloc_from_hoarding() {
    const MMAP_THRESHOLD: libc::c_int = 4 << 20;
    // SAFETY: mallopt only sets a malloc parameter; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Trace(args) => commands::trace::run(args).await,
        Command::Allocs(args) => commands::allocs::run(args).await,
        Command::Params(args) => commands::params::run(args).await,
        Command::Hot(args) => commands::hot::run(args).await,
        Command::Record(args) => commands::record::run(args).await,
        Command::Report(args) => commands::report::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Agent(args) => commands::agent::run(args).await,
        Command::Doctor(args) => commands::doctor::run(args),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
