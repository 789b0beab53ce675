//! `escapade trace`: every call of the named functions as it happens, a line (or a JSON
//! object) per entry and return, then the summary; with `--quiet`, the summary alone.

use escapade::cli::TraceArgs;
use escapade::probes::attach::Programs;
use escapade::session::{self, Session};
use escapade::views::Output;
use escapade::views::trace::TracePrinter;

use super::{attach_to, exit_as, open_target, plan_calls, sample_rets, still_running};
use escapade::model::decode::Decoder;

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
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
    let mut attached = attach_to(&target, &launched, &plan.points, programs, false, &doing)?;
    sample_rets(&mut attached, &args.calls)?;
    let mut session = Session::new(&target, attached)?;
    let stdout = std::io::stdout().lock();
    let mut printer = TracePrinter::new(
        Decoder::of(&target),
        &plan,
        Output::new(args.json, std::io::BufWriter::new(stdout)),
        args.quiet,
    );
    let (ended, malformed) =
        session::run_command(&mut session, args.target.duration, &mut printer).await?;
    let kernel = session.counts().call_stats(plan.traced.len())?;
    let still_running = still_running(&target, session.counts())?;
    printer.summary(
        ended,
        session.counts().counters(),
        malformed,
        &kernel,
        still_running,
    )?;
    exit_as(launched)
}
