//! `escapade agent`: the long-running daemon. It keeps a session on every process the
//! configured targets match, through their restarts, and serves what the probes count to
//! Prometheus (`/metrics`) and to pprof scrapers (`/targets/NAME/debug/pprof/...`).
//!
//! `config` reads what to trace, `discover` keeps one view of the node's processes for all
//! targets (told of new ones by `execs`), and `supervisor` runs one target: `models` reads the
//! binaries its processes run, `executable` plans its probes in each and keeps probes waiting
//! in its file, `process` attaches to each process and runs its session, `counting` folds what
//! the kernel counts into the metrics and `recording` writes it. `state` is what sessions and
//! endpoints share, `metrics` the Prometheus side, `http` the endpoints and `retention` the
//! bounds of recording directories.

pub mod config;
mod counting;
mod discover;
pub mod execs;
mod executable;
mod file_probes;
mod http;
mod lease;
mod metrics;
mod models;
mod process;
mod recording;
mod retention;
mod state;
mod supervisor;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use config::{Config, TargetConfig};
use models::AgentModels;
use state::Shared;

use crate::kernel::features::{Feature, switched_off};

/// Where the agent's configuration comes from.
pub enum Source {
    /// A TOML file, read again on SIGHUP.
    File(PathBuf),
    /// The command line: one target.
    Given(Config),
}

impl Source {
    fn load(&self) -> anyhow::Result<Config> {
        match self {
            Source::File(path) => Ok(Config::load(path)?),
            Source::Given(config) => Ok(config.clone()),
        }
    }
}

/// A target's supervisor, running.
struct Running {
    config: TargetConfig,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs until SIGTERM or SIGINT, then detaches from every target.
pub async fn run(source: Source) -> anyhow::Result<()> {
    let config = source.load()?;
    crate::kernel::features::require()?;
    let shared = Arc::new(Shared::default());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    eprintln!(
        "escapade: agent listening on http://{} (/metrics, /targets, /targets/NAME/debug/pprof/allocs|heap|calls|profile)",
        config.listen
    );
    let server = axum::serve(listener, http::router(shared.clone()));
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
    // Sessions borrow their target's model, so they run on this thread, not across threads.
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let node = supervisor::Node {
                processes: watch_processes(),
                models: AgentModels::default(),
            };
            let mut running: HashMap<String, Running> = HashMap::new();
            apply(&mut running, config, &shared, &node).await;
            let server = tokio::task::spawn_local(server.into_future());
            loop {
                tokio::select! {
                    _ = terminate.recv() => break,
                    _ = interrupt.recv() => break,
                    _ = hangup.recv() => match source.load() {
                        Ok(config) => {
                            eprintln!("escapade: reloaded the config");
                            apply(&mut running, config, &shared, &node).await;
                        }
                        // A bad edit keeps the agent running on the config it had.
                        Err(error) => eprintln!("escapade: not reloaded: {error:#}"),
                    },
                }
            }
            eprintln!("escapade: detaching");
            stop_all(running.into_values()).await;
            server.abort();
        })
        .await;
    Ok(())
}

/// Starts the targets `config` adds, stops those it drops, and restarts those it changes; the
/// others carry on undisturbed.
async fn apply(
    running: &mut HashMap<String, Running>,
    config: Config,
    shared: &Arc<Shared>,
    node: &supervisor::Node,
) {
    let wanted: HashMap<String, TargetConfig> = config
        .targets
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let gone: Vec<String> = running
        .iter()
        .filter(|(name, r)| wanted.get(*name) != Some(&r.config))
        .map(|(name, _)| name.clone())
        .collect();
    let stopping: Vec<Running> = gone.iter().filter_map(|n| running.remove(n)).collect();
    stop_all(stopping).await;
    for name in &gone {
        if !wanted.contains_key(name) {
            shared.remove_target(name);
        }
    }
    for (name, target) in wanted {
        if running.contains_key(&name) {
            continue;
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::task::spawn_local(supervisor::supervise(
            target.clone(),
            shared.clone(),
            node.clone(),
            stopped,
        ));
        running.insert(
            name,
            Running {
                config: target,
                stop,
                task,
            },
        );
    }
}

/// The node's processes for every supervisor, kept current by one scan of /proc and the exec
/// tracepoint; where the kernel refuses the tracepoint, by scanning more often.
fn watch_processes() -> watch::Receiver<discover::Processes> {
    let started = match switched_off(Feature::ExecTracepoint) {
        Some(switch) => Err(anyhow::anyhow!("{switch} is set")),
        None => execs::ExecWatcher::start(),
    };
    let watcher = started
        .map_err(|error| {
            eprintln!(
                "escapade: finding new processes by scanning /proc (the exec tracepoint: {error:#})"
            )
        })
        .ok();
    discover::watch(watcher)
}

/// Stops supervisors together: each detaches its probes, which takes a while per probe.
async fn stop_all(targets: impl IntoIterator<Item = Running>) {
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|r| {
            let _ = r.stop.send(true);
            r.task
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}
