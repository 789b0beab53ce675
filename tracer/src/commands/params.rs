//! `escapade params`: for each parameter of the named functions, where it arrives, where its
//! pointer points, and whether the function moved it to the heap, as a table (or JSON lines)
//! when the session ends.

use std::io::IsTerminal as _;

use anyhow::Context as _;

use escapade::cli::ParamsArgs;
use escapade::model::params::{AllocationProbes, KernelParams, ParamTracker};
use escapade::probes::attach::Programs;
use escapade::probes::plan::{Plan, PlanOptions};
use escapade::session::{self, Session};
use escapade::views::Output;
use escapade::views::params::{ParamsMeta, write_params};

use super::{attach_to, ensure_dwarf, exit_as, open_target, still_running};
use escapade::model::decode::Decoder;

pub async fn run(args: ParamsArgs) -> anyhow::Result<()> {
    let (target, launched) = open_target(&args.target)?;
    ensure_dwarf(&target)?;
    let functions = target.binary.resolve(&args.functions)?;
    let mut plan = Plan::new(&target.binary, functions, &PlanOptions::default())?;
    let mut decoder = Decoder::of(&target);
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
        escapade::model::params::fits_the_kernel(&plan)?;
        Programs::Params
    };
    let mut attached = attach_to(&target, &launched, &plan.points, programs, false, &doing)?;
    let memory = attached
        .take_address_ranges()
        .context("the map of the process's memory was already taken")?;
    let mut session = Session::new(&target, attached)?;
    let (ended, malformed, view) = if args.events {
        let mut tracker = ParamTracker::new(decoder, &plan, &probes, Some(std::io::stdout()));
        let (ended, malformed) =
            session::run_command(&mut session, args.target.duration, &mut tracker).await?;
        (ended, malformed, tracker.view())
    } else {
        let mut kernel = KernelParams::new(&target.binary, &target.process, target.bias, memory);
        let (ended, malformed) =
            session::run_command(&mut session, args.target.duration, &mut kernel).await?;
        let in_flight = still_running(&target, session.counts())?;
        (
            ended,
            malformed,
            kernel.view(&plan, &probes, session.counts(), in_flight)?,
        )
    };
    let stdout = std::io::stdout();
    write_params(
        &view,
        &ParamsMeta {
            ended: Some(ended),
            counters: session.counts().counters(),
            malformed,
        },
        stdout.is_terminal(),
        &mut Output::new(args.json, std::io::BufWriter::new(stdout.lock())),
    )?;
    exit_as(launched)
}
