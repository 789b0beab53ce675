//! `escapade doctor`: what this kernel, and escapade's privileges on it, let each command do.
//! It probes the kernel's features ([`crate::kernel::features`]), looks at the host
//! ([`crate::kernel::host`]), and loads every program of the embedded objects in each
//! configuration the commands load it in, through the same code as they do
//! ([`crate::probes::attach::load`]) but without attaching anything; then it gives each command
//! a verdict: it works, it works with a fallback, or it does not, and why.

use std::collections::BTreeMap;
use std::io::Write;

use probe_common::ProbeConfig;
use serde::Serialize;

use crate::kernel::bpf::Refused;
use crate::kernel::features::{self, Feature, Found, Presence, UprobeLinks, Without};
use crate::kernel::host::Host;
use crate::probes::attach::{self, LoadConfig, Programs, Scope, TailCapture};
use crate::probes::plan::{PointOwner, ProbeKind, ProbePoint};

/// The commands that attach probes, which the verdicts are about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Trace,
    Params,
    Allocs,
    Hot,
    Record,
    Agent,
}

const COMMANDS: [Command; 6] = [
    Command::Trace,
    Command::Params,
    Command::Allocs,
    Command::Hot,
    Command::Record,
    Command::Agent,
];

impl Command {
    fn name(self) -> &'static str {
        match self {
            Command::Trace => "trace",
            Command::Params => "params",
            Command::Allocs => "allocs",
            Command::Hot => "hot",
            Command::Record => "record",
            Command::Agent => "agent",
        }
    }
}

/// One way the commands load the probes: the globals, which make it a program of its own to
/// the verifier, and the programs at the probe points of `kinds`. Every command in `commands`
/// runs all of them (with `samples_cpu`, the CPU sampler too, where the command samples).
struct Configuration {
    name: &'static str,
    commands: &'static [Command],
    /// Attached ahead of the next process of a file (the agent), rather than to one process.
    ahead: bool,
    programs: Programs,
    kinds: &'static [ProbeKind],
    samples_cpu: bool,
}

const CALLS: &[ProbeKind] = &[ProbeKind::Entry, ProbeKind::Return];
const RUNTIME: &[ProbeKind] = &[
    ProbeKind::Malloc,
    ProbeKind::Newproc,
    ProbeKind::GcCycle,
    ProbeKind::StackGrowth,
    ProbeKind::SampledMalloc,
    ProbeKind::FreeSpecial,
];
const CALLS_AND_RUNTIME: &[ProbeKind] = &[
    ProbeKind::Entry,
    ProbeKind::Return,
    ProbeKind::Malloc,
    ProbeKind::Newproc,
    ProbeKind::GcCycle,
    ProbeKind::StackGrowth,
    ProbeKind::SampledMalloc,
    ProbeKind::FreeSpecial,
];
const PARAMS: &[ProbeKind] = &[
    ProbeKind::Entry,
    ProbeKind::Return,
    ProbeKind::Allocating,
    ProbeKind::Allocated,
];

