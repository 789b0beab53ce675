//! `cargo xtask bench`: what tracing costs, measured side by side on one running process per
//! suite: a hot Go function (`bench/hot.go`) untraced, under escapade, under an empty BPF
//! program at the same uprobes, with both entry-probe placements and under bpftrace; and an
//! allocation loop (`bench/alloc.go`) untraced, under `escapade allocs` sampled and exact, and
//! under bpftrace counting `runtime.mallocgc` by user stack; that loop under `escapade
//! params` with and without its allocator probes; the hot function with its address taken
//! (`bench/taken.go`) under each `--returns` mode; and the hot function while escapade samples
//! the CPU (`record --cpu`, no traced function) at 99 and 999 Hz. Each suite ends untraced
//! again, to show drift.

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cmd, setup, tracefs};

/// One benchmarked program and what traces it in turn.
struct Suite {
    /// What `--suite` calls it.
    name: &'static str,
    /// A Go file in `bench/` that prints `ns_per_call <float>` per batch of calls.
    source: &'static str,
    /// The function whose calls it times.
    function: &'static str,
    phases: &'static [Phase],
    /// Ratios of added ns per call printed under the table: (label, phase id, phase id).
    ratios: &'static [(&'static str, &'static str, &'static str)],
}

/// The Go the benchmark programs are built with. Not the newest: Go 1.27's compiler calls
/// size-specialized allocators instead of `runtime.mallocgc`, which bpftrace's probe on
/// mallocgc would then miss, making the comparison meaningless.
const BENCH_GO: &str = "1.26.6";

/// What the bpftrace phase's script prints once its probe is attached.
const BPFTRACE_READY: &str = "bpftrace: tracing";

/// Measurement lines thrown away after a phase starts: the batch in flight when the probes came or
/// went mixes two phases.
const DISCARD: usize = 2;

/// Fewest measurement lines a phase takes, however long that lasts.
const MIN_LINES: usize = 5;

/// How long hot.go may take to print its first line, escapade to attach or to exit after SIGINT,
/// and hot.go to print one measurement (a batch under single-stepped probes takes ~2 s).
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct Options {
    /// Seconds to measure each phase for (after the first lines are discarded); each phase
    /// takes at least 5 measurement lines.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Run only these suites (hot, taken, alloc, params, cpu); all by default.
    #[arg(long = "suite", value_name = "NAME")]
    suites: Vec<String>,
}

/// One row of the table.
struct Phase {
    /// Short name the ratios refer to.
    id: &'static str,
    name: &'static str,
    tracer: Tool,
}

/// What traces the program during a phase.
enum Tool {
    None,
    /// escapade with these arguments; `--pid PID` goes after the first (the command).
    Escapade(&'static [&'static str]),
    /// The same, its stdout (an event per line) thrown away.
    EscapadeToNull(&'static [&'static str]),
    /// The kernel's own uprobes through tracefs, no BPF program: one on this function's first
    /// instruction and one on each of its `RET`s, like-for-like with tracers that cannot put a
    /// probe inside a function (bpftrace 0.17 cannot).
    Tracefs {
        function: &'static str,
    },
    /// bpftrace with a uprobe on this function's first instruction running this action: what
    /// the established tracers do. The action must count into `@c`.
    Bpftrace {
        function: &'static str,
        action: &'static str,
    },
}

const HOT: Suite = Suite {
    name: "hot",
    source: "hot.go",
    function: "main.hot",
    phases: HOT_PHASES,
    ratios: &[
        (
            "escapade (entry + return site) / bpftrace (entry only)",
            "fast",
            "bpftrace",
        ),
        (
            "escapade --json, an event per call / bpftrace",
            "events",
            "bpftrace",
        ),
        ("escapade entry + return site / entry + RET", "fast", "rets"),
        (
            "escapade / empty BPF program, return sites",
            "fast",
            "fast-empty",
        ),
        ("escapade / empty BPF program, RETs", "rets", "rets-empty"),
        (
            "escapade (entry + return site) / tracefs (first instruction + RET)",
            "fast",
            "tracefs",
        ),
        (
            "escapade --entries-only / bpftrace",
            "entries-only",
            "bpftrace",
        ),
        (
            "escapade --placement entry / fast placement",
            "entry",
            "fast",
        ),
    ],
};

