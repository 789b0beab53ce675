//! Sessions side by side in one process, through the library as the agent runs them: three Go
//! processes (two of one binary, which share its uprobes' file, and one of another) traced at
//! once on one single-threaded runtime, each session stopped by its own future. Each session's
//! kernel counts, and the events its sink sees, must be exactly what its own process did: the
//! processes make different numbers of calls, so probes or maps shared between sessions would
//! show. New sessions are created and run for every Go version, in the same process.

mod common;

use escapade::probes::attach::{Programs, Scope, attach};
use escapade::probes::plan::{PlacementMode, Plan, PlanOptions};
use escapade::probes::snapshot::KernelCounts;
use escapade::session::{Ended, Session};
use escapade::sink::EventSink;
use escapade::tracee::Target;
use probe_common::{CallEvent, CallStats, EventKind};

/// What a session's sink saw: per traced function, entry and return events, and the kernel's
/// counts at the last checkpoint.
struct Seen {
    /// The traced function of each probe id.
    functions_of: Vec<Option<usize>>,
    entries: Vec<u64>,
    returns: Vec<u64>,
    /// The processes the events came from.
    tgids: std::collections::BTreeSet<u32>,
    checkpoints: usize,
    last_counted: Vec<CallStats>,
}

impl Seen {
    fn new(plan: &Plan) -> Seen {
        let functions = plan.traced.len();
        Seen {
            functions_of: plan.points.iter().map(|p| p.owner.traced()).collect(),
            entries: vec![0; functions],
            returns: vec![0; functions],
            tgids: Default::default(),
            checkpoints: 0,
            last_counted: Vec::new(),
        }
    }
}

