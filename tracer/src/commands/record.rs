//! `escapade record`: what `trace`, `params`, `allocs` and `hot`'s sampler see, written to a
//! file (rotated at `--max-size`) instead of the terminal, then the same summaries `report
//! --quiet` prints from it.

use escapade::cli::RecordArgs;
use escapade::cpu::Sampler;
use escapade::model::decode::Decoder;
use escapade::model::params::{AllocationProbes, ParamTracker};
use escapade::model::records::{CallModel, FunctionInfo, Symbols};
use escapade::probes::attach::Programs;
use escapade::probes::plan::{CountingProbes, Plan};
use escapade::record::live::{CpuSampling, RecordSink};
use escapade::record::writer::Writer;
use escapade::record::{AllocSettings, Header, Latest};
use escapade::session::{self, Session};
use escapade::sink::EventSink as _;
use escapade::tracee::Target;
use escapade::tracee::memprofile::MemProfileRate;
use escapade::views::Output;
use escapade::views::summaries::write_summaries;
use escapade::views::trace::TraceView;

use super::{
    attach_to, ensure_dwarf, exit_as, open_target, placed, plan_allocs, plan_calls, sample_rets,
};

pub async fn run(args: RecordArgs) -> anyhow::Result<()> {
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
    let Probes {
        plan,
        params,
        allocs,
    } = plan_probes(&target, &args)?;
    // Call probes first: events carry their index, which the plan's points keep.
    let mut points = plan.points.clone();
    if let Some((_, probes)) = &allocs {
        points.extend(probes.points.iter().cloned());
    }
    let functions: Vec<FunctionInfo> = plan.traced.iter().map(FunctionInfo::of).collect();
    let header = header(&args, &target, functions.clone(), allocs.as_ref());
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
    let mut attached = attach_to(&target, &launched, &points, programs, args.cpu, &doing)?;
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
    let mut session = Session::new(&target, attached)?;
    let stdout = std::io::stdout();
    let view = TraceView::new(
        functions,
        Output::new(args.view.json, std::io::BufWriter::new(stdout.lock())),
        true,
    );
    // Where each traced function starts, for exports that show its source.
    let mut symbols = Symbols::default();
    for t in &plan.traced {
        symbols.learn(&target.binary, t.function.entry);
    }
    let mut sink = RecordSink::new(
        (!plan.traced.is_empty()).then(|| CallModel::new(Decoder::of(&target), &plan, true)),
        view,
        writer,
        allocs.is_some().then(|| Decoder::of(&target)),
        params
            .as_ref()
            .map(|probes| ParamTracker::new(Decoder::of(&target), &plan, probes, None)),
        cpu,
        symbols,
    );
    // The kernel's counts so far go into the first file before the first event: with fast
    // probes, a small --max-size can rotate before the first tick reads them.
    sink.checkpoint(session.counts())?;
    let run = session::run_command(&mut session, args.target.duration, &mut sink).await;
    if let Some((Some(rate), _)) = &allocs {
        rate.restore(&target.process, target.bias)?;
    }
    let (ended, malformed) = run?;
    let finished = sink.finish(session.counts(), ended, malformed)?;
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
        args.view.top,
        Output::new(args.view.json, std::io::BufWriter::new(stdout.lock())),
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

/// What a recording probes: the traced functions, their parameters' allocator points
/// (`--params`, added to the plan), and the counting probes with the heap profiler's rate
/// (`--allocs`).
struct Probes {
    plan: Plan,
    params: Option<AllocationProbes>,
    allocs: Option<(Option<MemProfileRate>, CountingProbes)>,
}

fn plan_probes(target: &Target, args: &RecordArgs) -> anyhow::Result<Probes> {
    let mut plan = if args.functions.is_empty() {
        Plan {
            traced: Vec::new(),
            points: Vec::new(),
        }
    } else {
        plan_calls(target, &args.functions, &args.calls.plan_options())?
    };
    let params = if args.params {
        Some(AllocationProbes::plan(
            &target.binary,
            &mut Decoder::of(target),
            &mut plan,
            true,
        )?)
    } else {
        None
    };
    let allocs = if args.allocs {
        Some(plan_allocs(target, &args.mode)?)
    } else {
        None
    };
    Ok(Probes {
        plan,
        params,
        allocs,
    })
}

/// The recording's header: the target's, with how `args` asked to probe it.
fn header(
    args: &RecordArgs,
    target: &Target,
    functions: Vec<FunctionInfo>,
    allocs: Option<&(Option<MemProfileRate>, CountingProbes)>,
) -> Header {
    Header {
        capture_strings: args.calls.capture_strings,
        entries_only: args.calls.entries_only,
        placement: format!("{:?}", args.calls.placement).to_lowercase(),
        allocs: allocs.map(|(rate, probes)| AllocSettings {
            mem_profile_rate: rate.as_ref().map(|r| r.in_effect),
            probes: placed(probes),
        }),
        params: args.params,
        cpu_hz: args.cpu.then_some(args.sampling.hz),
        ..Header::for_target(target, functions)
    }
}
