//! The `escapade` binary: parse arguments, run the command, print errors with a hint.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use escapade::attach::{Attached, ProbePoint, Programs, Scope, attach};
use escapade::cli::{
    AllocModeArgs, AllocsArgs, Cli, Command, ExportArgs, HotArgs, ParamsArgs, RecordArgs,
    ReportArgs, TargetArgs, TraceArgs,
};
use escapade::target::clock::WallClock;
use escapade::cpu::Sampler;
use escapade::decode::Decoder;
use escapade::hints::{hint, without_dwarf};
use escapade::hot::HotSink;
use escapade::target::launch::Launched;
use escapade::target::memprofile::MemProfileRate;
use escapade::model::{CallModel, FunctionInfo, Symbols};
use escapade::params::{AllocationProbes, KernelParams, ParamTracker};
use escapade::record::live::{CpuSampling, RecordSink};
use escapade::record::reader::Replay;
use escapade::record::writer::{Writer, part_path};
use escapade::record::{AllocSettings, Header, Latest, write_summaries};
use escapade::report::{
    AllocsMeta, ParamsMeta, TracePrinter, TraceView, write_allocs, write_params,
};
use escapade::session::{
    self, CountingProbes, PlacementMode, Plan, PlanOptions, ReturnsMode, Target,
};
use escapade::sink::EventSink;

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
        Command::Trace(args) => trace(args).await,
        Command::Allocs(args) => allocs(args).await,
        Command::Params(args) => params(args).await,
        Command::Hot(args) => hot(args).await,
        Command::Record(args) => record(args).await,
        Command::Report(args) => report(args),
        Command::Export(args) => export(args),
        Command::Agent(args) => escapade::agent::run(args.into_source()).await,
    }
}

async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let (target, launched) = open_target(&args.target)?;
    let plan = plan_calls(&target, &args.functions, &args.calls.plan_options())?;
    let programs = match (args.empty_probes, args.quiet, args.calls.tail()) {
        (true, _, _) => Programs::Empty,
        // The summary alone: the kernel counts and times the calls, no event per call.
        (_, true, _) => Programs::Counting,
        (_, _, Some(tail)) => Programs::Tail(tail),
        _ => Programs::Tracing,
    };
    let doing = format!(
        "{} functions, {} probes",
        plan.traced.len(),
        plan.points.len()
    );
    let mut attached = attach_to(&target, launched.as_ref(), &plan.points, programs, &doing)?;
    sample_rets(&mut attached, &args.calls)?;
    let decoder = Decoder::new(&target.binary, &target.process, target.bias);
    let stdout = std::io::stdout().lock();
    let mut printer = TracePrinter::new(
        decoder,
        &plan,
        args.json,
        args.quiet,
        std::io::BufWriter::new(stdout),
    );
    let (ended, malformed) =
        session::run(&target, &mut attached, args.target.duration, &mut printer).await?;
    let kernel = attached.call_stats(plan.traced.len())?;
    let still_running = still_running(&target, &attached)?;
    printer.summary(
        ended,
        attached.counters(),
        malformed,
        &kernel,
        still_running,
    )?;
    exit_as(launched)
}

async fn allocs(args: AllocsArgs) -> anyhow::Result<()> {
    let (target, launched) = open_target(&args.target)?;
    let (rate, probes) = plan_allocs(&target, &args.mode)?;
    let what = match &rate {
        None => "every allocation".to_string(),
        Some(rate) => format!(
            "the heap profiler's samples (MemProfileRate {})",
            rate.in_effect
        ),
    };
    let doing = format!("counting {what}, goroutine creations and GC cycles");
    let mut attached = attach_to(
        &target,
        launched.as_ref(),
        &probes.points,
        Programs::Tracing,
        &doing,
    )?;
    let started = std::time::Instant::now();
    let run = session::run(&target, &mut attached, args.target.duration, &mut Discard).await;
    if let Some(rate) = &rate {
        rate.restore(&target.process, target.bias)?;
    }
    let (ended, _) = run?;
    let elapsed = started.elapsed();
    let mut decoder = Decoder::new(&target.binary, &target.process, target.bias);
    let report = escapade::allocs::view(&attached, &WallClock::now(), &mut decoder)?;
    let stdout = std::io::stdout().lock();
    write_allocs(
        &report,
        &AllocsMeta {
            ended: Some(ended),
            elapsed,
            mem_profile_rate: rate.map(|r| r.in_effect),
            probes: &placed(&probes),
            counters: attached.counters(),
        },
        args.json,
        args.top,
        std::io::BufWriter::new(stdout),
    )?;
    exit_as(launched)
}