/// As the commands choose their [`Programs`] (`commands/*.rs`, and `programs` in
/// `agent/supervisor.rs`): a command that changes its choice changes this table.
const CONFIGURATIONS: [Configuration; 12] = [
    Configuration {
        name: "trace, hot, record, agent with record",
        commands: &[
            Command::Trace,
            Command::Hot,
            Command::Record,
            Command::Agent,
        ],
        ahead: false,
        programs: Programs::Tracing,
        kinds: CALLS,
        samples_cpu: true,
    },
    Configuration {
        name: "allocs, record --allocs, agent with record",
        commands: &[Command::Allocs, Command::Record, Command::Agent],
        ahead: false,
        programs: Programs::Tracing,
        kinds: RUNTIME,
        samples_cpu: false,
    },
    Configuration {
        name: "trace --quiet",
        commands: &[Command::Trace],
        ahead: false,
        programs: Programs::Counting,
        kinds: CALLS,
        samples_cpu: false,
    },
    Configuration {
        name: "trace --slower-than",
        commands: &[Command::Trace, Command::Record],
        ahead: false,
        programs: Programs::Tail(TailCapture {
            slower_than_ns: 1,
            errors: false,
        }),
        kinds: CALLS,
        samples_cpu: false,
    },
    Configuration {
        name: "trace --errors",
        commands: &[Command::Trace, Command::Record],
        ahead: false,
        programs: Programs::Tail(TailCapture {
            slower_than_ns: 0,
            errors: true,
        }),
        kinds: CALLS,
        samples_cpu: false,
    },
    Configuration {
        name: "trace --slower-than --errors",
        commands: &[Command::Trace, Command::Record],
        ahead: false,
        programs: Programs::Tail(TailCapture {
            slower_than_ns: 1,
            errors: true,
        }),
        kinds: CALLS,
        samples_cpu: false,
    },
    Configuration {
        name: "params",
        commands: &[Command::Params],
        ahead: false,
        programs: Programs::Params,
        kinds: PARAMS,
        samples_cpu: false,
    },
    Configuration {
        name: "params --events, record --params",
        commands: &[Command::Params, Command::Record],
        ahead: false,
        programs: Programs::Tracing,
        kinds: PARAMS,
        samples_cpu: false,
    },
    Configuration {
        name: "agent",
        commands: &[Command::Agent],
        ahead: false,
        programs: Programs::CountingByCaller,
        kinds: CALLS_AND_RUNTIME,
        samples_cpu: true,
    },
    Configuration {
        name: "agent, ahead of the next process",
        commands: &[Command::Agent],
        ahead: true,
        programs: Programs::CountingByCaller,
        kinds: CALLS_AND_RUNTIME,
        samples_cpu: true,
    },
    Configuration {
        name: "agent with record, ahead of the next process",
        commands: &[Command::Agent],
        ahead: true,
        programs: Programs::Tracing,
        kinds: CALLS_AND_RUNTIME,
        samples_cpu: true,
    },
    Configuration {
        name: "trace --empty-probes (benchmarks)",
        commands: &[],
        ahead: false,
        programs: Programs::Empty,
        kinds: &[ProbeKind::Entry],
        samples_cpu: false,
    },
];

/// The exec watcher's configuration, in its own object.
const EXEC_WATCHER: &str = "agent's exec watcher";

/// Everything `escapade doctor` found; `--json` prints it as it is (the README documents its
/// fields).
#[derive(Debug, Serialize)]
pub struct Report {
    /// The kernel's release, as `uname -r` prints it.
    pub kernel: String,
    pub features: BTreeMap<Feature, FeatureReport>,
    pub host: Host,
    /// How escapade holds uprobes here: `uprobe_multi` links or one perf event each.
    pub uprobe_links: &'static str,
    /// Each program of the embedded objects, loaded without attaching, in each configuration.
    pub programs: Vec<Load>,
    pub commands: BTreeMap<Command, Verdict>,
    /// Whether every command works, with fallbacks or without.
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct FeatureReport {
    pub what: &'static str,
    /// The Linux release that brought it.
    pub since: &'static str,
    /// Whether the kernel has it; None where not probed, or the probe could not tell.
    pub present: Option<bool>,
    /// Whether escapade uses it here.
    pub used: bool,
    /// `required`, `fallback` (escapade does the same work another way), `optional` (some
    /// commands or options need it) or `no`.
    pub needed: &'static str,
    /// What escapade does without it.
    pub without: &'static str,
    /// How the probe failed, or the environment variable that turns the feature off.
    pub detail: Option<String>,
}

/// One program loaded (or refused) in one configuration.
#[derive(Debug, Serialize)]
pub struct Load {
    pub configuration: &'static str,
    pub object: &'static str,
    pub program: &'static str,
    pub loaded: bool,
    /// Why not: the verifier's line, or the error.
    pub reason: Option<String>,
    /// Whether the verifier refused it, rather than the kernel before it (privileges, say).
    #[serde(skip)]
    refused: bool,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    /// `works`, `works_with_fallback` or `does_not_work`.
    pub verdict: &'static str,
    pub fallbacks: Vec<Fallback>,
    /// Why it does not work.
    pub problems: Vec<String>,
}

/// A feature the command does without here, and what it does instead.
#[derive(Debug, Serialize)]
pub struct Fallback {
    pub feature: Feature,
    pub instead: &'static str,
    pub why: String,
}

impl Report {
    /// Probes, examines and loads; attaches nothing.
    pub fn gather() -> Report {
        let host = Host::examine();
        let found = features::probe_all();
        let links = features::uprobe_links();
        let programs = dry_run(links);
        let commands: BTreeMap<Command, Verdict> = COMMANDS
            .into_iter()
            .map(|command| (command, verdict(command, &found, &host, &programs)))
            .collect();
        Report {
            kernel: crate::kernel::release(),
            features: found
                .iter()
                .map(|f| (f.row.feature, feature_report(f)))
                .collect(),
            host,
            uprobe_links: match links {
                UprobeLinks::Multi => "uprobe_multi",
                UprobeLinks::PerfEvents => "perf_events",
            },
            programs,
            ok: commands.values().all(|v| v.problems.is_empty()),
            commands,
        }
    }

