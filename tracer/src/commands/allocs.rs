//! `escapade allocs`: heap allocations by site (sampled through the runtime's heap profiler,
//! or every one with `--exact`), goroutine creations and GC cycles, all counted in the kernel
//! and printed when the session ends.

use escapade::cli::AllocsArgs;
use escapade::probes::attach::Programs;
use escapade::session::{self, Session};
use escapade::sink::EventSink;
use escapade::tracee::clock::WallClock;
use escapade::views::Output;
use escapade::views::allocs::{AllocsMeta, write_allocs};

use super::{attach_to, exit_as, open_target, placed, plan_allocs};
use escapade::model::decode::Decoder;

pub async fn run(args: AllocsArgs) -> anyhow::Result<()> {
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
    let attached = attach_to(
        &target,
        &launched,
        &probes.points,
        Programs::Tracing,
        false,
        &doing,
    )?;
    let mut session = Session::new(&target, attached)?;
    let started = std::time::Instant::now();
    let run = session::run_command(&mut session, args.target.duration, &mut Discard).await;
    if let Some(rate) = &rate {
        rate.restore(&target.process, target.bias)?;
    }
    let (ended, _) = run?;
    let elapsed = started.elapsed();
    let report = escapade::model::allocs::view(
        session.counts(),
        &WallClock::now(),
        &mut Decoder::of(&target),
    )?;
    let stdout = std::io::stdout().lock();
    write_allocs(
        &report,
        &AllocsMeta {
            ended: Some(ended),
            elapsed,
            mem_profile_rate: rate.map(|r| r.in_effect),
            probes: &placed(&probes),
            counters: session.counts().counters(),
        },
        args.top,
        &mut Output::new(args.json, std::io::BufWriter::new(stdout)),
    )?;
    exit_as(launched)
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
