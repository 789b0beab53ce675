//! Command-line arguments. Only parsing and validation live here; the binary's `commands/`
//! turn them into a session.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::export::Weight;
use crate::model::hot::Weights;
use crate::probes::attach::TailCapture;
use crate::probes::plan::{PlacementMode, PlanOptions, ReturnsMode};

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
    /// Rank call paths of the named functions by CPU samples and parameter lifetime overlap:
    /// score = 0.6 CPU + 0.4 PLO.
    Hot(HotArgs),
    /// Record calls and allocations to a file, to report on or export later without the target.
    Record(RecordArgs),
    /// Print a recording's views offline, as `trace` and `allocs` print them live (no root).
    Report(ReportArgs),
    /// Convert a recording for other tools: pprof, Perfetto, a flame graph (no root).
    Export(ExportArgs),
    /// Run as a daemon: trace the configured targets through their restarts, and serve
    /// Prometheus metrics and pprof profiles over HTTP.
    Agent(AgentArgs),
    /// Tell what this kernel lets each command do: its BPF features, escapade's privileges,
    /// and every eBPF program loaded (not attached) as the commands load it. Exits 1 when a
    /// command cannot work here.
    Doctor(DoctorArgs),
}

/// Which process to attach to and for how long; shared by every command that attaches.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("process").required(true)))]
pub struct TargetArgs {
    /// PID of the running Go process.
    #[arg(short, long, group = "process")]
    pub pid: Option<u32>,
    /// Or a program to start with the probes in place before its first instruction (after
    /// `--`, with its arguments); escapade exits with its status.
    #[arg(last = true, value_name = "PROGRAM", group = "process")]
    pub command: Vec<std::ffi::OsString>,
    /// Detach after this long (e.g. 10s, 2m); default: until Ctrl-C or the process exits.
    #[arg(short, long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// DWARF and symbols for a stripped target: the file it was stripped from, or its
    /// `objcopy --only-keep-debug` file (same Go build ID). Without it escapade also looks in
    /// /usr/lib/debug/.build-id by the binary's GNU build ID.
    #[arg(long, value_name = "FILE")]
    pub symbols: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Functions to trace, by full Go name; `*` and `?` match any text, e.g. 'main.*',
    /// 'main.(*Server).handle'.
    #[arg(required = true, value_name = "FUNCTION")]
    pub functions: Vec<String>,
    #[command(flatten)]
    pub calls: CallArgs,
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print only the end-of-run summary, not a line per call.
    #[arg(short, long, conflicts_with_all = ["slower_than", "errors"])]
    pub quiet: bool,
    /// Attach an empty BPF program at the same places instead (for benchmarks).
    #[arg(long, hide = true)]
    pub empty_probes: bool,
    /// Which process, and for how long (after the functions: a program to launch comes last).
    #[command(flatten)]
    pub target: TargetArgs,
}

/// How traced functions are probed; shared by `trace` and `record`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Copy the first N bytes of string arguments (at most 64); off by default because
    /// arguments may hold secrets.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub capture_strings: u32,
    /// Where entry probes sit: `fast` uses the stack-check branch the kernel emulates,
    /// `callsites` also moves leaf functions' probes to their direct CALL sites, `entry` uses
    /// the first instruction (single-stepped, about 20x slower per hit).
    #[arg(long, value_enum, default_value_t = Placement::Fast)]
    pub placement: Placement,
    /// Probe entries only: arguments but no results or durations.
    #[arg(long, conflicts_with_all = ["returns", "results"])]
    pub entries_only: bool,
    /// Which returns are seen. `all`: every call's, in the caller just after a direct call
    /// (emulated, ~0.5 us) where it can be, else on the function's RETs (single-stepped, ~10
    /// us a call; kept for functions called through func values or interfaces). `direct`:
    /// only the callers' side; the other calls are counted as not observed. `sampled[=1%]`:
    /// as `all`, with the RET probes attached only in windows adding up to that share of the
    /// time; calls made between windows that need them are counted as not observed.
    #[arg(long, value_name = "all|direct|sampled[=N%]", default_value = "all", value_parser = parse_returns)]
    pub returns: ReturnsMode,
    /// `exact` also probes the RETs for call sites that discard a result (`_ = f()`), so that
    /// its value is shown; by default such a result shows as `discarded`.
    #[arg(long, value_enum, default_value_t = Results::Seen)]
    pub results: Results,
    /// Tail capture: show only calls that took at least this long (e.g. 5ms), decided in the
    /// kernel at their return; every call is still counted and timed in the summary.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "entries_only")]
    pub slower_than: Option<Duration>,
    /// Tail capture: show only calls whose last result is an `error` and not nil (with
    /// --slower-than, either kind); needs DWARF to know which result that is.
    #[arg(long, conflicts_with = "entries_only")]
    pub errors: bool,
}

