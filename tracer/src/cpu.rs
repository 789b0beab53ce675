//! CPU sampling: the `cpu_sample` program on every online CPU's software `cpu-clock` perf event
//! (no hardware PMU needed), and the [`CpuProfile`] it yields: the target's samples per user
//! stack, counted in the kernel.

use std::collections::HashMap;

use anyhow::Context as _;
use aya::Ebpf;
use aya::maps::{MapData, PerCpuHashMap, PerCpuValues};
use aya::programs::PerfEvent;
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use probe_common::NO_STACK;
use serde::{Deserialize, Serialize};

use crate::kernel::bpf::aya_load_error;
use crate::probes::attach::Attached;
use crate::probes::snapshot::{KernelCounts, take};
use crate::tracee::gobin::GoBinary;

/// The kernel's ceiling on sampling rates, which it refuses `perf_event_open` above.
const MAX_SAMPLE_RATE: &str = "/proc/sys/kernel/perf_event_max_sample_rate";

/// The target's samples so far, per user stack.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuProfile {
    /// Samples per second on each CPU (`--hz`): each sample stands for 1/hz seconds of CPU.
    pub hz: u64,
    /// Most samples first.
    pub stacks: Vec<CpuStack>,
    /// Samples whose user stack the kernel could not take or keep.
    pub without_stack: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuStack {
    /// Link-time code addresses, innermost first: where the CPU was, then each call
    /// instruction up the stack (as allocation stacks keep them).
    pub pcs: Vec<u64>,
    pub samples: u64,
}

impl CpuProfile {
    pub fn samples(&self) -> u64 {
        self.stacks.iter().map(|s| s.samples).sum::<u64>() + self.without_stack
    }

    /// The samples taken after `earlier`, a profile of the same session.
    pub fn since(&self, earlier: &CpuProfile) -> CpuProfile {
        let before: HashMap<&[u64], u64> = earlier
            .stacks
            .iter()
            .map(|s| (&s.pcs[..], s.samples))
            .collect();
        CpuProfile {
            hz: self.hz,
            stacks: self
                .stacks
                .iter()
                .filter_map(|s| {
                    let was = before.get(&s.pcs[..]).copied().unwrap_or_default();
                    (s.samples > was).then(|| CpuStack {
                        pcs: s.pcs.clone(),
                        samples: s.samples - was,
                    })
                })
                .collect(),
            without_stack: self.without_stack.saturating_sub(earlier.without_stack),
        }
    }

    /// Nanoseconds of CPU one sample stands for.
    pub fn period_ns(&self) -> u64 {
        1_000_000_000 / self.hz.max(1)
    }
}

/// Refuses a rate the kernel would refuse, naming the setting: `perf_event_open` itself only
/// says EINVAL.
pub fn check_rate(hz: u64) -> anyhow::Result<()> {
    if let Some(max) = std::fs::read_to_string(MAX_SAMPLE_RATE)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        anyhow::ensure!(
            hz <= max,
            "--hz {hz} is above the kernel's limit kernel.perf_event_max_sample_rate = {max} \
             ({MAX_SAMPLE_RATE}): lower --hz, or raise the setting"
        );
    }
    Ok(())
}

/// The sampling program attached to every online CPU; it detaches with the [`Attached`] it
/// was started from.
pub struct Sampler {
    hz: u64,
    samples: PerCpuHashMap<MapData, i64, u64>,
}

impl Sampler {
    /// Starts sampling the process `attached` was loaded for at `hz` on each CPU, into stacks
    /// kept with the counting probes' (see [`KernelCounts::alloc_stack`]).
    pub fn start(attached: &mut Attached, hz: u64) -> anyhow::Result<Sampler> {
        check_rate(hz)?;
        let ebpf = attached.ebpf_mut();
        let mut samples: PerCpuHashMap<_, i64, u64> = take(ebpf, "CPU_SAMPLES")?;
        // Where the program counts the samples it has no room for, made before it runs.
        let possible = aya::util::nr_cpus()
            .map_err(|(file, e)| anyhow::anyhow!("reading the possible CPUs from {file}: {e}"))?;
        samples.insert(NO_STACK, PerCpuValues::try_from(vec![0u64; possible])?, 0)?;
        let program = load_program(ebpf)?;
        let cpus = aya::util::online_cpus()
            .map_err(|(file, e)| anyhow::anyhow!("reading the online CPUs from {file}: {e}"))?;
        for cpu in cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(hz),
                    false,
                )
                .map_err(|e| {
                    anyhow::anyhow!(
                        "perf events are unavailable: opening the cpu-clock event on CPU {cpu} \
                         failed ({}); CPU sampling needs perf_event_open, which \
                         kernel.perf_event_paranoid (/proc/sys/kernel/perf_event_paranoid) and \
                         CAP_PERFMON govern",
                        root_cause(&e)
                    )
                })?;
        }
        Ok(Sampler { hz, samples })
    }

    /// The samples so far, their stacks (kept in `counts`) as link-time addresses of `binary`
    /// (loaded at `bias`).
    pub fn profile(
        &self,
        counts: &KernelCounts,
        binary: &GoBinary,
        bias: u64,
    ) -> anyhow::Result<CpuProfile> {
        let mut profile = CpuProfile {
            hz: self.hz,
            ..Default::default()
        };
        let mut stacks: HashMap<Vec<u64>, u64> = HashMap::new();
        for entry in self.samples.iter() {
            let (key, per_cpu) = entry?;
            let samples: u64 = per_cpu.iter().sum();
            // The first address is where the CPU was; the rest return addresses, whose call
            // is the instruction before. A frame-pointer walk can end on a zero.
            let pcs: Vec<u64> = match key {
                NO_STACK => Vec::new(),
                // A stack the kernel had no room to keep is as good as none.
                key => counts.alloc_stack(key).unwrap_or_default(),
            }
            .into_iter()
            .enumerate()
            .filter(|&(_, pc)| pc != 0)
            .map(|(i, pc)| (pc - u64::from(i > 0)).wrapping_sub(bias))
            .collect();
            if pcs.is_empty() {
                profile.without_stack += samples;
                continue;
            }
            // A tick in the vDSO (the clock Go reads on every time.Now) counts in the Go
            // function that called it, as Go's own CPU profiles count it.
            let outside_go = pcs
                .iter()
                .take_while(|&&pc| binary.symbolize(pc).is_none())
                .count();
            let pcs = match pcs.get(outside_go..) {
                Some(go) if !go.is_empty() => go.to_vec(),
                _ => pcs,
            };
            *stacks.entry(pcs).or_default() += samples;
        }
        profile.stacks = stacks
            .into_iter()
            .map(|(pcs, samples)| CpuStack { pcs, samples })
            .collect();
        profile
            .stacks
            .sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.pcs.cmp(&b.pcs)));
        Ok(profile)
    }
}

/// Loads the sampling program of `ebpf`, the embedded object as [`crate::probes::attach::load`]
/// made it, into the kernel.
pub fn load_program(ebpf: &mut Ebpf) -> anyhow::Result<&mut PerfEvent> {
    let program: &mut PerfEvent = ebpf
        .program_mut(PROGRAM)
        .context("program cpu_sample missing from the eBPF object")?
        .try_into()?;
    program.load().map_err(|e| aya_load_error(PROGRAM, e))?;
    Ok(program)
}

/// The sampling program's name in the embedded object.
pub const PROGRAM: &str = "cpu_sample";

/// The innermost error's text: aya's wrapping adds only "perf_event_open failed".
fn root_cause(e: &aya::programs::ProgramError) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("{e}: {cause}")
}
