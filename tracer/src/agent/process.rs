//! One process of a target: opened and planned, then attached and counted by a session until
//! it exits or the agent stops.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::config::{AllocMode, TargetConfig};
use super::counting::{Counted, Counting};
use super::executable::{Ahead, Probes, programs};
use super::metrics::SiteLabels;
use super::models::Models;
use super::recording::{Recording, Writing};
use super::state::{LiveProfile, ProcessStatus, Shared};
use crate::cpu::Sampler;
use crate::model::decode::Decoder;
use crate::probes::attach::{Attached, Scope, attach};
use crate::record::live::CpuSampling;
use crate::record::{AllocSettings, Header};
use crate::session::{self, Ended};
use crate::tracee::Target;
use crate::tracee::memprofile::MemProfileRate;

/// A process of the target, opened and planned, not attached yet (its `run` attaches and runs a
/// [`session::Session`] on it).
pub(super) struct PlannedProcess {
    target: Target,
    config: TargetConfig,
    probes: Probes,
    /// The heap profiler's sampling rate (sampled mode), when it could be checked.
    rate: Option<MemProfileRate>,
    /// What this process cannot give that its target's config asks for.
    notes: Vec<String>,
    /// The probes attached ahead of this process, when it was the one to run next.
    ahead: Option<Attached>,
}

impl PlannedProcess {
    /// Opens process `pid`, with the probes attached ahead of it if it is the process they
    /// wait for (or claimed, being the only one that runs the file).
    pub(super) fn open(
        pid: u32,
        config: &TargetConfig,
        models: &mut Models,
        ahead: &mut Option<Ahead>,
    ) -> anyhow::Result<PlannedProcess> {
        let target = Target::open_with(pid, |exe| models.get(exe, config.symbols.as_deref()))?;
        let (probes, ahead) = match ahead
            .take_if(|a| Arc::ptr_eq(&a.binary, &target.binary) && a.attached.claim(pid))
        {
            Some(a) => (a.probes, Some(a.attached)),
            None => (Probes::plan(&target.binary, config)?, None),
        };
        let mut notes = probes.notes.clone();
        // GC cycles and goroutines are still counted when the program sampled nothing: a
        // daemon says what it misses rather than refusing the target.
        let rate = match config.allocs {
            AllocMode::Sampled => {
                MemProfileRate::prepare(&target.binary, &target.process, target.bias, None)
                    .map_err(|e| notes.push(format!("allocations not sampled: {e:#}")))
                    .ok()
            }
            AllocMode::Exact | AllocMode::Off => None,
        };
        Ok(PlannedProcess {
            target,
            config: config.clone(),
            probes,
            rate,
            notes,
            ahead,
        })
    }

    pub(super) async fn run(
        mut self,
        shared: Arc<Shared>,
        sites: Arc<Mutex<SiteLabels>>,
        writing: Writing,
        mut stop: watch::Receiver<bool>,
    ) {
        let name = self.config.name.clone();
        let pid = self.target.process.pid;
        let ahead = self.ahead.take();
        if let Err(error) = self
            .attach_and_count(ahead, &shared, sites, writing, &mut stop)
            .await
        {
            let error = format!("PID {pid}: {error:#}");
            tracing::warn!("target {name}: {error}");
            shared.failed(&name, error);
        }
        shared.detached(&name, pid);
    }

    async fn attach_and_count(
        &self,
        ahead: Option<Attached>,
        shared: &Arc<Shared>,
        sites: Arc<Mutex<SiteLabels>>,
        writing: Writing,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let target = &self.target;
        let mut probes = self.probes.placed();
        let mut settings = None;
        if let Some(counting) = &self.probes.counting {
            let placed: Vec<(String, String)> = counting
                .placed
                .iter()
                .map(|(f, p)| (f.clone(), p.to_string()))
                .collect();
            probes.extend(placed.iter().cloned());
            settings = Some(AllocSettings {
                mem_profile_rate: self.rate.as_ref().map(|r| r.in_effect),
                probes: placed,
            });
        }
        let attached_ahead = ahead.is_some();
        let mut attached = match ahead {
            Some(attached) => attached,
            None => {
                // The verifier takes seconds over a big program: not on the thread that
                // drains every session and answers HTTP.
                let (pid, exe) = (target.process.pid, target.process.exe.clone());
                let offsets = target.binary.go_offsets(target.bias);
                let (points, programs) = (self.probes.points(), programs(&self.config));
                let samples_cpu = self.config.cpu_hz != 0;
                tokio::task::spawn_blocking(move || {
                    attach(
                        Scope::Process(pid),
                        &exe,
                        offsets,
                        &points,
                        programs,
                        &[],
                        samples_cpu,
                    )
                })
                .await??
            }
        };
        let mut notes = self.notes.clone();
        let cpu = match self.config.cpu_hz {
            0 => None,
            hz => Sampler::start(&mut attached, hz)
                .map_err(|e| notes.push(format!("CPU not sampled: {e:#}")))
                .ok()
                .map(|sampler| CpuSampling {
                    sampler,
                    binary: &target.binary,
                    bias: target.bias,
                }),
        };
        let functions = self.probes.functions();
        let symbols = self.probes.symbols(&target.binary);
        let header = Header {
            allocs: settings,
            cpu_hz: cpu.as_ref().map(|_| self.config.cpu_hz),
            capture_strings: self.config.capture_strings,
            ..Header::for_target(target, functions.clone())
        };
        let decoder = || Decoder::of(target);
        let recording = match &self.config.record {
            // The CPU samples go to the live profile's sampler, not into the file: its header
            // must not promise them.
            Some(record) => Some(Recording::start(
                &self.config.name,
                record,
                Header {
                    cpu_hz: None,
                    ..header.clone()
                },
                functions,
                &self.probes.plan,
                self.probes.counting.is_some().then(decoder),
                decoder,
                &symbols,
                writing,
            )?),
            None => None,
        };
        let profile = LiveProfile::new(header, symbols);
        shared.attached(
            &self.config.name,
            ProcessStatus::attached_now(
                target.process.pid,
                &target.process.exe_target,
                &target.binary,
                probes,
                notes,
                attached_ahead,
            ),
            profile.clone(),
        );
        let mut sink = Counting::new(
            &self.config,
            &self.probes,
            Counted::Process(target),
            self.rate.as_ref().map(|r| r.in_effect),
            shared,
            sites,
            profile,
            recording,
            cpu,
        );
        let stopped = async {
            let _ = stop.wait_for(|stop| *stop).await;
            Ended::Interrupted
        };
        let mut pump = session::Session::new(target, attached)?;
        let run = pump.run(stopped, &mut sink, None).await;
        if let Some(rate) = &self.rate {
            rate.restore(&target.process, target.bias)?;
        }
        let (ended, malformed) = run?;
        sink.finish(pump.counts(), ended, malformed)
    }
}
