//! One target's life in the agent: find the processes its selector matches, start a session on
//! each (planned from that process's own executable, so a binary replaced on disk is planned
//! afresh), keep probes waiting in an `exe` target's file while none runs, and detach from all
//! as the agent stops.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{Selector, TargetConfig};
use super::discover::Processes;
use super::executable::{Ahead, rearm};
use super::file_probes::{self, FileProbes};
use super::lease::Lease;
use super::metrics::SiteLabels;
use super::models::{AgentModels, Models};
use super::process::PlannedProcess;
use super::recording::Writing;
use super::state::Shared;
use crate::tracee::gobin::GoBinary;

/// How soon to look again when probes could not wait in the file (a writer had it open).
const RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// How often to look at the processes when nothing happens, for a target's processes the
/// view of the node has not changed for (a process that exited unseen lets go of probes
/// waiting in its file).
const IDLE_INTERVAL: Duration = Duration::from_secs(2);

/// What every target's supervisor shares with the others.
#[derive(Clone)]
pub struct Node {
    /// The agent's view of the node's processes.
    pub processes: watch::Receiver<Processes>,
    pub models: AgentModels,
}

/// Runs until `stop` turns true, then detaches from every process of the target.
pub async fn supervise(
    config: TargetConfig,
    shared: Arc<Shared>,
    node: Node,
    stop: watch::Receiver<bool>,
) {
    let mut target = TargetLoop::new(config, shared, node, stop);
    while target.step().await {}
    target.detach().await;
}

/// One target's state between two looks at its processes.
struct TargetLoop {
    config: TargetConfig,
    shared: Arc<Shared>,
    processes: watch::Receiver<Processes>,
    models: Models,
    sites: Arc<Mutex<SiteLabels>>,
    writing: Writing,
    /// Each process's session, by PID.
    running: HashMap<u32, JoinHandle<()>>,
    /// Processes that could not be traced: not retried until they exit.
    failed: HashSet<u32>,
    ahead: Option<Ahead>,
    /// Probes in the target's file for every process that runs it: the file at its path now,
    /// and older builds while their processes run.
    files: Vec<FileProbes>,
    /// A build whose file probes could not be attached: its processes are attached to each.
    refused: Option<Arc<GoBinary>>,
    /// A session's end, to attach ahead of the next process as soon as the last one is gone.
    ended: (UnboundedSender<()>, UnboundedReceiver<()>),
    /// A writer opening a file the probes wait in breaks their lease, with this signal.
    lease_breaks: Option<Signal>,
    stop: watch::Receiver<bool>,
}

impl TargetLoop {
    fn new(
        config: TargetConfig,
        shared: Arc<Shared>,
        node: Node,
        stop: watch::Receiver<bool>,
    ) -> TargetLoop {
        shared.add_target(&config.name, config.selector.to_string());
        let lease_breaks = signal(SignalKind::io())
            .map_err(|e| tracing::warn!("no probes ahead of new processes: handling SIGIO: {e}"))
            .ok();
        TargetLoop {
            sites: shared.site_labels(&config.name),
            config,
            shared,
            processes: node.processes,
            models: Models::new(node.models),
            writing: Writing::default(),
            running: HashMap::new(),
            failed: HashSet::new(),
            ahead: None,
            files: Vec::new(),
            refused: None,
            ended: tokio::sync::mpsc::unbounded_channel(),
            lease_breaks,
            stop,
        }
    }

