//! Command-line arguments. Only parsing and validation live here; `main.rs` turns them into a
//! session.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::session::PlacementMode;

#[derive(Debug, Parser)]
#[command(
    name = "escapade",
    version,
    about = "Trace a running Go process by PID: arguments, results and where they live"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log what escapade does (probe placement, attach steps) to stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every call of the named functions, live: arguments, caller, results, duration.
    Trace(TraceArgs),
    /// Count heap allocations by call stack and type, and report the top allocation sites.
    Allocs(AllocsArgs),
    /// For each parameter of the named functions: how it arrives, where its pointer points
    /// (stack, heap, globals), and whether the function moves it to the heap.
    Params(ParamsArgs),
}

/// Which process to attach to and for how long; shared by every command that attaches.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// PID of the running Go process.
    #[arg(short, long)]
    pub pid: u32,
    /// Detach after this long (e.g. 10s, 2m); default: until Ctrl-C or the process exits.
    #[arg(short, long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Functions to trace, by full Go name; `*` and `?` match any text, e.g. 'main.*',
    /// 'main.(*Server).handle'.
    #[arg(required = true, value_name = "FUNCTION")]
    pub functions: Vec<String>,
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print only the end-of-run summary, not a line per call.
    #[arg(short, long)]
    pub quiet: bool,
    /// Copy the first N bytes of string arguments (at most 64); off by default because
    /// arguments may hold secrets.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub capture_strings: u32,
    /// Where entry probes sit: `fast` uses the stack-check branch the kernel emulates,
    /// `callsites` also moves leaf functions' probes to their direct CALL sites, `entry` uses
    /// the first instruction (single-stepped, about 20x slower per hit).
    #[arg(long, value_enum, default_value_t = PlacementMode::Fast)]
    pub placement: PlacementMode,
    /// Probe entries only: arguments but no results or durations, for hot functions. Saves the
    /// return probe, which the kernel single-steps (~10 us a call).
    #[arg(long)]
    pub entries_only: bool,
    /// Attach an empty BPF program at the same places instead (for benchmarks).
    #[arg(long, hide = true)]
    pub empty_probes: bool,
}

#[derive(Debug, Args)]
pub struct AllocsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Count every allocation (a probe on runtime.mallocgc, aggregated in the kernel), at a
    /// higher cost. By default escapade rides on the runtime's own heap-profile sampling
    /// (one object per runtime.MemProfileRate bytes) and follows each sampled object until the
    /// GC frees it.
    #[arg(long)]
    pub exact: bool,
    /// Set runtime.MemProfileRate in the running process to N (bytes between samples; 1
    /// samples every allocation) for the session, and restore it when escapade detaches.
    #[arg(long, value_name = "N", conflicts_with = "exact")]
    pub mem_profile_rate: Option<u64>,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How many allocation sites the table shows.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

#[derive(Debug, Args)]
pub struct ParamsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Functions whose parameters to follow, by full Go name, with `*` and `?` wildcards.
    #[arg(required = true, value_name = "FUNCTION")]
    pub functions: Vec<String>,
    /// Print one JSON object per parameter, then a summary, instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also stream each call's evidence as a JSON line while tracing.
    #[arg(long)]
    pub events: bool,
    /// Skip the allocator probes: no run-time moved-to-heap check and no heap cost per call,
    /// for the cheapest tracing (the static moved-to-heap check stays).
    #[arg(long)]
    pub no_allocs: bool,
}
