//! What the agent's sessions share with its HTTP endpoints: the metrics, each target's status,
//! and the live profile of each target's newest process.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::metrics::{Metrics, SiteLabels};
use crate::cpu::CpuProfile;
use crate::export::CallSites;
use crate::model::allocs::AllocReport;
use crate::model::records::Symbols;
use crate::record::Header;
use crate::tracee::gobin::GoBinary;

#[derive(Default)]
pub struct Shared {
    pub metrics: Metrics,
    targets: Mutex<BTreeMap<String, TargetStatus>>,
    profiles: Mutex<HashMap<String, Arc<Mutex<LiveProfile>>>>,
    /// Per target, kept for the agent's life like the counters they label: a target restarted
    /// by a reload labels its sites as before.
    site_labels: Mutex<HashMap<String, Arc<Mutex<SiteLabels>>>>,
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

impl ProcessStatus {
    /// Process `pid` of `binary`, at `exe`, with `probes` in place from now.
    pub fn attached_now(
        pid: u32,
        exe: &Path,
        binary: &GoBinary,
        probes: Vec<(String, String)>,
        notes: Vec<String>,
        attached_ahead: bool,
    ) -> ProcessStatus {
        ProcessStatus {
            pid,
            binary: exe.display().to_string(),
            build_id: binary.build.build_id.clone(),
            go_version: binary.build.go_version.clone(),
            probes,
            notes,
            attached_ahead,
            attached_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
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
    /// When the kernel's counts in it were read, at the session's last fold (once a second).
    pub folded: std::time::Instant,
}

impl LiveProfile {
    /// Nothing counted yet, under `header`, with the frames of `symbols`.
    pub fn new(header: Header, symbols: Symbols) -> Arc<Mutex<LiveProfile>> {
        Arc::new(Mutex::new(LiveProfile {
            header,
            symbols,
            calls: CallSites::default(),
            allocs: None,
            cpu: None,
            started: std::time::Instant::now(),
            folded: std::time::Instant::now(),
        }))
    }
}

/// Poisoning would only mean a panic elsewhere mid-update; the counts stay usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Starts a target's status, or keeps it on a reload that restarts the target with the
    /// same selector (the same processes, whose counts go on). A new selector names other
    /// processes: what the old one saw (its error, its previous process) starts over.
    pub fn add_target(&self, name: &str, selector: String) {
        let mut targets = lock(&self.targets);
        if targets
            .get(name)
            .is_some_and(|status| status.selector == selector)
        {
            return;
        }
        targets.insert(
            name.to_string(),
            TargetStatus {
                selector,
                state: State::Waiting,
                processes: Vec::new(),
                previous: None,
                last_error: None,
                probes_ahead: false,
            },
        );
    }

    /// The labels of `target`'s allocation and goroutine sites.
    pub fn site_labels(&self, target: &str) -> Arc<Mutex<SiteLabels>> {
        lock(&self.site_labels)
            .entry(target.to_string())
            .or_default()
            .clone()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32) -> ProcessStatus {
        ProcessStatus {
            pid,
            binary: "/srv/api".into(),
            build_id: None,
            go_version: "go1.26.6".into(),
            probes: Vec::new(),
            notes: Vec::new(),
            attached_ahead: false,
            attached_at: 0,
        }
    }

    #[test]
    fn a_reload_keeps_a_targets_status_unless_its_selector_changes() {
        let shared = Shared::default();
        shared.add_target("api", "exe:/srv/api".into());
        shared.update("api", |s| s.processes.push(process(7)));
        shared.detached("api", 7);
        shared.failed("api", "no symbols".into());

        shared.add_target("api", "exe:/srv/api".into());
        let kept = &shared.statuses()["api"];
        assert_eq!(kept.previous.as_ref().map(|p| p.pid), Some(7));
        assert_eq!(kept.last_error.as_deref(), Some("no symbols"));

        shared.add_target("api", "comm:api-v2".into());
        let fresh = &shared.statuses()["api"];
        assert_eq!(fresh.selector, "comm:api-v2");
        assert!(fresh.previous.is_none() && fresh.last_error.is_none());
        assert_eq!(fresh.state, State::Waiting);
    }

    #[test]
    fn a_restarted_target_labels_its_sites_as_before() {
        let shared = Shared::default();
        let first = shared.site_labels("api");
        for i in 0..super::super::metrics::MAX_SITES {
            lock(&first).label(&format!("site{i}"));
        }
        assert_eq!(lock(&first).label("late"), "other");
        drop(first);
        // What the next run of the target's supervisor gets.
        let again = shared.site_labels("api");
        assert_eq!(lock(&again).label("late"), "other");
        assert_eq!(lock(&again).label("site0"), "site0");
    }
}