/// `--placement`, as [`PlacementMode`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Placement {
    Fast,
    Callsites,
    Entry,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Results {
    /// The values the caller sees.
    Seen,
    /// Every value the function returns.
    Exact,
}

impl CallArgs {
    /// The calls tail capture sends, if it is asked for.
    pub fn tail(&self) -> Option<TailCapture> {
        (self.slower_than.is_some() || self.errors).then(|| TailCapture {
            // At least 1 ns: 0 means no duration criterion.
            slower_than_ns: self.slower_than.map_or(0, |d| (d.as_nanos() as u64).max(1)),
            errors: self.errors,
        })
    }

    pub fn plan_options(&self) -> PlanOptions {
        PlanOptions {
            capture_strings: self.capture_strings,
            placement: match self.placement {
                Placement::Fast => PlacementMode::Fast,
                Placement::Callsites => PlacementMode::Callsites,
                Placement::Entry => PlacementMode::Entry,
            },
            entries_only: self.entries_only,
            returns: self.returns,
            exact_results: self.results == Results::Exact,
        }
    }
}

#[derive(Debug, Args)]
pub struct AllocsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub mode: AllocModeArgs,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How many allocation sites the table shows.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

/// How allocations are counted; shared by `allocs` and `record --allocs`.
#[derive(Debug, Args)]
pub struct AllocModeArgs {
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
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The recording to write (mode 0600; replaced if it exists).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Functions to trace, as for `trace`; none to record only allocations or CPU samples.
    #[arg(value_name = "FUNCTION", required_unless_present_any = ["allocs", "cpu"])]
    pub functions: Vec<String>,
    #[command(flatten)]
    pub calls: CallArgs,
    /// Also follow the traced functions' parameters, as `params` does (needs their return
    /// probes: not with --entries-only).
    #[arg(long, requires = "functions", conflicts_with = "entries_only")]
    pub params: bool,
    /// Also count heap allocations, goroutine creations and GC cycles, as `allocs` does.
    #[arg(long)]
    pub allocs: bool,
    #[command(flatten)]
    pub mode: AllocModeArgs,
    /// Also sample the target's CPU per user stack (for `export --pprof` and
    /// `export --flamegraph --weight cpu`).
    #[arg(long)]
    pub cpu: bool,
    #[command(flatten)]
    pub sampling: CpuArgs,
    /// Start a new file (FILE.1, FILE.2, ...) once one reaches this size, e.g. 100M or 2GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    #[command(flatten)]
    pub view: SummaryArgs,
    /// Which process, and for how long (after the functions: a program to launch comes last).
    #[command(flatten)]
    pub target: TargetArgs,
}

/// How the end-of-run summaries print; `record` and `report` print the same ones.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// How many allocation sites the table shows.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

#[derive(Debug, Args)]
pub struct ParamsArgs {
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
    /// Which process, and for how long (after the functions: a program to launch comes last).
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct HotArgs {
    /// Functions whose paths to rank, by full Go name, with `*` and `?` wildcards.
    #[arg(required = true, value_name = "FUNCTION")]
    pub functions: Vec<String>,
    /// Print one JSON object per path, then a summary, instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How many paths to show, highest score first.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Weights of CPU share and parameter lifetime overlap in the score.
    #[arg(long, value_name = "CPU,PLO", default_value = "0.6,0.4", value_parser = parse_weights)]
    pub weights: Weights,
    #[command(flatten)]
    pub cpu: CpuArgs,
    /// Which process, and for how long (after the functions: a program to launch comes last).
    #[command(flatten)]
    pub target: TargetArgs,
}

/// How the CPU is sampled; shared by `hot` and `record --cpu`.
#[derive(Debug, Args)]
pub struct CpuArgs {
    /// CPU samples per second on each CPU (the kernel refuses rates above
    /// kernel.perf_event_max_sample_rate).
    #[arg(long, default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..))]
    pub hz: u64,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A recording made by `escapade record`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print only the summaries, not a line per call.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub view: SummaryArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("format").required(true).multiple(true)))]
pub struct ExportArgs {
    /// A recording made by `escapade record`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Write a gzipped profile.proto for `go tool pprof`: calls, call time and, when recorded,
    /// allocations (and in-use objects in sampled mode).
    #[arg(long, value_name = "OUT", group = "format")]
    pub pprof: Option<PathBuf>,
    /// Write Chrome trace-event JSON for Perfetto or chrome://tracing: one track per goroutine.
    #[arg(long, value_name = "OUT", group = "format")]
    pub perfetto: Option<PathBuf>,
    /// Write an SVG flame graph.
    #[arg(long, value_name = "OUT", group = "format")]
    pub flamegraph: Option<PathBuf>,
    /// What the flame graph's widths count; default: allocated bytes when the recording has
    /// allocations, else calls when it traced functions, else CPU samples.
    #[arg(long, value_enum, requires = "flamegraph")]
    pub weight: Option<FlameGraphWeight>,
}