const HOT_PHASES: &[Phase] = &[
    UNTRACED,
    Phase {
        id: "fast",
        name: "escapade trace --quiet (JBE entry + return site, counted in the kernel)",
        tracer: Tool::Escapade(&["trace", "--quiet", "main.hot"]),
    },
    Phase {
        id: "events",
        name: "escapade trace --json > /dev/null (+ an event per entry and return, results decoded)",
        tracer: Tool::EscapadeToNull(&["trace", "--json", "main.hot"]),
    },
    Phase {
        id: "tail",
        name: "escapade trace --slower-than 1s (+ each entry's event held in the kernel until its return)",
        tracer: Tool::EscapadeToNull(&["trace", "--slower-than", "1s", "main.hot"]),
    },
    Phase {
        id: "rets",
        name: "escapade --returns rets (JBE entry + RET)",
        tracer: Tool::Escapade(&["trace", "--quiet", "--returns", "rets", "main.hot"]),
    },
    Phase {
        id: "entries-only",
        name: "escapade --entries-only (JBE, no return probe)",
        tracer: Tool::Escapade(&["trace", "--quiet", "--entries-only", "main.hot"]),
    },
    Phase {
        id: "fast-empty",
        name: "empty BPF program, JBE + return site",
        tracer: Tool::Escapade(&["trace", "--quiet", "--empty-probes", "main.hot"]),
    },
    Phase {
        id: "rets-empty",
        name: "empty BPF program, JBE + RET",
        tracer: Tool::Escapade(&[
            "trace",
            "--quiet",
            "--empty-probes",
            "--returns",
            "rets",
            "main.hot",
        ]),
    },
    Phase {
        id: "entry",
        name: "escapade --placement entry (first instruction, single-stepped, + return site)",
        tracer: Tool::Escapade(&["trace", "--quiet", "--placement", "entry", "main.hot"]),
    },
    Phase {
        id: "bpftrace",
        name: "bpftrace uprobe:BIN:main.hot { @c = count(); } (entry only)",
        tracer: Tool::Bpftrace {
            function: "main.hot",
            action: "@c = count();",
        },
    },
    Phase {
        id: "tracefs",
        name: "the kernel's tracefs uprobes, no BPF: first instruction + every RET",
        tracer: Tool::Tracefs {
            function: "main.hot",
        },
    },
    DRIFT,
];

const UNTRACED: Phase = Phase {
    id: "untraced",
    name: "untraced",
    tracer: Tool::None,
};

const DRIFT: Phase = Phase {
    id: "drift",
    name: "untraced again (drift)",
    tracer: Tool::None,
};

const ALLOC: Suite = Suite {
    name: "alloc",
    source: "alloc.go",
    function: "main.alloc",
    phases: &[
        UNTRACED,
        Phase {
            id: "sampled",
            name: "escapade allocs (sampled at the default MemProfileRate, 512 KiB)",
            tracer: Tool::Escapade(&["allocs"]),
        },
        Phase {
            id: "exact",
            name: "escapade allocs --exact (mallocgc JBE, counted in the kernel)",
            tracer: Tool::Escapade(&["allocs", "--exact"]),
        },
        Phase {
            id: "bpftrace",
            name: "bpftrace uprobe:BIN:runtime.mallocgc { @c[ustack] = count(); }",
            tracer: Tool::Bpftrace {
                function: "runtime.mallocgc",
                action: "@c[ustack] = count();",
            },
        },
        DRIFT,
    ],
    ratios: &[
        ("escapade allocs --exact / bpftrace", "exact", "bpftrace"),
        ("escapade allocs (sampled) / --exact", "sampled", "exact"),
    ],
};

/// `escapade params` on the allocating function: its entry and return probes alone, then with
/// the allocator probes counting into the call, both worked out in the kernel; then with an
/// event per call and allocation (`--events`).
const PARAMS: Suite = Suite {
    name: "params",
    source: "alloc.go",
    function: "main.alloc",
    phases: &[
        UNTRACED,
        Phase {
            id: "no-allocs",
            name: "escapade params --no-allocs main.alloc (entry + return site)",
            tracer: Tool::Escapade(&["params", "--no-allocs", "main.alloc"]),
        },
        Phase {
            id: "allocs",
            name: "escapade params main.alloc (+ newobject/mallocgc inside it)",
            tracer: Tool::Escapade(&["params", "main.alloc"]),
        },
        Phase {
            id: "events",
            name: "escapade params --events main.alloc > /dev/null (an event per call and \
                   allocation, worked out in userspace)",
            tracer: Tool::EscapadeToNull(&["params", "--events", "main.alloc"]),
        },
        DRIFT,
    ],
    ratios: &[
        (
            "escapade params with / without allocation correlation",
            "allocs",
            "no-allocs",
        ),
        (
            "escapade params in the kernel / with --events",
            "allocs",
            "events",
        ),
    ],
};

