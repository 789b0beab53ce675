//! Probes in a target's file that count every process running it, each from its first
//! instruction, whatever the timing of its starts: 0 ms restarts, a new process beside the old
//! one, many at once. They are attached once and stay for as long as the target is configured
//! and the file unchanged, and their maps key each process's state by its TGID. An `exe`
//! target's file is known before its first process; a `comm` target's files once a process
//! runs them.
//!
//! For non-PIE builds, whose code sits at the same addresses in every process, of targets that
//! count calls only: allocations (a heap profiler's rate set in each process), recordings and
//! CPU samples are per process, and their targets attach to each process instead.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::config::{AllocMode, Selector, TargetConfig};
use super::counting::{Counted, Counting};
use super::executable::{Probes, attach_to_file};
use super::lease::Lease;
use super::state::{LiveProfile, ProcessStatus, Shared};
use crate::probes::attach::{Attached, Scope};
use crate::record::Header;
use crate::session::Ended;
use crate::sink::EventSink as _;
use crate::tracee::gobin::GoBinary;
use crate::tracee::process::{boot_ticks_now, exited, start_ticks};

/// How often the kernel's counts are looked at (the sink folds them once a second): with no
/// ring buffer to drain, less often than a session's `ringbuf::POLL_INTERVAL`.
const COUNTS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

pub(super) struct FileProbes {
    pub binary: Arc<GoBinary>,
    /// The file's path, where the probes are.
    pub exe: PathBuf,
    placed: Vec<(String, String)>,
    notes: Vec<String>,
    profile: Arc<Mutex<LiveProfile>>,
    /// When the probes were in place, in the clock ticks of a process's start time.
    attached_at_ticks: u64,
    /// The processes of the file `/targets` shows, by PID.
    counted: HashSet<u32>,
    stop: watch::Sender<bool>,
    /// Told when a process exits, for the probes' maps to let go of what they keep of every
    /// process gone: also of those too short-lived for `counted` to see.
    exits: Arc<Notify>,
    session: JoinHandle<()>,
    /// Let go only once the session has detached: a writer must not change the file under the
    /// probes.
    lease: Lease,
}

/// Whether `config`'s target can count the processes of its file with one set of probes, when
/// the file is not a PIE build.
pub(super) fn serves(config: &TargetConfig) -> bool {
    matches!(config.selector, Selector::Exe(_) | Selector::Comm(_))
        && config.record.is_none()
        && config.cpu_hz == 0
        && config.allocs == AllocMode::Off
}

impl FileProbes {
    /// Attaches to `exe`, the file of `config`'s target, for every process that runs it:
    /// `binary`, read while `lease` was held.
    pub async fn attach(
        config: &TargetConfig,
        exe: &Path,
        binary: Arc<GoBinary>,
        lease: Lease,
        shared: &Arc<Shared>,
    ) -> anyhow::Result<FileProbes> {
        let file = attach_to_file(config, exe, binary.clone(), Scope::EveryProcess).await?;
        let probes = &file.0;
        let attached_at_ticks = boot_ticks_now();
        let header = Header::for_binary(&binary, exe, 0, probes.functions());
        let profile = LiveProfile::new(header, probes.symbols(&binary));
        let (placed, notes) = (probes.placed(), probes.notes.clone());
        let (stop, stopped) = watch::channel(false);
        let exits = Arc::new(Notify::new());
        let session = tokio::task::spawn_local(count(
            config.clone(),
            binary.clone(),
            file,
            shared.clone(),
            profile.clone(),
            exits.clone(),
            stopped,
        ));
        Ok(FileProbes {
            exe: exe.to_path_buf(),
            placed,
            notes,
            binary,
            profile,
            attached_at_ticks,
            counted: HashSet::new(),
            stop,
            exits,
            session,
            lease,
        })
    }

    /// Whether a writer waits to change the file: the probes must go first.
    pub fn lease_broken(&self) -> bool {
        self.lease.broken()
    }

    /// Whether the probes count no process now.
    pub fn idle(&self) -> bool {
        self.counted.is_empty()
    }

    /// Whether process `pid` is counted here.
    pub fn counts(&self, pid: u32) -> bool {
        self.counted.contains(&pid)
    }

    /// Shows process `pid`, which runs the file, as counted.
    pub fn count(&mut self, pid: u32, name: &str, shared: &Shared) {
        if self.counted.contains(&pid) {
            return;
        }
        // Started after the probes were in place: counted from its first instruction. (The
        // same clock tick either way says no.)
        let ahead = start_ticks(pid).is_some_and(|started| started > self.attached_at_ticks);
        self.counted.insert(pid);
        shared.attached(
            name,
            ProcessStatus::attached_now(
                pid,
                &self.exe,
                &self.binary,
                self.placed.clone(),
                self.notes.clone(),
                ahead,
            ),
            self.profile.clone(),
        );
    }

    /// Lets go of the processes counted that no longer run: not among `running`.
    pub fn forget_exited(&mut self, running: &[u32], name: &str, shared: &Shared) {
        self.counted.retain(|pid| {
            let runs = running.contains(pid);
            if !runs {
                shared.detached(name, *pid);
                self.exits.notify_one();
            }
            runs
        });
    }

    /// Detaches, with a last fold of the counts, then lets the file go.
    pub async fn detach(self, name: &str, shared: &Shared) {
        let _ = self.stop.send(true);
        let _ = self.session.await;
        for pid in &self.counted {
            shared.detached(name, *pid);
        }
        drop(self.lease);
    }
}

/// Folds what the probes attached to the file count into the target's metrics until
/// `stopped`; lets go of what they keep of the processes that exited when `exits` says so.
async fn count(
    config: TargetConfig,
    binary: Arc<GoBinary>,
    (probes, mut attached): (Probes, Attached),
    shared: Arc<Shared>,
    profile: Arc<Mutex<LiveProfile>>,
    exits: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) {
    let name = config.name.clone();
    let sites = shared.site_labels(&name);
    let mut sink = Counting::new(
        &config,
        &probes,
        Counted::File(&binary),
        None,
        &shared,
        sites,
        profile,
        None,
        None,
    );
    let counted = async {
        let mut tick = tokio::time::interval(COUNTS_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => sink.checkpoint(attached.counts())?,
                _ = exits.notified() => attached.forget_exited(exited)?,
                _ = stopped.wait_for(|stop| *stop) => break,
            }
        }
        // Calls in flight return before the return probes go too.
        attached.detach_entries()?;
        tokio::time::sleep(COUNTS_INTERVAL).await;
        sink.finish(attached.counts(), Ended::Interrupted, 0)
    };
    if let Err(error) = counted.await {
        let error = format!("{}: {error:#}", config.selector);
        tracing::warn!("target {name}: {error}");
        shared.failed(&name, error);
    }
}