/// `--weight`, as [`Weight`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FlameGraphWeight {
    Calls,
    Bytes,
    Cpu,
}

impl ExportArgs {
    /// What the flame graph's widths count, if `--weight` says.
    pub fn flamegraph_weight(&self) -> Option<Weight> {
        self.weight.map(|weight| match weight {
            FlameGraphWeight::Calls => Weight::Calls,
            FlameGraphWeight::Bytes => Weight::Bytes,
            FlameGraphWeight::Cpu => Weight::Cpu,
        })
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("targets").required(true)))]
pub struct AgentArgs {
    /// The agent's configuration (TOML): where to listen, and the targets. SIGHUP reloads it.
    #[arg(long, value_name = "FILE", group = "targets")]
    pub config: Option<PathBuf>,
    /// Trace every process running this executable, without a config file.
    #[arg(long, value_name = "PATH", group = "targets")]
    pub exe: Option<PathBuf>,
    /// The target's name in metrics and URLs; default: the executable's file name.
    #[arg(long, requires = "exe")]
    pub name: Option<String>,
    /// Address of the HTTP endpoints.
    #[arg(long, default_value = crate::agent::config::DEFAULT_LISTEN, requires = "exe")]
    pub listen: std::net::SocketAddr,
    /// How allocations are counted: sampled (the runtime's heap-profile samples), exact, off.
    #[arg(long, default_value = "sampled", requires = "exe")]
    pub allocs: crate::agent::config::AllocMode,
    /// Functions to count and time, as `trace` names them.
    #[arg(value_name = "FUNCTION", requires = "exe")]
    pub functions: Vec<String>,
}

impl AgentArgs {
    pub fn into_source(self) -> crate::agent::Source {
        use crate::agent::config::{Config, Selector, TargetConfig};
        let Some(exe) = self.exe else {
            let config = self.config.expect("clap requires --config or --exe");
            return crate::agent::Source::File(config);
        };
        let name = self.name.unwrap_or_else(|| {
            exe.file_name()
                .map_or_else(|| "target".into(), |n| n.to_string_lossy().into_owned())
        });
        crate::agent::Source::Given(Config {
            listen: self.listen,
            targets: vec![TargetConfig {
                name,
                selector: Selector::Exe(exe),
                functions: self.functions,
                allocs: self.allocs,
                capture_strings: 0,
                record: None,
                symbols: None,
                cpu_hz: 0,
            }],
        })
    }
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print one JSON object instead of text (its fields are in the README).
    #[arg(long)]
    pub json: bool,
}

fn parse_weights(s: &str) -> Result<Weights, String> {
    let parse = |w: &str| {
        w.trim()
            .parse::<f64>()
            .ok()
            .filter(|w| w.is_finite() && *w >= 0.0)
            .ok_or_else(|| format!("{w:?} is not a non-negative number"))
    };
    match s.split_once(',') {
        Some((cpu, plo)) => Ok(Weights {
            cpu: parse(cpu)?,
            plo: parse(plo)?,
        }),
        None => Err("expected two weights, CPU and PLO, as in 0.6,0.4".into()),
    }
}

/// `all`, `direct`, `sampled` (1 %) or `sampled=N%`; `rets`, every return on the RETs and none
/// at return sites, is there for benchmarks.
fn parse_returns(s: &str) -> Result<ReturnsMode, String> {
    match s {
        "all" => Ok(ReturnsMode::All),
        "direct" => Ok(ReturnsMode::Direct),
        "rets" => Ok(ReturnsMode::Rets),
        "sampled" => Ok(ReturnsMode::Sampled { percent: 1.0 }),
        _ => {
            let percent = s
                .strip_prefix("sampled=")
                .and_then(|p| p.strip_suffix('%'))
                .and_then(|p| p.parse::<f64>().ok())
                .filter(|p| *p > 0.0 && *p <= 100.0)
                .ok_or("expected all, direct, sampled or sampled=N% (0 < N <= 100)")?;
            Ok(ReturnsMode::Sampled { percent })
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_program_to_launch_comes_after_the_functions() {
        let cli = Cli::try_parse_from([
            "escapade", "trace", "main.f", "main.g", "--", "./prog", "-v",
        ])
        .unwrap();
        let Command::Trace(args) = cli.command else {
            panic!("not trace")
        };
        assert_eq!(args.functions, ["main.f", "main.g"]);
        assert_eq!(args.target.command, ["./prog", "-v"]);
        assert_eq!(args.target.pid, None);
        assert!(Cli::try_parse_from(["escapade", "trace", "main.f"]).is_err());
        assert!(
            Cli::try_parse_from(["escapade", "trace", "-p", "1", "main.f", "--", "./prog"])
                .is_err()
        );
    }
}