async fn params(args: ParamsArgs) -> anyhow::Result<()> {
    let (target, launched) = open_target(&args.target)?;
    ensure_dwarf(&target)?;
    let functions = target.binary.resolve(&args.functions)?;
    let mut plan = Plan::new(&target.binary, functions, &PlanOptions::default())?;
    let mut decoder = Decoder::new(&target.binary, &target.process, target.bias);
    let probes = AllocationProbes::plan(&target.binary, &mut decoder, &mut plan, !args.no_allocs)?;
    let doing = format!(
        "{} functions, {} probes",
        plan.traced.len(),
        plan.points.len()
    );
    // Each call's evidence (--events) is worked out from its events; without, the kernel
    // does the work and sends nothing per call.
    let programs = if args.events {
        Programs::Tracing
    } else {
        escapade::params::fits_the_kernel(&plan)?;
        Programs::Params
    };
    let mut attached = attach_to(&target, launched.as_ref(), &plan.points, programs, &doing)?;
    let (ended, malformed, view) = if args.events {
        let mut tracker = ParamTracker::new(decoder, &plan, &probes, Some(std::io::stdout()));
        let (ended, malformed) =
            session::run(&target, &mut attached, args.target.duration, &mut tracker).await?;
        (ended, malformed, tracker.view())
    } else {
        let mut kernel = KernelParams::new(&target.binary, &target.process, target.bias);
        let (ended, malformed) =
            session::run(&target, &mut attached, args.target.duration, &mut kernel).await?;
        let in_flight = still_running(&target, &attached)?;
        (
            ended,
            malformed,
            kernel.view(&plan, &probes, &attached, in_flight)?,
        )
    };
    let stdout = std::io::stdout();
    write_params(
        &view,
        &ParamsMeta {
            ended: Some(ended),
            counters: attached.counters(),
            malformed,
        },
        args.json,
        stdout.is_terminal(),
        std::io::BufWriter::new(stdout.lock()),
    )?;
    exit_as(launched)
}

async fn hot(args: HotArgs) -> anyhow::Result<()> {
    escapade::cpu::check_rate(args.cpu.hz)?;
    let (target, launched) = open_target(&args.target)?;
    let plan = plan_calls(&target, &args.functions, &PlanOptions::default())?;
    let doing = format!(
        "{} functions, {} probes, sampling CPU at {} Hz",
        plan.traced.len(),
        plan.points.len(),
        args.cpu.hz
    );
    let mut attached = attach_to(
        &target,
        launched.as_ref(),
        &plan.points,
        Programs::Tracing,
        &doing,
    )?;
    let sampler = Sampler::start(&mut attached, args.cpu.hz)?;
    let decoder = Decoder::new(&target.binary, &target.process, target.bias);
    let mut sink = HotSink::new(CallModel::new(decoder, &plan, false), &plan.traced);
    let (ended, _) = session::run(&target, &mut attached, args.target.duration, &mut sink).await?;
    let profile = sampler.profile(&attached, &target.binary, target.bias)?;
    let view = sink.view(&profile, &target.binary, args.weights);
    let stdout = std::io::stdout().lock();
    escapade::hot::write(
        &view,
        ended,
        args.json,
        args.top,
        std::io::BufWriter::new(stdout),
    )?;
    exit_as(launched)
}

/// How many of the calls the kernel holds open the target still runs.
fn still_running(target: &Target, attached: &Attached) -> anyhow::Result<u64> {
    let offsets = target.binary.go_offsets(target.bias);
    Ok(escapade::calls::still_running(
        &attached.open_calls()?,
        &target.process,
        offsets.g_goid,
        offsets.g_stack_hi,
    ))
}

/// Resolves and places the probes of traced functions; logs where they sit.
fn plan_calls(target: &Target, patterns: &[String], options: &PlanOptions) -> anyhow::Result<Plan> {
    let functions = target.binary.resolve(patterns)?;
    if let Some(note) = without_dwarf(target.binary.has_dwarf()) {
        eprintln!("escapade: {}: {note}", target.process.exe_target.display());
    }
    let plan = Plan::new(&target.binary, functions, options)?;
    for t in &plan.traced {
        tracing::debug!(
            "{}: entry {}, returns {}",
            t.function.name,
            t.entry,
            t.returns
        );
        if let Some(layout) = &t.function.traceback {
            tracing::debug!("{}: argument words from {layout}", t.function.name);
        }
        if let Some(sig) = &t.function.signature {
            // DWARF's own locations are sometimes off (a string passed on the stack is placed
            // a word late), while the ABI's are what the decoding tests check: a detail for -v.
            for m in &sig.abi_mismatches {
                tracing::debug!("{}: {m}", t.function.name);
            }
        }
    }
    Ok(plan)
}

