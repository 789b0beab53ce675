//! `escapade doctor`: the library's report on this kernel, as text or one JSON object; exit
//! status 1 when a command cannot work here.

use std::io::Write as _;

use escapade::cli::DoctorArgs;
use escapade::doctor::Report;

pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let report = Report::gather();
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &report)?;
        writeln!(stdout)?;
    } else {
        report.write_text(&mut stdout)?;
    }
    stdout.flush()?;
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}