    /// Keeps probes in the target's file, or else attaches to its new processes and keeps
    /// probes ahead of the next one while none runs, then waits for a change. False once the
    /// agent stops.
    async fn step(&mut self) -> bool {
        let ahead_broken = self.ahead.as_ref().is_some_and(|a| a.lease.broken());
        if ahead_broken || self.files.iter().any(FileProbes::lease_broken) {
            // Said before the probes go, which lets the writer go on: once its write is done,
            // /targets must not still show the probes of the file as it was.
            self.shared.probes_ahead(&self.config.name, false);
        }
        if ahead_broken {
            // Detaches, then lets the writer go.
            self.ahead = None;
        }
        self.detach_files(|file| file.lease_broken()).await;
        self.running.retain(|_, task| !task.is_finished());
        let pids = self
            .processes
            .borrow_and_update()
            .matching(&self.config.selector);
        self.failed.retain(|pid| pids.contains(pid));
        let mut sleep = IDLE_INTERVAL;
        if self.lease_breaks.is_some() {
            if !self.keep_file_probes(&pids).await {
                sleep = RETRY_INTERVAL;
            }
            if self.files.is_empty() && pids.is_empty() && self.running.is_empty() {
                if let Selector::Exe(exe) = &self.config.selector {
                    self.models.load(exe, self.config.symbols.as_deref()).await;
                }
                if !rearm(&mut self.ahead, &self.config, &mut self.models).await {
                    sleep = RETRY_INTERVAL;
                }
            }
        }
        for &pid in &pids {
            if self.running.contains_key(&pid) || self.failed.contains(&pid) {
                continue;
            }
            if !self.count_in_file(pid).await {
                self.start(pid).await;
            }
        }
        let (name, shared) = (&self.config.name, &self.shared);
        for file in &mut self.files {
            file.forget_exited(&pids, name, shared);
        }
        // An older build's probes go with its last process.
        let current = self.current_binaries().await;
        self.detach_files(|file| {
            file.idle() && !current.iter().any(|c| Arc::ptr_eq(c, &file.binary))
        })
        .await;
        let ahead = self.ahead.is_some() || !self.files.is_empty();
        self.shared.probes_ahead(&self.config.name, ahead);
        self.wait(sleep).await
    }

    /// The models of the files at the paths of the file probes now, read off this thread.
    async fn current_binaries(&mut self) -> Vec<Arc<GoBinary>> {
        let symbols = self.config.symbols.as_deref();
        let paths: Vec<PathBuf> = self.files.iter().map(|f| f.exe.clone()).collect();
        let mut current = Vec::new();
        for path in paths {
            self.models.load(&path, symbols).await;
            current.extend(self.models.get(&path, symbols).ok());
        }
        current
    }

    /// Keeps probes in the target's files for every process that runs them, where the target
    /// and the build allow it (see [`file_probes`]): an `exe` target's file, and the files a
    /// `comm` target's processes `pids` run, once one is seen. Returns false while a writer
    /// has a file open (attached as soon as it is done).
    async fn keep_file_probes(&mut self, pids: &[u32]) -> bool {
        if !file_probes::serves(&self.config) {
            return true;
        }
        let mut paths = match &self.config.selector {
            Selector::Exe(exe) => vec![exe.clone()],
            // Not the processes already counted here or with a session of their own.
            Selector::Comm(_) => pids
                .iter()
                .filter(|&&pid| !self.files.iter().any(|f| f.counts(pid)))
                .filter(|pid| !self.running.contains_key(pid) && !self.failed.contains(pid))
                // A file deleted or replaced since the process started has no path to probe.
                .filter_map(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
                .filter(|path| path.exists())
                .collect(),
            Selector::Pid(_) => return true,
        };
        paths.sort();
        paths.dedup();
        let mut attached = true;
        for path in paths {
            attached &= self.keep_file_probes_in(&path).await;
        }
        attached
    }

    /// Keeps probes in file `exe` for every process that runs it, if the build allows (not
    /// PIE) and no session runs. False while a writer has the file open.
    async fn keep_file_probes_in(&mut self, exe: &Path) -> bool {
        let symbols = self.config.symbols.as_deref();
        self.models.load(exe, symbols).await;
        let Ok(binary) = self.models.get(exe, symbols) else {
            return true;
        };
        let known = |b: &Arc<GoBinary>| Arc::ptr_eq(b, &binary);
        // Sessions on processes of the file would count their calls twice.
        if binary.is_pie
            || self.files.iter().any(|f| known(&f.binary))
            || self.refused.as_ref().is_some_and(known)
            || !self.running.is_empty()
        {
            return true;
        }
        let lease = match Lease::take(exe) {
            Ok(lease) => lease,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                tracing::debug!("target {}: no probes in the file: {e}", self.config.name);
                return true;
            }
        };
        // Read after the lease is held: the file cannot change unseen from here on.
        let Ok(binary) = self.models.get(exe, symbols) else {
            return true;
        };
        // Both would count the next process.
        self.ahead = None;
        match FileProbes::attach(&self.config, exe, binary.clone(), lease, &self.shared).await {
            Ok(file) => self.files.push(file),
            Err(error) => {
                tracing::warn!(
                    "target {}: probes in {} for every process: {error:#}; attaching to each \
                     process instead",
                    self.config.name,
                    exe.display()
                );
                self.refused = Some(binary);
            }
        }
        true
    }