/// The allocation probes, and in sampled mode the heap profiler's rate, checked (and set when
/// asked) in the target.
fn plan_allocs(
    target: &Target,
    mode: &AllocModeArgs,
) -> anyhow::Result<(Option<MemProfileRate>, CountingProbes)> {
    let rate = if mode.exact {
        None
    } else {
        Some(MemProfileRate::prepare(
            &target.binary,
            &target.process,
            target.bias,
            mode.mem_profile_rate,
        )?)
    };
    let probes = session::counting_probes(&target.binary, PlacementMode::Fast, mode.exact)?;
    for (function, entry) in &probes.placed {
        tracing::debug!("{function}: entry {entry}");
    }
    Ok((rate, probes))
}

/// Each probed runtime function and where its probe sits, as the views print it.
fn placed(probes: &CountingProbes) -> Vec<(String, String)> {
    probes
        .placed
        .iter()
        .map(|(f, e)| (f.clone(), e.to_string()))
        .collect()
}

async fn record(args: RecordArgs) -> anyhow::Result<()> {
    if !args.allocs && (args.mode.exact || args.mode.mem_profile_rate.is_some()) {
        anyhow::bail!(
            "--exact and --mem-profile-rate choose how allocations are counted: add --allocs"
        );
    }
    if args.cpu {
        escapade::cpu::check_rate(args.sampling.hz)?;
    }
    let (target, launched) = open_target(&args.target)?;
    if args.params {
        ensure_dwarf(&target)?;
    }
    let mut plan = if args.functions.is_empty() {
        Plan {
            traced: Vec::new(),
            points: Vec::new(),
        }
    } else {
        plan_calls(&target, &args.functions, &args.calls.plan_options())?
    };
    let params = if args.params {
        let mut decoder = Decoder::new(&target.binary, &target.process, target.bias);
        Some(AllocationProbes::plan(
            &target.binary,
            &mut decoder,
            &mut plan,
            true,
        )?)
    } else {
        None
    };
    let allocs = if args.allocs {
        Some(plan_allocs(&target, &args.mode)?)
    } else {
        None
    };
    // Call probes first: events carry their index, which the plan's points keep.
    let mut points = plan.points.clone();
    if let Some((_, probes)) = &allocs {
        points.extend(probes.points.iter().cloned());
    }
    let functions: Vec<FunctionInfo> = plan.traced.iter().map(FunctionInfo::of).collect();
    let header = Header {
        capture_strings: args.calls.capture_strings,
        entries_only: args.calls.entries_only,
        placement: format!("{:?}", args.calls.placement).to_lowercase(),
        allocs: allocs.as_ref().map(|(rate, probes)| AllocSettings {
            mem_profile_rate: rate.as_ref().map(|r| r.in_effect),
            probes: placed(probes),
        }),
        params: args.params,
        cpu_hz: args.cpu.then_some(args.sampling.hz),
        ..Header::for_target(&target, functions.clone())
    };
    let writer = Writer::create(&args.output, header.clone(), args.max_size)?;
    let doing = format!(
        "recording {} functions{}{}{} to {}",
        plan.traced.len(),
        if args.params { " with parameters" } else { "" },
        if allocs.is_some() {
            " and allocations"
        } else {
            ""
        },
        if args.cpu {
            format!(", sampling CPU at {} Hz,", args.sampling.hz)
        } else {
            String::new()
        },
        args.output.display(),
    );
    let programs = args.calls.tail().map_or(Programs::Tracing, Programs::Tail);
    let mut attached = attach_to(&target, launched.as_ref(), &points, programs, &doing)?;
    sample_rets(&mut attached, &args.calls)?;
    let cpu = if args.cpu {
        Some(CpuSampling {
            sampler: Sampler::start(&mut attached, args.sampling.hz)?,
            binary: &target.binary,
            bias: target.bias,
        })
    } else {
        None
    };
    let decoder = || Decoder::new(&target.binary, &target.process, target.bias);
    let stdout = std::io::stdout();
    let view = TraceView::new(
        functions,
        args.view.json,
        true,
        std::io::BufWriter::new(stdout.lock()),
    );
    // Where each traced function starts, for exports that show its source.
    let mut symbols = Symbols::default();
    for t in &plan.traced {
        symbols.learn(&target.binary, t.function.entry);
    }
    let mut sink = RecordSink::new(
        (!plan.traced.is_empty()).then(|| CallModel::new(decoder(), &plan, true)),
        view,
        writer,
        allocs.is_some().then(decoder),
        params
            .as_ref()
            .map(|probes| ParamTracker::new(decoder(), &plan, probes, None)),
        cpu,
        symbols,
    );
    // The kernel's counts so far go into the first file before the first event: with fast
    // probes, a small --max-size can rotate before the first tick reads them.
    sink.checkpoint(&mut attached)?;
    let run = session::run(&target, &mut attached, args.target.duration, &mut sink).await;
    if let Some((Some(rate), _)) = &allocs {
        rate.restore(&target.process, target.bias)?;
    }
    let (ended, malformed) = run?;
    let finished = sink.finish(&attached, ended, malformed)?;
    write_summaries(
        finished.view,
        &header,
        Latest {
            totals: Some(finished.last.totals),
            params: finished.last.params.as_ref(),
            allocs: finished.last.allocs.as_ref(),
            cpu: finished.last.cpu.as_ref(),
            calls_counted: finished.last.calls_counted.as_deref(),
        },
        args.view.json,
        args.view.top,
        std::io::BufWriter::new(stdout.lock()),
    )?;
    let files: Vec<String> = finished
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    eprintln!(
        "escapade: recorded to {}; view with `escapade report {}`",
        files.join(", "),
        files[0]
    );
    exit_as(launched)
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    let mut replay = open_recording(&args.file)?;
    let header = replay.reader.header.clone();
    let stdout = std::io::stdout();
    let mut view = TraceView::new(
        header.functions.clone(),
        args.view.json,
        args.quiet,
        std::io::BufWriter::new(stdout.lock()),
    );
    let damage = replay.run(&mut view)?;
    write_summaries(
        view,
        &header,
        Latest {
            totals: replay.totals,
            params: replay.params.as_ref(),
            allocs: replay.allocs.as_ref(),
            cpu: replay.cpu.as_ref(),
            calls_counted: replay.calls_counted.as_deref(),
        },
        args.view.json,
        args.view.top,
        std::io::BufWriter::new(stdout.lock()),
    )?;
    finish_replay(&args.file, &replay, damage)
}