    /// The report as a person reads it.
    pub fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "kernel {}", self.kernel)?;
        writeln!(out, "\nfeatures (Linux release that brought each)")?;
        let width = self.features.values().map(|r| r.what.len()).max();
        let width = width.unwrap_or_default();
        for report in self.features.values() {
            let here = if report.used {
                "yes".to_string()
            } else if report.needed == "no" {
                format!("not needed: {}", report.without)
            } else if report.present == Some(true) {
                format!("off: {}", report.without)
            } else {
                format!("no: {}", report.without)
            };
            writeln!(out, "  {:<width$} {:>5}  {here}", report.what, report.since)?;
            if let Some(detail) = report.detail.as_ref().filter(|_| !report.used) {
                writeln!(out, "  {:<width$}        ({detail})", "")?;
            }
        }
        writeln!(out, "\nhost")?;
        let capabilities: Vec<String> = self
            .host
            .capabilities
            .iter()
            .map(|(name, has)| format!("{name} {}", if *has { "yes" } else { "no" }))
            .collect();
        writeln!(out, "  capabilities         {}", capabilities.join(", "))?;
        let memlock = self
            .host
            .memlock_bytes
            .map_or("unlimited".to_string(), |b| format!("{b} bytes"));
        writeln!(
            out,
            "  memlock limit        {memlock} (kernels before 5.11 charge BPF maps to it; \
             escapade raises it where it may)"
        )?;
        let or_none = |value: Option<String>| value.unwrap_or_else(|| "none".to_string());
        let lockdown = self
            .host
            .lockdown
            .as_deref()
            .unwrap_or("off (no lockdown LSM)");
        writeln!(out, "  lockdown             {lockdown}")?;
        writeln!(
            out,
            "  tracefs              {} (not needed)",
            or_none(self.host.tracefs.as_ref().map(|p| p.display().to_string()))
        )?;
        writeln!(
            out,
            "  perf_event_paranoid  {}",
            or_none(self.host.perf_event_paranoid.map(|p| p.to_string()))
        )?;
        writeln!(
            out,
            "\nprograms, loaded without attaching (uprobes through {})",
            self.uprobe_links
        )?;
        let mut configurations: Vec<&str> = self.programs.iter().map(|l| l.configuration).collect();
        configurations.dedup();
        for configuration in configurations {
            writeln!(out, "  {configuration}")?;
            let loads = self
                .programs
                .iter()
                .filter(|l| l.configuration == configuration);
            let (loaded, refused): (Vec<&Load>, Vec<&Load>) = loads.partition(|l| l.loaded);
            if !loaded.is_empty() {
                let names: Vec<&str> = loaded.iter().map(|l| l.program).collect();
                writeln!(out, "    loaded: {}", names.join(", "))?;
            }
            for load in refused {
                writeln!(
                    out,
                    "    refused: {}: {}",
                    load.program,
                    load.reason.as_deref().unwrap_or_default()
                )?;
            }
        }
        writeln!(out, "\ncommands")?;
        for (command, verdict) in &self.commands {
            let said = match verdict.verdict {
                "works" => "works",
                "works_with_fallback" => "works, with fallbacks:",
                _ => "does not work:",
            };
            writeln!(out, "  {:<7} {said}", command.name())?;
            for problem in &verdict.problems {
                writeln!(out, "            {problem}")?;
            }
            for fallback in &verdict.fallbacks {
                writeln!(out, "            {} ({})", fallback.instead, fallback.why)?;
            }
        }
        Ok(())
    }
}

