//! The subcommands, one file each, and the glue they share: opening the target (a running
//! process, or a program launched stopped), planning and attaching the probes, and ending as
//! a launched program ended. A module of the `escapade` binary, not of the library: a command
//! only turns its arguments into calls of the library and prints what they return.

pub mod agent;
pub mod allocs;
pub mod doctor;
pub mod export;
pub mod hot;
pub mod params;
pub mod record;
pub mod report;
pub mod trace;

use escapade::cli::{AllocModeArgs, CallArgs, TargetArgs};
use escapade::hints::without_dwarf;
use escapade::probes::attach::{Attached, Programs, Scope, attach};
use escapade::probes::plan::{
    self, CountingProbes, PlacementMode, Plan, PlanOptions, ProbePoint, ReturnsMode,
};
use escapade::probes::snapshot::KernelCounts;
use escapade::record::reader::{ChunkError, Replay};
use escapade::tracee::Target;
use escapade::tracee::launch::Launched;
use escapade::tracee::memprofile::MemProfileRate;

/// The process `args` names: a running one, or one started stopped at its first instruction
/// until the probes are attached (see [`attach_to`]). Refuses first a kernel escapade cannot
/// run on, before a program is started for nothing.
fn open_target(args: &TargetArgs) -> anyhow::Result<(Target, Option<Launched>)> {
    escapade::kernel::features::require()?;
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

/// Following parameters needs their names and types.
fn ensure_dwarf(target: &Target) -> anyhow::Result<()> {
    match without_dwarf(target.binary.has_dwarf()) {
        Some(note) => anyhow::bail!("{}: {note}", target.process.exe_target.display()),
        None => Ok(()),
    }
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
    let probes = plan::counting_probes(&target.binary, PlacementMode::Fast, mode.exact)?;
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

/// Attaches the probes at `points` (then lets a launched program run) and tells the user what
/// they are doing there.
fn attach_to(
    target: &Target,
    launched: &Option<Launched>,
    points: &[ProbePoint],
    programs: Programs,
    samples_cpu: bool,
    doing: &str,
) -> anyhow::Result<Attached> {
    let memory = match programs {
        Programs::Params => {
            escapade::model::params::address_ranges(&target.binary, &target.process, target.bias)?
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
        samples_cpu,
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
fn sample_rets(attached: &mut Attached, calls: &CallArgs) -> anyhow::Result<()> {
    match calls.returns {
        ReturnsMode::Sampled { percent } => attached.sample_rets(percent),
        _ => Ok(()),
    }
}

/// How many of the calls the kernel holds open the target still runs.
fn still_running(target: &Target, counts: &KernelCounts) -> anyhow::Result<u64> {
    let offsets = target.binary.go_offsets(target.bias);
    Ok(escapade::model::calls::still_running(
        &counts.open_calls()?,
        &target.process,
        offsets.g_goid,
        offsets.g_stack_hi,
    ))
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

/// After a replay of the recording at `path`: a damaged file fails, after what was readable; a
/// recording that goes on in another file, or stops short (escapade was killed), is said so.
fn finish_replay<R: std::io::Read>(
    path: &std::path::Path,
    replay: &Replay<R>,
    damage: Option<ChunkError>,
) -> anyhow::Result<()> {
    if let Some(damage) = damage {
        anyhow::bail!("{}: {damage}; {}", path.display(), replay.readable());
    }
    if let Some(next) = replay.continued_in(path) {
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
