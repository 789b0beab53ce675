//! `escapade hot`: the named functions' call paths ranked by CPU samples and parameter
//! lifetime overlap, printed when the session ends.

use escapade::cli::HotArgs;
use escapade::cpu::Sampler;
use escapade::model::hot::HotSink;
use escapade::model::records::CallModel;
use escapade::probes::attach::Programs;
use escapade::probes::plan::PlanOptions;
use escapade::session::{self, Session};
use escapade::views::Output;

use super::{attach_to, exit_as, open_target, plan_calls};
use escapade::model::decode::Decoder;

pub async fn run(args: HotArgs) -> anyhow::Result<()> {
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
        &launched,
        &plan.points,
        Programs::Tracing,
        true,
        &doing,
    )?;
    let sampler = Sampler::start(&mut attached, args.cpu.hz)?;
    let mut session = Session::new(&target, attached)?;
    let mut sink = HotSink::new(
        CallModel::new(Decoder::of(&target), &plan, false),
        &plan.traced,
    );
    let (ended, _) = session::run_command(&mut session, args.target.duration, &mut sink).await?;
    let profile = sampler.profile(session.counts(), &target.binary, target.bias)?;
    let view = sink.view(&profile, &target.binary, args.weights);
    let stdout = std::io::stdout().lock();
    escapade::views::hot::write(
        &view,
        ended,
        args.top,
        &mut Output::new(args.json, std::io::BufWriter::new(stdout)),
    )?;
    exit_as(launched)
}