    /// Counts process `pid` with the file probes of the build it runs, if there are; false
    /// if there are none.
    async fn count_in_file(&mut self, pid: u32) -> bool {
        if self.files.is_empty() {
            return false;
        }
        if self.files.iter().any(|file| file.counts(pid)) {
            return true;
        }
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let symbols = self.config.symbols.as_deref();
        self.models.load(&exe, symbols).await;
        let Ok(binary) = self.models.get(&exe, symbols) else {
            return false;
        };
        let file = self
            .files
            .iter_mut()
            .find(|file| Arc::ptr_eq(&file.binary, &binary));
        match file {
            Some(file) => {
                file.count(pid, &self.config.name, &self.shared);
                true
            }
            None => false,
        }
    }

    /// Detaches the file probes `which` picks.
    async fn detach_files(&mut self, which: impl Fn(&FileProbes) -> bool) {
        let (gone, kept) = std::mem::take(&mut self.files)
            .into_iter()
            .partition::<Vec<_>, _>(|file| which(file));
        self.files = kept;
        for file in gone {
            file.detach(&self.config.name, &self.shared).await;
        }
    }

    /// Plans process `pid` and starts its session.
    async fn start(&mut self, pid: u32) {
        let config = &self.config;
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        self.models.load(&exe, config.symbols.as_deref()).await;
        match PlannedProcess::open(pid, config, &mut self.models, &mut self.ahead) {
            Ok(planned) => {
                let task = planned.run(
                    self.shared.clone(),
                    self.sites.clone(),
                    self.writing.clone(),
                    self.stop.clone(),
                );
                let ended = self.ended.0.clone();
                let task = async move {
                    task.await;
                    let _ = ended.send(());
                };
                self.running.insert(pid, tokio::task::spawn_local(task));
            }
            Err(error) => {
                self.failed.insert(pid);
                let error = format!("{error:#}");
                tracing::warn!("target {}: {error}", config.name);
                self.shared.failed(&config.name, error);
            }
        }
    }

    /// Waits `sleep` at most, less if something changes. False once the agent stops.
    async fn wait(&mut self, sleep: Duration) -> bool {
        let processes = &mut self.processes;
        let changed = async {
            // The sender goes only as the agent stops, which `stop` says.
            if processes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => true,
            _ = changed => true,
            _ = self.ended.1.recv() => true,
            _ = lease_broken(&mut self.lease_breaks) => true,
            _ = self.stop.wait_for(|stop| *stop) => false,
        }
    }

    /// Waits for every session to detach (each sees `stop` too), and detaches the file probes.
    async fn detach(mut self) {
        self.detach_files(|_| true).await;
        for (_, task) in self.running {
            let _ = task.await;
        }
    }
}

async fn lease_broken(breaks: &mut Option<Signal>) {
    match breaks {
        Some(breaks) => _ = breaks.recv().await,
        None => std::future::pending().await,
    }
}