fn feature_report(found: &Found) -> FeatureReport {
    let row = found.row;
    let needed = match row.without {
        Without::CannotRun => "required",
        Without::FallsBack(_) => "fallback",
        Without::Limits(_) => "optional",
        Without::NotNeeded(_) => "no",
    };
    let (present, detail) = match &found.presence {
        Presence::Present => (Some(true), None),
        Presence::Missing(how) => (Some(false), Some(how.clone())),
        Presence::Unknown(why) => (None, Some(format!("could not tell: {why}"))),
        Presence::NotProbed => (None, None),
    };
    FeatureReport {
        what: row.what,
        since: row.since,
        present,
        used: found.used(),
        needed,
        without: row.without.says(),
        detail: found
            .switched_off
            .map(|switch| format!("{switch} is set"))
            .or(detail),
    }
}

/// Loads each configuration's programs as `attach` would on this kernel, and the exec
/// watcher's. The verifier takes seconds over a big program that it refuses (twice: again for
/// its log), so the configurations load side by side, one thread each.
fn dry_run(links: UprobeLinks) -> Vec<Load> {
    let mut loads: Vec<Load> = std::thread::scope(|scope| {
        let threads: Vec<_> = CONFIGURATIONS
            .iter()
            .map(|configuration| scope.spawn(move || load_configuration(configuration, links)))
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("a dry run does not panic"))
            .collect()
    });
    loads.push(Load::new(
        EXEC_WATCHER,
        "probe-exec",
        crate::agent::execs::PROGRAM,
        crate::agent::execs::load().map(drop),
    ));
    loads
}

fn load_configuration(configuration: &'static Configuration, links: UprobeLinks) -> Vec<Load> {
    let scope = if configuration.ahead {
        Scope::NextProcess
    } else {
        Scope::Process(std::process::id())
    };
    let points: Vec<ProbePoint> = configuration.kinds.iter().map(|&k| point(k)).collect();
    let config = LoadConfig::new(
        scope,
        configuration.programs,
        &points,
        configuration.samples_cpu,
    )
    .smallest();
    let mut names = attach::program_names(configuration.programs, configuration.kinds);
    if configuration.samples_cpu {
        names.push(crate::cpu::PROGRAM);
    }
    let load = |program, result| Load::new(configuration.name, "probe-ebpf", program, result);
    let mut ebpf = match attach::load(&config) {
        Ok(ebpf) => ebpf,
        // No maps, no programs: each fails the same way.
        Err(e) => {
            let e = format!("{e:#}");
            return names
                .into_iter()
                .map(|program| load(program, Err(anyhow::anyhow!("{e}"))))
                .collect();
        }
    };
    names
        .into_iter()
        .map(|program| {
            let result = if program == crate::cpu::PROGRAM {
                crate::cpu::load_program(&mut ebpf).map(drop)
            } else {
                attach::load_program(&mut ebpf, program, links)
            };
            load(program, result)
        })
        .collect()
}

/// A probe point of `kind` at no address: what decides the programs and the maps' sizes,
/// without a target.
fn point(kind: ProbeKind) -> ProbePoint {
    let counting = !matches!(
        kind,
        ProbeKind::Entry | ProbeKind::Return | ProbeKind::Allocating | ProbeKind::Allocated
    );
    ProbePoint {
        owner: if counting {
            PointOwner::Counting(0)
        } else {
            PointOwner::Traced(0)
        },
        kind,
        addr: 0,
        file_offset: 0,
        flags: 0,
        config: ProbeConfig::default(),
    }
}

impl Load {
    /// The reason is the verifier's line where it refused the program, else the whole error.
    fn new(
        configuration: &'static str,
        object: &'static str,
        program: &'static str,
        result: anyhow::Result<()>,
    ) -> Load {
        let error = result.err();
        let refused = error
            .as_ref()
            .and_then(|e| e.chain().find_map(|c| c.downcast_ref::<Refused>()));
        Load {
            configuration,
            object,
            program,
            loaded: error.is_none(),
            reason: refused
                .map(|r| r.reason.clone())
                .or_else(|| error.as_ref().map(|e| format!("{e:#}"))),
            refused: refused.is_some(),
        }
    }
}