fn export(args: ExportArgs) -> anyhow::Result<()> {
    let mut replay = open_recording(&args.file)?;
    let request = escapade::export::Request {
        pprof: args.pprof,
        perfetto: args.perfetto,
        flamegraph: args.flamegraph.map(|path| (path, args.weight)),
    };
    let mut exports = escapade::export::Exports::new(&replay.reader.header, &request)?;
    let damage = replay.run(&mut exports)?;
    exports.finish(&replay)?;
    finish_replay(&args.file, &replay, damage)?;
    let wrote = |path: Option<std::path::PathBuf>, view: &dyn Fn(String) -> String| {
        if let Some(path) = path {
            let path = path.display().to_string();
            eprintln!("escapade: wrote {path}; {}", view(path.clone()));
        }
    };
    let calls = if replay.calls_counted.is_some() {
        "every call: -sample_index=kernel_calls or kernel_call_time; recorded calls by caller: \
         calls or call_time"
    } else {
        "calls: -sample_index=calls"
    };
    wrote(request.pprof, &|p| {
        format!("view it with `go tool pprof -http=: {p}` ({calls})")
    });
    wrote(request.perfetto, &|_| {
        "view it in ui.perfetto.dev or chrome://tracing".into()
    });
    wrote(request.flamegraph.map(|(path, _)| path), &|_| {
        "view it in a browser".into()
    });
    Ok(())
}

fn open_recording(
    path: &std::path::Path,
) -> anyhow::Result<Replay<std::io::BufReader<std::fs::File>>> {
    let file = match std::fs::File::open(path) {
        // Not a matter of privileges for the probes, which the generic hint would suggest.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
            "{} is readable by its owner only (recordings are created mode 0600, since they can \
             hold argument values): `sudo chown $USER {}`, or run escapade as its owner",
            path.display(),
            path.display()
        ),
        opened => opened.with_context(|| format!("opening the recording {}", path.display()))?,
    };
    Replay::new(std::io::BufReader::new(file)).with_context(|| path.display().to_string())
}

