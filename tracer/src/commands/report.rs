//! `escapade report`: a recording's lines and summaries, offline, as `trace`, `params` and
//! `allocs` printed them live.

use escapade::cli::ReportArgs;
use escapade::record::Latest;
use escapade::record::reader::Replay;
use escapade::views::Output;
use escapade::views::summaries::write_summaries;
use escapade::views::trace::TraceView;

use super::finish_replay;

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let mut replay = Replay::open(&args.file)?;
    let header = replay.reader.header.clone();
    let stdout = std::io::stdout();
    let mut view = TraceView::new(
        header.functions.clone(),
        Output::new(args.view.json, std::io::BufWriter::new(stdout.lock())),
        args.quiet,
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
        args.view.top,
        Output::new(args.view.json, std::io::BufWriter::new(stdout.lock())),
    )?;
    finish_replay(&args.file, &replay, damage)
}