fn verdict(command: Command, found: &[Found], host: &Host, loads: &[Load]) -> Verdict {
    let mut problems = Vec::new();
    let mut fallbacks = Vec::new();
    let missing_privileges = host.missing_privileges();
    if !missing_privileges.is_empty() {
        problems.push(format!(
            "escapade lacks {}: run it as root, or grant those",
            missing_privileges.join(", ")
        ));
    }
    for f in found {
        let why = || match (&f.presence, f.switched_off) {
            (_, Some(switch)) => format!("{switch} is set"),
            (Presence::Missing(how), _) => how.clone(),
            (Presence::Unknown(why), _) => format!("could not tell: {why}"),
            _ => String::new(),
        };
        // Without privileges no probe can tell: the line above says what is wrong.
        let untold = matches!(f.presence, Presence::Unknown(_)) && !missing_privileges.is_empty();
        if f.used() || f.presence == Presence::NotProbed || untold {
            continue;
        }
        match f.row.without {
            Without::CannotRun => problems.push(format!(
                "no {} (Linux {}+): {}",
                f.row.what,
                f.row.since,
                why()
            )),
            Without::FallsBack(instead) => {
                let concerns = match f.row.feature {
                    Feature::ExecTracepoint => command == Command::Agent,
                    _ => true,
                };
                if concerns {
                    fallbacks.push(Fallback {
                        feature: f.row.feature,
                        instead,
                        why: why(),
                    });
                }
            }
            Without::Limits(what) => match command {
                Command::Hot => problems.push(format!("no {}: {}", f.row.what, why())),
                Command::Record | Command::Agent => fallbacks.push(Fallback {
                    feature: f.row.feature,
                    instead: what,
                    why: why(),
                }),
                _ => {}
            },
            Without::NotNeeded(_) => {}
        }
    }
    // A program refused the same way in several configurations makes one line.
    let mut unloaded: BTreeMap<(&str, &str, bool), Vec<&str>> = BTreeMap::new();
    // Without privileges nothing loads: the line above says why.
    let failed = loads
        .iter()
        .filter(|l| !l.loaded && (l.refused || missing_privileges.is_empty()));
    for load in failed {
        let reason = load.reason.as_deref().unwrap_or_default();
        let why = || failure(load.program, load.refused, &[load.configuration], reason);
        if load.configuration == EXEC_WATCHER {
            if command == Command::Agent {
                fallbacks.push(Fallback {
                    feature: Feature::ExecTracepoint,
                    instead: Feature::ExecTracepoint.row().without.says(),
                    why: why(),
                });
            }
            continue;
        }
        let configuration = CONFIGURATIONS
            .iter()
            .find(|c| c.name == load.configuration)
            .expect("every load is of a configuration");
        if !configuration.commands.contains(&command) {
            continue;
        }
        match (load.program == crate::cpu::PROGRAM, command) {
            (false, _) | (true, Command::Hot) => unloaded
                .entry((load.program, reason, load.refused))
                .or_default()
                .push(load.configuration),
            (true, Command::Record | Command::Agent) => fallbacks.push(Fallback {
                feature: Feature::CpuClock,
                instead: Feature::CpuClock.row().without.says(),
                why: why(),
            }),
            (true, _) => {}
        }
    }
    problems.extend(
        unloaded
            .into_iter()
            .map(|((program, reason, refused), configurations)| {
                failure(program, refused, &configurations, reason)
            }),
    );
    // One line per feature, however many programs went without it.
    let mut seen = std::collections::HashSet::new();
    fallbacks.retain(|f: &Fallback| seen.insert(f.feature));
    Verdict {
        verdict: match (problems.is_empty(), fallbacks.is_empty()) {
            (false, _) => "does_not_work",
            (true, false) => "works_with_fallback",
            (true, true) => "works",
        },
        fallbacks,
        problems,
    }
}

/// A program that did not load, in `configurations`.
fn failure(program: &str, refused: bool, configurations: &[&str], reason: &str) -> String {
    let what = if refused { "refused" } else { "did not load" };
    format!(
        "program {program} {what} ({}): {reason}",
        configurations.join("; ")
    )
}
