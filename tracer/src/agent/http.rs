//! The agent's HTTP endpoints: `/metrics` for Prometheus, `/targets` and `/healthz` for people
//! and orchestrators, and per target the pprof profiles that `go tool pprof`, Parca and
//! Pyroscope scrape (`/targets/NAME/debug/pprof/allocs|heap|calls|profile`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::state::{LiveProfile, Shared, lock_profile};
use crate::cpu::CpuProfile;
use crate::export::{CallSites, Recorded, pprof};
use crate::model::allocs::AllocReport;

/// Longest window a profile request may ask for, as Go's own `net/http/pprof` bounds it by its
/// server's write timeout.
const MAX_WINDOW: Duration = Duration::from_secs(600);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/targets", get(targets))
        .route("/targets/{name}/debug/pprof/{kind}", get(profile))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics_text(),
    )
}

async fn targets(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    axum::Json::<BTreeMap<_, _>>(shared.statuses())
}

/// Waits until the session has folded the kernel's counts read at `end` or later into
/// `live`: a window's last snapshot must not be the fold its first one saw, which a session
/// slowed by a busy machine can leave in place for over a second. Gives up after
/// [`FOLD_WAIT`], when the session may be gone.
async fn until_folded_after(live: &Mutex<LiveProfile>, end: Instant) {
    let deadline = end + FOLD_WAIT;
    while lock_profile(live).folded < end && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a window waits for the session's next fold, several of its intervals.
const FOLD_WAIT: Duration = Duration::from_secs(10);

#[derive(serde::Deserialize)]
struct Window {
    /// Profile only what happens in the next this many seconds, as Go's
    /// `/debug/pprof/profile?seconds=N` does; without it, everything since escapade attached.
    seconds: Option<u64>,
}

/// Which profile an endpoint serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Allocs,
    Heap,
    Calls,
    /// CPU samples, as Go's `/debug/pprof/profile`.
    Cpu,
}

async fn profile(
    State(shared): State<Arc<Shared>>,
    Path((name, kind)): Path<(String, String)>,
    Query(window): Query<Window>,
) -> Response {
    let kind = match kind.as_str() {
        "allocs" => Kind::Allocs,
        "heap" => Kind::Heap,
        "calls" => Kind::Calls,
        "profile" => Kind::Cpu,
        _ => {
            return not_found(format!(
                "no profile {kind:?}: try allocs, heap, calls or profile"
            ));
        }
    };
    let Some(live) = shared.profile(&name) else {
        return not_found(format!(
            "no process of target {name:?} has been attached to (see /targets)"
        ));
    };
    let baseline = match window.seconds {
        Some(seconds) => {
            let seconds = Duration::from_secs(seconds).min(MAX_WINDOW);
            let before = Snapshot::of(&lock_profile(&live));
            tokio::time::sleep(seconds).await;
            until_folded_after(&live, Instant::now()).await;
            Some((before, seconds))
        }
        None => None,
    };
    // What the profile needs, copied under the lock; the sessions fold into it meanwhile.
    let (header, symbols, calls, allocs, cpu, elapsed) = {
        let live = lock_profile(&live);
        let (calls, allocs, cpu, elapsed) = match &baseline {
            Some((before, window)) => {
                let now = Snapshot::of(&live);
                (
                    now.calls_since(&before.calls),
                    now.allocs_since(before),
                    now.cpu_since(before),
                    *window,
                )
            }
            None => {
                let mut calls = CallSites::default();
                calls.counts = live.calls.counts.clone();
                (
                    calls,
                    live.allocs.clone(),
                    live.cpu.clone(),
                    live.started.elapsed(),
                )
            }
        };
        (
            live.header.clone(),
            live.symbols.clone(),
            calls,
            allocs,
            cpu,
            elapsed,
        )
    };
    let header = match kind {
        Kind::Allocs | Kind::Heap if header.allocs.is_none() => {
            return not_found(format!(
                "target {name:?} does not count allocations (allocs = \"off\")"
            ));
        }
        Kind::Allocs | Kind::Heap => crate::record::Header {
            functions: Vec::new(),
            cpu_hz: None,
            ..header
        },
        Kind::Calls if header.functions.is_empty() => {
            return not_found(format!("target {name:?} traces no functions"));
        }
        Kind::Calls => crate::record::Header {
            allocs: None,
            cpu_hz: None,
            ..header
        },
        Kind::Cpu if header.cpu_hz.is_none() => {
            return not_found(format!(
                "target {name:?} samples no CPU: set cpu_hz (e.g. 99) in its config"
            ));
        }
        Kind::Cpu => crate::record::Header {
            functions: Vec::new(),
            allocs: None,
            ..header
        },
    };
    // Only the profile asked for: the header says which parts a profile has.
    let (allocs, cpu) = match kind {
        Kind::Allocs | Kind::Heap => (allocs, None),
        Kind::Calls => (None, None),
        Kind::Cpu => (None, cpu),
    };
    let default = match kind {
        Kind::Allocs => "alloc_space",
        Kind::Heap => "inuse_space",
        Kind::Calls => "calls",
        Kind::Cpu => "cpu",
    };
    // Encoding and compressing take a while for a big profile: not on the thread that drains
    // every session.
    let encoded = tokio::task::spawn_blocking(move || {
        let recorded = Recorded {
            header: &header,
            symbols: &symbols,
            allocs: allocs.as_ref(),
            cpu: cpu.as_ref(),
            elapsed_ns: elapsed.as_nanos() as u64,
        };
        let mut body = Vec::new();
        pprof::write_gzipped(&mut body, &calls, &recorded, Some(default)).map(|()| body)
    })
    .await;
    let body = match encoded {
        Ok(Ok(body)) => body,
        Ok(Err(error)) => return internal_error(error),
        Err(error) => return internal_error(error),
    };
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"profile.pb.gz\"",
            ),
        ],
        body,
    )
        .into_response()
}

fn internal_error(error: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
}

fn not_found(message: String) -> Response {
    (StatusCode::NOT_FOUND, message + "\n").into_response()
}

/// A live profile's counts at one moment, to subtract from a later one.
struct Snapshot {
    calls: std::collections::BTreeMap<(usize, u64), (u64, u64)>,
    allocs: Option<AllocReport>,
    cpu: Option<CpuProfile>,
}

impl Snapshot {
    fn of(live: &LiveProfile) -> Snapshot {
        Snapshot {
            calls: live.calls.counts.clone(),
            allocs: live.allocs.clone(),
            cpu: live.cpu.clone(),
        }
    }

    fn cpu_since(&self, before: &Snapshot) -> Option<CpuProfile> {
        let now = self.cpu.as_ref()?;
        Some(match &before.cpu {
            Some(before) => now.since(before),
            None => now.clone(),
        })
    }

    fn calls_since(
        &self,
        before: &std::collections::BTreeMap<(usize, u64), (u64, u64)>,
    ) -> CallSites {
        let mut calls = CallSites::default();
        for (key, &(count, ns)) in &self.calls {
            let (was_count, was_ns) = before.get(key).copied().unwrap_or_default();
            if count > was_count {
                calls
                    .counts
                    .insert(*key, (count - was_count, ns.saturating_sub(was_ns)));
            }
        }
        calls
    }

    fn allocs_since(&self, before: &Snapshot) -> Option<AllocReport> {
        let now = self.allocs.as_ref()?;
        Some(match &before.allocs {
            Some(before) => now.since(before),
            None => now.clone(),
        })
    }
}