/// A function whose address is taken keeps its `RET` probes for the calls through its func
/// value, and every call, direct ones too, then passes them: what `--returns sampled` (the
/// `RET` probes attached 1 % of the time) and `--returns direct` (never) save.
const TAKEN: Suite = Suite {
    name: "taken",
    source: "taken.go",
    function: "main.hot",
    phases: &[
        UNTRACED,
        Phase {
            id: "all",
            name: "escapade trace --quiet (--returns all: return site + RET probes)",
            tracer: Tool::Escapade(&["trace", "--quiet", "main.hot"]),
        },
        Phase {
            id: "sampled",
            name: "escapade trace --quiet --returns sampled=1%",
            tracer: Tool::Escapade(&["trace", "--quiet", "--returns", "sampled=1%", "main.hot"]),
        },
        Phase {
            id: "direct",
            name: "escapade trace --quiet --returns direct (return site only)",
            tracer: Tool::Escapade(&["trace", "--quiet", "--returns", "direct", "main.hot"]),
        },
        DRIFT,
    ],
    ratios: &[
        ("--returns sampled=1% / all", "sampled", "all"),
        ("--returns sampled=1% / direct", "sampled", "direct"),
    ],
};

/// CPU sampling alone: the cpu-clock perf event on each CPU, its BPF program counting the
/// target's user stacks, and the recording's once-a-second read of the counts.
const CPU: Suite = Suite {
    name: "cpu",
    source: "hot.go",
    function: "main.hot",
    phases: &[
        UNTRACED,
        Phase {
            id: "cpu-99",
            name: "escapade record --cpu --hz 99 (no traced function)",
            tracer: Tool::Escapade(&["record", "--cpu", "--hz", "99", "-o", CPU_RECORDING]),
        },
        Phase {
            id: "cpu-999",
            name: "escapade record --cpu --hz 999 (no traced function)",
            tracer: Tool::Escapade(&["record", "--cpu", "--hz", "999", "-o", CPU_RECORDING]),
        },
        DRIFT,
    ],
    ratios: &[],
};

/// Where the CPU suite's recordings go (replaced by each phase).
const CPU_RECORDING: &str = "/tmp/escapade-bench-cpu.esc";

pub fn run(options: Options) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask bench loads BPF programs: run it as root");
    }
    if !(options.seconds > 0.0 && options.seconds.is_finite()) {
        bail!("--seconds must be a positive number");
    }
    let seconds = Duration::from_secs_f64(options.seconds);

    let tools = setup::run()?;
    setup::bpftrace()?;
    let escapade = setup::build_escapade()?;
    let all = [HOT, TAKEN, ALLOC, PARAMS, CPU];
    if let Some(unknown) = options
        .suites
        .iter()
        .find(|name| !all.iter().any(|s| s.name == name.as_str()))
    {
        bail!("no benchmark suite {unknown:?}: the suites are hot, taken, alloc, params and cpu");
    }
    let chosen = all
        .into_iter()
        .filter(|s| options.suites.is_empty() || options.suites.iter().any(|n| n == s.name));
    for suite in chosen {
        let binary = tools.build_go_program(tools.go_version(BENCH_GO)?, "bench", suite.source)?;
        let results = run_suite(&suite, &binary, &escapade, seconds)?;
        print_report(&suite, &results);
    }
    Ok(())
}

