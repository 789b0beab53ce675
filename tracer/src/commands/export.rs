//! `escapade export`: a recording converted for other tools (pprof, Perfetto, an SVG flame
//! graph), each file written named with how to view it.

use std::path::PathBuf;

use escapade::cli::ExportArgs;
use escapade::export::{Exports, Request};
use escapade::record::reader::Replay;

use super::finish_replay;

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let mut replay = Replay::open(&args.file)?;
    let weight = args.flamegraph_weight();
    let request = Request {
        pprof: args.pprof,
        perfetto: args.perfetto,
        flamegraph: args.flamegraph.map(|path| (path, weight)),
    };
    let mut exports = Exports::new(&replay.reader.header, &request)?;
    let damage = replay.run(&mut exports)?;
    exports.finish(&replay)?;
    finish_replay(&args.file, &replay, damage)?;
    let wrote = |path: Option<PathBuf>, view: &dyn Fn(String) -> String| {
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