/// After a replay: a damaged file fails, after what was readable; a recording that stops
/// short (escapade was killed) is said so.
fn finish_replay<R: std::io::Read>(
    path: &std::path::Path,
    replay: &Replay<R>,
    damage: Option<escapade::record::reader::ChunkError>,
) -> anyhow::Result<()> {
    if let Some(damage) = damage {
        anyhow::bail!("{}: {damage}; {}", path.display(), replay.readable());
    }
    let part = replay.reader.header.part;
    let first = match part {
        0 => Some(path.to_path_buf()),
        n => path
            .to_str()
            .and_then(|p| p.strip_suffix(&format!(".{n}")))
            .map(std::path::PathBuf::from),
    };
    // The next file of the same session, not one left from an earlier recording.
    let continued = |next: &std::path::Path| {
        let header = std::fs::File::open(next)
            .ok()
            .and_then(|f| Replay::new(std::io::BufReader::new(f)).ok())
            .map(|r| r.reader.header);
        header.is_some_and(|h| {
            h.part == part + 1
                && h.started_ns == replay.reader.header.started_ns
                && h.pid == replay.reader.header.pid
        })
    };
    if let Some(next) = first.map(|f| part_path(&f, part + 1))
        && continued(&next)
    {
        eprintln!(
            "escapade: {} reached --max-size; the recording goes on in {}",
            path.display(),
            next.display()
        );
    } else if replay.totals.is_none_or(|(_, t)| t.ended.is_none()) {
        eprintln!(
            "escapade: warning: {} stops short (escapade was killed while recording): it covers \
             the first {:.1}s",
            path.display(),
            replay.totals.map_or(0.0, |(ns, _)| ns as f64 / 1e9)
        );
    }
    Ok(())
}

/// The allocs command has no per-event output: everything is counted in the kernel.
struct Discard;

impl EventSink for Discard {
    fn event(&mut self, _: &probe_common::CallEvent) -> anyhow::Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Following parameters needs their names and types.
fn ensure_dwarf(target: &Target) -> anyhow::Result<()> {
    match without_dwarf(target.binary.has_dwarf()) {
        Some(note) => anyhow::bail!("{}: {note}", target.process.exe_target.display()),
        None => Ok(()),
    }
}

/// The process `args` names: a running one, or one started stopped at its first instruction
/// until the probes are attached (see [`attach_to`]).
fn open_target(args: &TargetArgs) -> anyhow::Result<(Target, Option<Launched>)> {
    let symbols = args.symbols.as_deref();
    match args.pid {
        Some(pid) => Ok((Target::open(pid, symbols)?, None)),
        None => {
            let launched = Launched::start(&args.command)?;
            let target = Target::open(launched.pid(), symbols)?;
            Ok((target, Some(launched)))
        }
    }
}

/// Ends a command: with a launched program, once it has ended, with its exit status.
fn exit_as(launched: Option<Launched>) -> anyhow::Result<()> {
    let Some(launched) = launched else {
        return Ok(());
    };
    let code = launched.wait()?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// Attaches the probes at `points` (then lets a launched program run) and tells the user what
/// they are doing there.
fn attach_to(
    target: &Target,
    launched: Option<&Launched>,
    points: &[ProbePoint],
    programs: Programs,
    doing: &str,
) -> anyhow::Result<Attached> {
    let memory = match programs {
        Programs::Params => {
            escapade::params::address_ranges(&target.binary, &target.process, target.bias)?
        }
        _ => Vec::new(),
    };
    let attached = attach(
        Scope::Process(target.process.pid),
        &target.process.exe,
        target.binary.go_offsets(target.bias),
        points,
        programs,
        &memory,
    )?;
    if let Some(launched) = launched {
        launched.release()?;
    }
    let symbols = target
        .binary
        .symbols
        .as_ref()
        .map(|s| format!(", symbols from {s}"))
        .unwrap_or_default();
    eprintln!(
        "escapade: attached to PID {} ({}, {}{symbols}): {doing}; Ctrl-C to stop",
        target.process.pid,
        target.process.exe_target.display(),
        target.binary.build.go_version,
    );
    Ok(attached)
}

/// `--returns sampled`: the RET probes come and go from now on.
fn sample_rets(attached: &mut Attached, calls: &escapade::cli::CallArgs) -> anyhow::Result<()> {
    match calls.returns {
        ReturnsMode::Sampled { percent } => attached.sample_rets(percent),
        _ => Ok(()),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
