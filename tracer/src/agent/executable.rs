//! What a target probes in one executable, the same for each of its processes, and the probes
//! that wait in the file for its next process.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use super::config::{AllocMode, Selector, TargetConfig};
use super::lease::Lease;
use super::models::Models;
use crate::hints::without_dwarf;
use crate::model::records::{FunctionInfo, Symbols};
use crate::probes::attach::{Attached, Programs, Scope, attach};
use crate::probes::plan::{
    CountingProbes, PlacementMode, Plan, PlanOptions, ProbePoint, counting_probes,
};
use crate::tracee::gobin::GoBinary;

/// Keeps probes attached ahead of the target's next process while none runs: for the file at
/// its path now, and not claimed by a process that has come and gone unseen.
/// Returns false while a writer has the file open (armed again as soon as it is done).
pub(super) async fn rearm(
    ahead: &mut Option<Ahead>,
    config: &TargetConfig,
    models: &mut Models,
) -> bool {
    if let (Some(a), Selector::Exe(exe)) = (ahead.as_ref(), &config.selector) {
        let current = models
            .get(exe, config.symbols.as_deref())
            .is_ok_and(|binary| Arc::ptr_eq(&binary, &a.binary));
        // A live claimant not among the target's processes (the same file under another
        // path) would claim new probes at once too.
        let claimant_gone = a
            .attached
            .claimed_by()
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if current && !claimant_gone {
            return true;
        }
    }
    // Detach the old probes before attaching new ones.
    *ahead = None;
    match Ahead::arm(config, models).await {
        Ok(armed) => {
            *ahead = armed;
            true
        }
        Err(error) => {
            tracing::debug!("target {}: no probes ahead: {error:#}", config.name);
            let busy = error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::WouldBlock);
            !busy
        }
    }
}

/// What to probe in one binary for a target's config: the same for each of its processes.
pub(super) struct Probes {
    pub plan: Plan,
    pub counting: Option<CountingProbes>,
    /// What the binary cannot give that the config asks for.
    pub notes: Vec<String>,
}

impl Probes {
    pub(super) fn plan(binary: &GoBinary, config: &TargetConfig) -> anyhow::Result<Probes> {
        let plan = if config.functions.is_empty() {
            Plan {
                traced: Vec::new(),
                points: Vec::new(),
            }
        } else {
            let functions = binary.resolve(&config.functions)?;
            let options = PlanOptions {
                capture_strings: config.capture_strings,
                ..PlanOptions::default()
            };
            Plan::new(binary, functions, &options)?
        };
        let notes = without_dwarf(binary.has_dwarf())
            .into_iter()
            .map(|what| format!("{what} (`symbols = FILE` in the target's config)"))
            .collect();
        let counting = match config.allocs {
            AllocMode::Off => None,
            AllocMode::Sampled => Some(counting_probes(binary, PlacementMode::Fast, false)?),
            AllocMode::Exact => Some(counting_probes(binary, PlacementMode::Fast, true)?),
        };
        Ok(Probes {
            plan,
            counting,
            notes,
        })
    }

    /// The traced functions, as a header names them.
    pub(super) fn functions(&self) -> Vec<FunctionInfo> {
        self.plan.traced.iter().map(FunctionInfo::of).collect()
    }

    /// The frames of the traced functions' entries, which every profile names.
    pub(super) fn symbols(&self, binary: &GoBinary) -> Symbols {
        let mut symbols = Symbols::default();
        for t in &self.plan.traced {
            symbols.learn(binary, t.function.entry);
        }
        symbols
    }

    /// Each traced function and where its probe sits, as `/targets` shows them.
    pub(super) fn placed(&self) -> Vec<(String, String)> {
        self.plan
            .traced
            .iter()
            .map(|t| (t.function.name.clone(), t.entry.to_string()))
            .collect()
    }

    /// The call probes first (events carry their index, which the plan's points keep), then
    /// the counting probes.
    pub(super) fn points(&self) -> Vec<ProbePoint> {
        let counting = self.counting.iter().flat_map(|c| c.points.iter());
        self.plan.points.iter().chain(counting).cloned().collect()
    }
}

/// Probes attached to an `exe` target's file while none of its processes runs, so that the
/// next one runs its first instruction with them in place (non-PIE builds, whose addresses
/// are known before the process exists).
pub(super) struct Ahead {
    pub binary: Arc<GoBinary>,
    pub probes: Probes,
    /// Dropped before the lease: the probes go before a writer may change the file.
    pub attached: Attached,
    pub lease: Lease,
}

impl Ahead {
    /// Attaches ahead of the next process of `config`'s file, if the target names one.
    async fn arm(config: &TargetConfig, models: &mut Models) -> anyhow::Result<Option<Ahead>> {
        let Selector::Exe(exe) = &config.selector else {
            return Ok(None);
        };
        let lease = Lease::take(exe)
            .with_context(|| format!("taking a read lease on {}", exe.display()))?;
        // Read after the lease is held: the file cannot change unseen from here on.
        let binary = models.get(exe, config.symbols.as_deref())?;
        if binary.is_pie {
            return Ok(None);
        }
        let (probes, attached) =
            attach_to_file(config, exe, binary.clone(), Scope::NextProcess).await?;
        Ok(Some(Ahead {
            binary,
            probes,
            attached,
            lease,
        }))
    }
}

/// Plans `config`'s probes in `binary`, a non-PIE build (no load bias), and attaches them to
/// its file `exe` for `scope`. On a blocking thread: the verifier takes seconds over a big
/// program, which the thread that drains every session and answers HTTP must not wait for.
pub(super) async fn attach_to_file(
    config: &TargetConfig,
    exe: &Path,
    binary: Arc<GoBinary>,
    scope: Scope,
) -> anyhow::Result<(Probes, Attached)> {
    let (exe, config) = (exe.to_path_buf(), config.clone());
    tokio::task::spawn_blocking(move || {
        let probes = Probes::plan(&binary, &config)?;
        let attached = attach(
            scope,
            &exe,
            binary.go_offsets(0),
            &probes.points(),
            programs(&config),
            &[],
            config.cpu_hz != 0,
        )?;
        Ok((probes, attached))
    })
    .await?
}

/// Which programs a target's probes run: the kernel counts and times calls, per caller too,
/// and sends an event per call only for a recording, which keeps every call.
pub(super) fn programs(config: &TargetConfig) -> Programs {
    if config.record.is_some() {
        Programs::Tracing
    } else {
        Programs::CountingByCaller
    }
}
