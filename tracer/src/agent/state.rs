//! What the agent's sessions share with its HTTP endpoints: the metrics, each target's status,
//! and the live profile of each target's newest process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::metrics::Metrics;
use crate::cpu::CpuProfile;
use crate::export::CallSites;
use crate::model::allocs::AllocReport;
use crate::model::records::Symbols;
use crate::record::Header;

#[derive(Default)]
pub struct Shared {
    pub metrics: Metrics,
    targets: Mutex<BTreeMap<String, TargetStatus>>,
    profiles: Mutex<HashMap<String, Arc<Mutex<LiveProfile>>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// No process matches the selector (yet).
    Waiting,
    /// Probes are in place in at least one matching process.
    Attached,
    /// A matching process could not be traced, and none is attached.
    Error,
}

impl State {
    const ALL: [State; 3] = [State::Waiting, State::Attached, State::Error];

    fn name(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Attached => "attached",
            State::Error => "error",
        }
    }
}

/// A target as `/targets` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TargetStatus {
    pub selector: String,
    pub state: State,
    /// The processes escapade is attached to.
    pub processes: Vec<ProcessStatus>,
    /// The process escapade was attached to last, once it is gone: which run the counts so
    /// far came from.
    pub previous: Option<ProcessStatus>,
    /// Why the latest process that matched could not be traced.
    pub last_error: Option<String>,
    /// Whether probes wait in the target's file for its next process (see
    /// [`ProcessStatus::attached_ahead`]).
    pub probes_ahead: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProcessStatus {
    pub pid: u32,
    pub binary: String,
    pub build_id: Option<String>,
    pub go_version: String,
    /// Each probed function (traced and runtime) and where its probe sits.
    pub probes: Vec<(String, String)>,
    /// What the process cannot give that the target's config asks for, and why.
    pub notes: Vec<String>,
    /// Whether the probes were in place before the process's first instruction (attached to
    /// the file ahead of it), rather than attached once it ran.
    pub attached_ahead: bool,
    /// Unix seconds.
    pub attached_at: u64,
}

/// What the pprof endpoints serve for one process: calls by caller and, when allocations are
/// counted, the latest allocation view, with the frames of every address they name.
pub struct LiveProfile {
    pub header: Header,
    pub symbols: Symbols,
    pub calls: CallSites,
    pub allocs: Option<AllocReport>,
    /// The CPU samples, when the target's `cpu_hz` asks for them.
    pub cpu: Option<CpuProfile>,
    pub started: std::time::Instant,
}

/// Poisoning would only mean a panic elsewhere mid-update; the counts stay usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Starts (or keeps, on reload) a target's status.
    pub fn add_target(&self, name: &str, selector: String) {
        lock(&self.targets)
            .entry(name.to_string())
            .or_insert(TargetStatus {
                selector,
                state: State::Waiting,
                processes: Vec::new(),
                previous: None,
                last_error: None,
                probes_ahead: false,
            });
    }

    /// Forgets a target the config no longer names; its counters stay, as Prometheus expects.
    pub fn remove_target(&self, name: &str) {
        lock(&self.targets).remove(name);
        lock(&self.profiles).remove(name);
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut TargetStatus)) {
        if let Some(status) = lock(&self.targets).get_mut(name) {
            change(status);
            status.state = match (status.processes.is_empty(), &status.last_error) {
                (false, _) => State::Attached,
                (true, Some(_)) => State::Error,
                (true, None) => State::Waiting,
            };
        }
    }

    pub fn attached(&self, name: &str, process: ProcessStatus, profile: Arc<Mutex<LiveProfile>>) {
        self.update(name, |s| {
            s.processes.push(process);
            s.last_error = None;
        });
        lock(&self.profiles).insert(name.to_string(), profile);
    }

    pub fn detached(&self, name: &str, pid: u32) {
        self.update(name, |s| {
            if let Some(at) = s.processes.iter().position(|p| p.pid == pid) {
                s.previous = Some(s.processes.remove(at));
            }
        });
    }

    pub fn probes_ahead(&self, name: &str, ahead: bool) {
        self.update(name, |s| s.probes_ahead = ahead);
    }

    pub fn failed(&self, name: &str, error: String) {
        self.update(name, |s| s.last_error = Some(error));
        self.metrics
            .attach_errors
            .get_or_create(&vec![("target", name.to_string())])
            .inc();
    }

    pub fn statuses(&self) -> BTreeMap<String, TargetStatus> {
        lock(&self.targets).clone()
    }

    /// The live profile of `name`'s newest process; None if the target is unknown or never
    /// attached.
    pub fn profile(&self, name: &str) -> Option<Arc<Mutex<LiveProfile>>> {
        lock(&self.profiles).get(name).cloned()
    }

    /// The exposition text, with the targets-by-state gauge as of now.
    pub fn metrics_text(&self) -> String {
        let statuses = lock(&self.targets);
        for state in State::ALL {
            let count = statuses.values().filter(|s| s.state == state).count();
            self.metrics
                .targets
                .get_or_create(&vec![("state", state.name().to_string())])
                .set(count as i64);
        }
        drop(statuses);
        self.metrics.encode()
    }
}

/// Locks a live profile (see [`lock`] on poisoning).
pub fn lock_profile(profile: &Mutex<LiveProfile>) -> MutexGuard<'_, LiveProfile> {
    lock(profile)
}
