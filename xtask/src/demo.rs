//! `cargo xtask demo`: builds escapade and the bundled Go demo (`demo/main.go`), starts the demo
//! and shows escapade's three views of it live: `trace`, `params` and `allocs --exact`.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{cmd, setup};

/// The demo functions escapade traces.
const FUNCTIONS: &[&str] = &["main.parseOrder", "main.(*Store).Put", "main.price"];

/// How long the demo may take to print its first line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(clap::Args)]
pub struct Options {
    /// How long each view runs (passed to escapade's `--duration`).
    #[arg(long, default_value = "5s")]
    duration: String,
}

pub fn run(options: Options) -> Result<()> {
    let tools = setup::run()?;
    let escapade = setup::build_escapade()?;
    let demo_bin = tools.build_go_program(tools.newest_go(), "demo", ".")?;

    let mut demo = Demo::start(&demo_bin)?;
    let pid = demo.child.id();
    say!(
        "tracing {} in the demo (pid {pid}) for {}; press Ctrl-C to stop early",
        FUNCTIONS.join(", "),
        options.duration
    );

    // Outlive Ctrl-C: escapade gets it (and may print its summary), then the demo is reaped here.
    catch_sigint();
    let pid = pid.to_string();
    let common = [
        "--pid",
        pid.as_str(),
        "--duration",
        options.duration.as_str(),
    ];
    let views: [(&str, &[&str]); 3] = [
        ("trace", &["--capture-strings", "32"]),
        ("params", &[]),
        // The demo does not link the heap profiler, so sampled mode has nothing to follow.
        ("allocs", &["--exact", "--top", "8"]),
    ];
    let mut result = Ok(());
    for (view, flags) in views {
        let mut command = Command::new(&escapade);
        command.arg(view).args(common).args(flags);
        if view != "allocs" {
            command.args(FUNCTIONS);
        }
        say!("`{}`", cmd::display(&command));
        let status = cmd::status(&mut command);
        result = check(&command, status);
        if result.is_err() {
            break;
        }
    }
    demo.stop();
    result
}

fn check(command: &Command, status: Result<std::process::ExitStatus>) -> Result<()> {
    let status = status?;
    if status.success() {
        Ok(())
    } else if INTERRUPTED.load(Ordering::Relaxed) {
        bail!(
            "interrupted (escapade ended with {})",
            cmd::describe(status)
        )
    } else {
        bail!(
            "`{}` failed with {}",
            cmd::display(command),
            cmd::describe(status)
        )
    }
}

struct Demo {
    child: Child,
}

impl Demo {
    /// Starts the demo and waits for its first line (`demo: pid N serving`).
    fn start(binary: &Path) -> Result<Demo> {
        let mut child = cmd::spawn_traced_program(binary)?;
        let stdout = child.stdout.take().expect("piped");
        let demo = Demo { child };

        // Hand over the first line, then keep draining so the demo never blocks on a full pipe.
        let (first_line, wait_first_line) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = first_line.send(lines.next());
            for line in lines.map_while(Result::ok) {
                eprintln!("{line}");
            }
        });
        match wait_first_line.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Some(Ok(line))) => say!("{line}"),
            Ok(Some(Err(error))) => return Err(error).context("cannot read the demo's output"),
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the demo exited before printing its first line")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("the demo printed nothing within {STARTUP_TIMEOUT:?}")
            }
        }
        Ok(demo)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop();
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Records SIGINT instead of dying from it. A handler (unlike SIG_IGN) is reset to the default in
/// the children at exec, so escapade still gets Ctrl-C as usual.
fn catch_sigint() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}