impl EventSink for Seen {
    fn event(&mut self, event: &CallEvent) -> anyhow::Result<()> {
        self.tgids.insert(event.tgid);
        let Some(function) = self.functions_of[event.probe_id as usize] else {
            return Ok(());
        };
        match EventKind::from_u32(event.kind) {
            Some(EventKind::Entry) => self.entries[function] += 1,
            Some(EventKind::Return) => self.returns[function] += 1,
            _ => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    fn checkpoint(&mut self, counts: &KernelCounts) -> anyhow::Result<()> {
        self.checkpoints += 1;
        self.last_counted = counts.call_stats(self.entries.len())?;
        Ok(())
    }
}

/// A Go process to trace, what to trace in it, and how many calls of each it must make.
struct Traced {
    bin: std::path::PathBuf,
    args: Vec<String>,
    functions: Vec<&'static str>,
    /// What the program prints once its work is done, and the count it must print.
    prints: (&'static str, u64),
    /// Whether it then waits for a line before exiting.
    waits: bool,
    calls: Vec<u64>,
}

fn targets(go: &common::Go) -> Vec<Traced> {
    let agent = common::build(go, "agent", &[]);
    let work = |n: u64| Traced {
        bin: agent.clone(),
        args: vec![n.to_string()],
        functions: vec!["main.work"],
        prints: ("calls", n),
        waits: false,
        calls: vec![n],
    };
    vec![
        work(2000),
        work(3001),
        Traced {
            bin: common::build(go, "record", &[]),
            args: Vec::new(),
            functions: vec!["main.add", "main.fill"],
            // add(s, i) for i in 0..300.
            prints: ("sum", 299 * 300 / 2),
            waits: true,
            calls: vec![300, 1],
        },
    ]
}

/// Lets the program work and returns the count it prints, once it has exited.
fn drive(mut program: common::Target, prints: &'static str, waits: bool) -> u64 {
    program.go();
    let printed = program.read_count(prints);
    if waits {
        program.go();
    }
    program.finish();
    printed
}

#[test]
fn sessions_side_by_side_each_count_their_own_process() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        let traced = targets(&go);
        let programs: Vec<common::Target> = traced
            .iter()
            .map(|t| {
                let args: Vec<&str> = t.args.iter().map(String::as_str).collect();
                common::Target::start(&t.bin, &args)
            })
            .collect();
        let pids: Vec<u32> = programs.iter().map(|p| p.pid).collect();
        let opened: Vec<(Target, Plan)> = traced
            .iter()
            .zip(&pids)
            .map(|(t, &pid)| {
                let target = Target::open(pid, None).unwrap();
                let names: Vec<String> = t.functions.iter().map(|f| f.to_string()).collect();
                let functions = target.binary.resolve(&names).unwrap();
                // Leaves (main.add) probed on their call sites: with every probe emulated, no
                // preemption signal during a single step can repeat an event.
                let options = PlanOptions {
                    placement: PlacementMode::Callsites,
                    ..PlanOptions::default()
                };
                let plan = Plan::new(&target.binary, functions, &options).unwrap();
                assert!(
                    plan.points.iter().all(|p| !p.single_stepped()),
                    "{:?}: {:?}",
                    t.functions,
                    plan.traced
                );
                (target, plan)
            })
            .collect();
        let results = runtime.block_on(async {
            let mut sessions = Vec::new();
            for (target, plan) in &opened {
                let attached = attach(
                    Scope::Process(target.process.pid),
                    &target.process.exe,
                    target.binary.go_offsets(target.bias),
                    &plan.points,
                    Programs::Tracing,
                    &[],
                    false,
                )
                .unwrap();
                sessions.push((Session::new(target, attached).unwrap(), Seen::new(plan)));
            }
            let drivers: Vec<_> = programs
                .into_iter()
                .zip(&traced)
                .map(|(program, t)| {
                    let (prints, waits) = (t.prints.0, t.waits);
                    tokio::task::spawn_blocking(move || drive(program, prints, waits))
                })
                .collect();
            // A session stops when its process exits; the deadline only keeps a hung
            // program from hanging the test.
            let stop = || async {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                Ended::Deadline
            };
            let [(a, a_seen), (b, b_seen), (c, c_seen)] = &mut sessions[..] else {
                unreachable!("three sessions")
            };
            let ended = tokio::join!(
                a.run(stop(), a_seen, None),
                b.run(stop(), b_seen, None),
                c.run(stop(), c_seen, None),
            );
            let ended = [ended.0.unwrap(), ended.1.unwrap(), ended.2.unwrap()];
            let mut printed = Vec::new();
            for driver in drivers {
                printed.push(driver.await.unwrap());
            }
            sessions
                .into_iter()
                .zip(ended)
                .zip(printed)
                .map(|(((session, seen), ended), printed)| {
                    let counted = session.counts().call_stats(seen.entries.len()).unwrap();
                    let counters = session.counts().counters();
                    (seen, ended, printed, counted, counters)
                })
                .collect::<Vec<_>>()
        });
        for ((t, pid), (seen, ended, printed, counted, counters)) in
            traced.iter().zip(&pids).zip(results)
        {
            let what = format!("PID {pid} ({:?}, {})", t.functions, go.version);
            assert_eq!(ended, (Ended::TargetExited, 0), "{what}");
            assert_eq!(printed, t.prints.1, "{what}: the program's own count");
            let entries: Vec<u64> = counted.iter().map(|c| c.entries).collect();
            let returns: Vec<u64> = counted.iter().map(|c| c.returns).collect();
            assert_eq!(entries, t.calls, "{what}: calls the kernel counted");
            assert_eq!(returns, t.calls, "{what}: returns the kernel counted");
            assert_eq!(counters.dropped, 0, "{what}: {counters:?}");
            assert_eq!(seen.entries, t.calls, "{what}: entry events");
            assert_eq!(seen.returns, t.calls, "{what}: return events");
            assert_eq!(
                counters.events,
                2 * t.calls.iter().sum::<u64>(),
                "{what}: every event the probes sent is an entry or a return"
            );
            assert_eq!(
                seen.tgids.iter().copied().collect::<Vec<_>>(),
                [*pid],
                "{what}: events from other processes"
            );
            assert!(
                seen.checkpoints > 0,
                "{what}: the sink was never checkpointed"
            );
            let checkpointed: Vec<u64> = seen.last_counted.iter().map(|c| c.entries).collect();
            assert!(
                checkpointed.len() == t.calls.len()
                    && checkpointed
                        .iter()
                        .zip(&t.calls)
                        .all(|(seen, all)| seen <= all),
                "{what}: the last checkpoint saw {checkpointed:?} of {:?}",
                t.calls
            );
        }
    }
}