fn run_suite<'a>(
    suite: &'a Suite,
    binary: &Path,
    escapade: &Path,
    seconds: Duration,
) -> Result<Vec<(&'a Phase, f64)>> {
    let mut hot = Hot::start(binary)?;
    let pid = hot.child.id().to_string();
    say!(
        "measuring {} in pid {pid}, about {seconds:?} per phase",
        suite.function
    );
    let mut results = Vec::new();
    for phase in suite.phases {
        let mut trace = match phase.tracer {
            Tool::None => {
                say!("phase: {}", phase.name);
                results.push((phase, hot.measure(seconds)?));
                continue;
            }
            Tool::Escapade(args) | Tool::EscapadeToNull(args) => {
                let mut trace = Command::new(escapade);
                trace.arg(args[0]).args(["--pid", &pid]).args(&args[1..]);
                trace
            }
            Tool::Tracefs { function } => {
                let probes = tracefs::Probes::add(binary, function)?;
                say!("phase: {} ({})", phase.name, probes.describe());
                let ns = hot.measure(seconds);
                probes.remove()?;
                let ns = ns?;
                say!("{}: {ns:.2} ns/call", phase.name);
                results.push((phase, ns));
                continue;
            }
            Tool::Bpftrace { function, action } => {
                setup::tracefs()?;
                let mut trace = Command::new("bpftrace");
                // bpftrace says "Attaching" before it is done: the first tick of an interval
                // probe, which starts once every probe is attached, says it is (-B line
                // flushes it at once).
                let script = format!(
                    "uprobe:/proc/{pid}/exe:{function} {{ {action} }} \
                     interval:s:1 {{ if (@ticks == 0) {{ printf(\"{BPFTRACE_READY}\\n\"); }} @ticks = 1; }}"
                );
                trace.args(["-B", "line", "-p", &pid, "-e"]).arg(script);
                trace
            }
        };
        say!("phase: {} (`{}`)", phase.name, cmd::display(&trace));
        let tracer = Tracer::start(&mut trace, matches!(phase.tracer, Tool::EscapadeToNull(_)))?;
        let ns = hot.measure(seconds);
        let stopped = tracer.stop();
        let ns = ns?;
        let printed = stopped?;
        if let Tool::Bpftrace { function, .. } = phase.tracer {
            // bpftrace can print "Attaching" and still fail to attach: insist on a count, in
            // `@c: N` or, for a map keyed by stack, `]: N` lines.
            let counted: u64 = printed
                .lines()
                .filter_map(|l| l.strip_prefix("@c: ").or_else(|| l.strip_prefix("]: ")))
                .filter_map(|n| n.trim().parse::<u64>().ok())
                .sum();
            if counted == 0 {
                bail!(
                    "bpftrace counted no calls of {function}:\n{}",
                    printed.trim_end()
                );
            }
        }
        say!("{}: {ns:.2} ns/call", phase.name);
        results.push((phase, ns));
    }
    hot.stop();
    Ok(results)
}

fn print_report(suite: &Suite, results: &[(&Phase, f64)]) {
    let ns = |id: &str| {
        results
            .iter()
            .find(|(phase, _)| phase.id == id)
            .map(|(_, ns)| *ns)
            .expect("every phase ran")
    };
    let untraced = ns("untraced");
    let added = |id: &str| ns(id) - untraced;
    println!("\n{} (`bench/{}`)\n", suite.function, suite.source);
    println!("| phase | ns/call | x untraced | added ns/call |");
    println!("|---|---:|---:|---:|");
    for (phase, ns) in results {
        println!(
            "| {} | {ns:.2} | {:.1} | {:.1} |",
            phase.name,
            ns / untraced,
            ns - untraced
        );
    }
    println!();
    println!("Ratios of added ns per call:");
    for (label, numerator, denominator) in suite.ratios {
        println!("- {label}: {:.2}", added(numerator) / added(denominator));
    }
    println!(
        "- untraced drift: {untraced:.2} -> {:.2} ns/call",
        ns("drift")
    );
}

/// The running benchmark program; killed and reaped when dropped.
struct Hot {
    child: Child,
    /// When each measurement line arrived, and its ns per call.
    lines: Receiver<(Instant, f64)>,
}

impl Hot {
    fn start(binary: &Path) -> Result<Hot> {
        let mut child = cmd::spawn_traced_program(binary)?;
        let stdout = child.stdout.take().expect("piped");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let ns = line
                    .strip_prefix("ns_per_call ")
                    .and_then(|ns| ns.trim().parse().ok());
                if let Some(ns) = ns
                    && send.send((Instant::now(), ns)).is_err()
                {
                    return;
                }
            }
        });
        let mut hot = Hot { child, lines };
        // The first measurement shows it runs.
        hot.next_line()?;
        Ok(hot)
    }

    fn next_line(&mut self) -> Result<(Instant, f64)> {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Disconnected) => bail!("bench/hot.go exited"),
            Err(RecvTimeoutError::Timeout) => {
                bail!("bench/hot.go printed no measurement within {TIMEOUT:?}")
            }
        }
    }

    /// The median ns/call over the lines that arrive from now on, after the first [`DISCARD`],
    /// for `seconds` and at least [`MIN_LINES`] lines.
    fn measure(&mut self, seconds: Duration) -> Result<f64> {
        let start = Instant::now();
        let mut discarded = 0;
        while discarded < DISCARD {
            if self.next_line()?.0 >= start {
                discarded += 1;
            }
        }
        let start = Instant::now();
        let mut samples = Vec::new();
        while samples.len() < MIN_LINES || start.elapsed() < seconds {
            samples.push(self.next_line()?.1);
        }
        samples.sort_by(f64::total_cmp);
        Ok(samples[samples.len() / 2])
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `escapade trace`; its stdout (the summary) goes to xtask's stderr.
struct Tracer {
    child: Child,
    display: String,
    /// escapade's stderr after the "attached" line, collected until it exits.
    rest: Receiver<String>,
}

impl Tracer {
    /// Starts the tracer and waits until it says it attached; `discard_stdout` throws its
    /// stdout away rather than keeping it.
    fn start(command: &mut Command, discard_stdout: bool) -> Result<Tracer> {
        let display = cmd::display(command);
        // One pipe for both streams: escapade says it attached on stderr, bpftrace on stdout.
        let (reader, writer) = std::io::pipe()?;
        let stdout = if discard_stdout {
            Stdio::null()
        } else {
            writer.try_clone()?.into()
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(writer)
            .spawn();
        // Our copies of the write end must go, or the reader never sees the end of the output.
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let child = child.with_context(|| format!("cannot run `{display}`"))?;
        let mut stderr = BufReader::new(reader);
        let (send_attached, attached) = mpsc::channel();
        let (send_rest, rest) = mpsc::channel();
        thread::spawn(move || {
            let mut before = String::new();
            let mut line = String::new();
            while matches!(stderr.read_line(&mut line), Ok(n) if n > 0) {
                let found = line.contains("attached to PID") || line.trim() == BPFTRACE_READY;
                before.push_str(&line);
                line.clear();
                if found {
                    let _ = send_attached.send(Ok(before));
                    let mut rest = String::new();
                    let _ = stderr.read_to_string(&mut rest);
                    let _ = send_rest.send(rest);
                    return;
                }
            }
            let _ = send_attached.send(Err(before));
        });
        let mut tracer = Tracer {
            child,
            display,
            rest,
        };
        match attached.recv_timeout(TIMEOUT) {
            Ok(Ok(lines)) => eprint!("{lines}"),
            Ok(Err(lines)) => {
                let status = tracer.child.wait()?;
                bail!(
                    "`{}` exited with {} before attaching:\n{}",
                    tracer.display,
                    cmd::describe(status),
                    lines.trim_end()
                )
            }
            Err(_) => {
                let _ = tracer.child.kill();
                let _ = tracer.child.wait();
                bail!("`{}` did not attach within {TIMEOUT:?}", tracer.display)
            }
        }
        Ok(tracer)
    }

    /// Stops the tracer with SIGINT, waits for it, checks that it exited successfully, and
    /// returns what it printed after attaching.
    fn stop(mut self) -> Result<String> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "`{}` ended during the measurement with {}:\n{}",
                self.display,
                cmd::describe(status),
                self.rest
                    .recv_timeout(TIMEOUT)
                    .unwrap_or_default()
                    .trim_end()
            );
        }
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: the child has not been reaped yet, so the pid is still escapade's.
        if unsafe { libc::kill(pid, libc::SIGINT) } == -1 {
            return Err(std::io::Error::last_os_error()).context("cannot send SIGINT to escapade");
        }
        let status = wait_timeout(&mut self.child, TIMEOUT)?;
        let rest = self.rest.recv_timeout(TIMEOUT).unwrap_or_default();
        eprint!("{rest}");
        match status {
            Some(status) if status.success() => Ok(rest),
            Some(status) => bail!("`{}` failed with {}", self.display, cmd::describe(status)),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "`{}` did not exit within {TIMEOUT:?} of SIGINT",
                    self.display
                )
            }
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}
