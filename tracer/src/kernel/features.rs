//! The kernel features escapade uses: the release that brought each, what escapade does
//! without it ([`TABLE`]), and a probe of each that tries it on the running kernel, as
//! `bpftool feature probe` and libbpf do, so that a distribution's backports and its
//! configuration count, not the version number.

use std::os::fd::AsFd as _;
use std::sync::OnceLock;

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::BpfHelper;
use aya_obj::generated::bpf_attach_type::BPF_TRACE_UPROBE_MULTI;
use aya_obj::generated::bpf_prog_type::{BPF_PROG_TYPE_KPROBE, BPF_PROG_TYPE_RAW_TRACEPOINT};
use serde::Serialize;

use super::bpf::{self, LoadError};

/// Set, escapade attaches one perf event per uprobe even where the kernel has `uprobe_multi`
/// links: what it does on kernels before 6.6, here to test that path.
pub const PERF_EVENT_UPROBES: &str = "ESCAPADE_PERF_EVENT_UPROBES";

/// Set, the agent does without the exec tracepoint, as where the kernel refuses it; here to
/// test that path.
pub const NO_EXEC_TRACEPOINT: &str = "ESCAPADE_NO_EXEC_TRACEPOINT";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    RingBuffer,
    Cookies,
    Uprobes,
    UprobeMulti,
    ExecTracepoint,
    CpuClock,
    Btf,
    PrivateStacks,
}

/// What escapade does without a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Without {
    /// Nothing: it cannot run.
    CannotRun,
    /// The same work another way, said here.
    FallsBack(&'static str),
    /// Without what is said here.
    Limits(&'static str),
    /// As with it: said why.
    NotNeeded(&'static str),
}

impl Without {
    /// What escapade does, as a person reads it.
    pub fn says(self) -> &'static str {
        match self {
            Without::CannotRun => "escapade cannot run",
            Without::FallsBack(what) | Without::Limits(what) | Without::NotNeeded(what) => what,
        }
    }
}

/// One row of the table.
#[derive(Debug)]
pub struct Row {
    pub feature: Feature,
    pub what: &'static str,
    /// The Linux release that brought it.
    pub since: &'static str,
    pub without: Without,
}

pub const TABLE: [Row; 8] = [
    Row {
        feature: Feature::RingBuffer,
        what: "BPF ring buffer",
        since: "5.8",
        without: Without::CannotRun,
    },
    Row {
        feature: Feature::Cookies,
        what: "BPF cookies (bpf_get_attach_cookie)",
        since: "5.15",
        without: Without::CannotRun,
    },
    Row {
        feature: Feature::Uprobes,
        what: "uprobes (perf's uprobe PMU, or tracefs's uprobe_events)",
        since: "4.17",
        without: Without::CannotRun,
    },
    Row {
        feature: Feature::UprobeMulti,
        what: "uprobe_multi links, filtering by process",
        since: "6.6",
        without: Without::FallsBack(
            "one perf event per uprobe: detaching takes about 0.1 s a probe, and \
             --returns sampled is unavailable",
        ),
    },
    Row {
        feature: Feature::ExecTracepoint,
        what: "raw sched_process_exec tracepoint",
        since: "4.17",
        without: Without::FallsBack(
            "the agent finds new processes by scanning /proc every 250 ms instead of at \
             their exec",
        ),
    },
    Row {
        feature: Feature::CpuClock,
        what: "perf cpu-clock sampling events",
        since: "4.9",
        without: Without::Limits(
            "CPU sampling: `hot`, `record --cpu` and the agent's cpu_hz do not work",
        ),
    },
    Row {
        feature: Feature::Btf,
        what: "kernel BTF (/sys/kernel/btf/vmlinux)",
        since: "5.4",
        without: Without::NotNeeded(
            "escapade's programs carry no CO-RE relocations: aya loads them without it",
        ),
    },
    Row {
        feature: Feature::PrivateStacks,
        what: "private BPF stacks",
        since: "6.14",
        without: Without::NotNeeded(
            "every call chain of escapade's programs fits the 512-byte BPF stack of kernels \
             without them",
        ),
    },
];

impl Feature {
    pub fn row(self) -> &'static Row {
        TABLE
            .iter()
            .find(|row| row.feature == self)
            .expect("every feature has a row")
    }
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    Present,
    /// The kernel refused it: how.
    Missing(String),
    /// The probe could not tell (no privileges, say): why.
    Unknown(String),
    /// Not probed: escapade does not need it.
    NotProbed,
}

/// A feature as found on this kernel, and whether escapade is told not to use it.
#[derive(Debug)]
pub struct Found {
    pub row: &'static Row,
    pub presence: Presence,
    /// The environment variable that turns it off, when set.
    pub switched_off: Option<&'static str>,
}

impl Found {
    /// Whether escapade uses it.
    pub fn used(&self) -> bool {
        self.presence == Presence::Present && self.switched_off.is_none()
    }
}

/// Every feature of the table, probed.
pub fn probe_all() -> Vec<Found> {
    TABLE
        .iter()
        .map(|row| Found {
            row,
            presence: probe(row.feature),
            switched_off: switched_off(row.feature),
        })
        .collect()
}

/// Tries `feature` on this kernel.
pub fn probe(feature: Feature) -> Presence {
    match feature {
        Feature::RingBuffer => match aya::sys::is_map_supported(MapType::RingBuf) {
            Ok(true) => Presence::Present,
            Ok(false) => Presence::Missing("the kernel refuses a ring buffer map".into()),
            Err(e) => unknown("creating a ring buffer map", &e.io_error),
        },
        Feature::Cookies => {
            match aya::sys::is_helper_supported(
                ProgramType::KProbe,
                BpfHelper::BPF_FUNC_get_attach_cookie,
            ) {
                Ok(true) => Presence::Present,
                Ok(false) => Presence::Missing(
                    "the verifier does not know bpf_get_attach_cookie in a uprobe program".into(),
                ),
                Err(aya::programs::ProgramError::SyscallError(e)) => {
                    unknown("loading a uprobe program", &e.io_error)
                }
                Err(e) => Presence::Unknown(format!("loading a uprobe program: {e}")),
            }
        }
        Feature::Uprobes => uprobes(),
        Feature::UprobeMulti => uprobe_multi(),
        Feature::ExecTracepoint => exec_tracepoint(),
        Feature::CpuClock => cpu_clock(),
        Feature::Btf => match aya::Btf::from_sys_fs() {
            Ok(_) => Presence::Present,
            Err(e) => Presence::Missing(format!("reading /sys/kernel/btf/vmlinux: {e}")),
        },
        Feature::PrivateStacks => Presence::NotProbed,
    }
}

/// The environment variable, when set, that makes escapade do without `feature`.
pub fn switched_off(feature: Feature) -> Option<&'static str> {
    let switch = match feature {
        Feature::UprobeMulti => PERF_EVENT_UPROBES,
        Feature::ExecTracepoint => NO_EXEC_TRACEPOINT,
        _ => return None,
    };
    std::env::var_os(switch).is_some().then_some(switch)
}

/// How escapade holds its uprobes on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UprobeLinks {
    /// All the probes of one program in one `uprobe_multi` link.
    Multi,
    /// One perf event per probe.
    PerfEvents,
}

/// [`UprobeLinks::Multi`] where the kernel has working `uprobe_multi` links and
/// [`PERF_EVENT_UPROBES`] is unset; probed once per process.
pub fn uprobe_links() -> UprobeLinks {
    static FOUND: OnceLock<Presence> = OnceLock::new();
    if let Some(switch) = switched_off(Feature::UprobeMulti) {
        tracing::debug!("one perf event per uprobe: {switch} is set");
        return UprobeLinks::PerfEvents;
    }
    match FOUND.get_or_init(|| probe(Feature::UprobeMulti)) {
        Presence::Present => UprobeLinks::Multi,
        other => {
            tracing::debug!("one perf event per uprobe, slower to detach: {other:?}");
            UprobeLinks::PerfEvents
        }
    }
}

/// A feature escapade cannot run without is missing.
#[derive(Debug, thiserror::Error)]
#[error("this kernel ({release}) has no {what} (Linux {since}+): escapade cannot run here")]
pub struct Unsupported {
    pub release: String,
    pub what: &'static str,
    pub since: &'static str,
}

/// Checks that the kernel has what escapade cannot run without, before anything loads, so
/// that an old kernel gets one line rather than a verifier's log. A probe that cannot tell
/// (no privileges) lets the load itself say what is wrong.
pub fn require() -> Result<(), Unsupported> {
    for row in TABLE.iter().filter(|row| row.without == Without::CannotRun) {
        if let Presence::Missing(how) = probe(row.feature) {
            tracing::debug!("{}: {how}", row.what);
            return Err(Unsupported {
                release: super::release(),
                what: row.what,
                since: row.since,
            });
        }
    }
    Ok(())
}

/// A probe's system call failed: for want of privileges the probe cannot tell, otherwise the
/// kernel refused.
fn unknown(what: &str, e: &std::io::Error) -> Presence {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => Presence::Unknown(format!(
            "{what}: {e} (escapade needs root, or CAP_BPF and CAP_PERFMON)"
        )),
        _ => Presence::Missing(format!("{what}: {e}")),
    }
}

fn load_failed(what: &str, e: LoadError) -> Presence {
    match e {
        LoadError::Io { error, .. } => unknown(what, &error),
        LoadError::Refused(refused) => Presence::Missing(format!("{what}: {}", refused.reason)),
    }
}

/// aya attaches uprobes through perf's uprobe PMU, or through tracefs where the kernel has
/// no such PMU; both need a kernel built with `CONFIG_UPROBES`.
fn uprobes() -> Presence {
    let pmu = std::path::Path::new("/sys/bus/event_source/devices/uprobe/type");
    let tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .map(|dir| std::path::Path::new(dir).join("uprobe_events"));
    if pmu.exists() || tracefs.iter().any(|events| events.exists()) {
        Presence::Present
    } else {
        Presence::Missing(format!(
            "neither {} nor tracefs's uprobe_events exists (a kernel built without \
             CONFIG_UPROBES)",
            pmu.display()
        ))
    }
}

/// As libbpf probes them: a link in `/`, a directory, fails for its path (EBADF) where the
/// kernel has the links, and earlier where it does not.
fn uprobe_multi() -> Presence {
    let prog = match bpf::trivial_program(
        "escapade_probe",
        BPF_PROG_TYPE_KPROBE,
        Some(BPF_TRACE_UPROBE_MULTI),
    ) {
        Ok(prog) => prog,
        Err(e) => return load_failed("loading a program for uprobe_multi links", e),
    };
    let link = |pid: u32| bpf::uprobe_multi_link(prog.as_fd(), c"/", pid, &[0], &[0]);
    match link(0) {
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => {}
        Err(e) => return unknown("creating a uprobe_multi link", &e),
        Ok(_) => return Presence::Unknown("the kernel linked a uprobe in /".into()),
    }
    // The first kernels with the links filtered by thread, not by process: a link for one
    // process would see only its main thread, and a Go program runs on many. Fixed kernels
    // refuse an invalid PID before they look at the path.
    match link(u32::MAX) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Presence::Present,
        _ => Presence::Missing(
            "this kernel's uprobe_multi links filter by thread, not by process (fixed in \
             Linux 6.10)"
                .into(),
        ),
    }
}

/// A program that does nothing, on the tracepoint for an instant: what the agent's exec
/// watcher needs, whatever its own program does.
fn exec_tracepoint() -> Presence {
    let prog = match bpf::trivial_program("escapade_probe", BPF_PROG_TYPE_RAW_TRACEPOINT, None) {
        Ok(prog) => prog,
        Err(e) => return load_failed("loading a raw tracepoint program", e),
    };
    match bpf::raw_tracepoint_open(prog.as_fd(), c"sched_process_exec") {
        Ok(_) => Presence::Present,
        Err(e) => unknown("attaching to sched_process_exec", &e),
    }
}

/// Opens the event `hot` samples with, on one CPU for every process, and closes it.
fn cpu_clock() -> Presence {
    use aya_obj::generated::{
        PERF_FLAG_FD_CLOEXEC, perf_event_attr, perf_sw_ids::PERF_COUNT_SW_CPU_CLOCK,
        perf_type_id::PERF_TYPE_SOFTWARE,
    };
    // SAFETY: an all-zero perf_event_attr is the kernel's "unset" for every field.
    let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = PERF_TYPE_SOFTWARE as u32;
    attr.size = std::mem::size_of::<perf_event_attr>() as u32;
    attr.config = PERF_COUNT_SW_CPU_CLOCK as u64;
    attr.__bindgen_anon_1.sample_freq = 1;
    attr.set_freq(1);
    attr.set_disabled(1);
    // SAFETY: `attr` is a valid perf_event_attr of the size it says; pid -1 and cpu 0 ask
    // for every process on CPU 0, as `hot` asks on each CPU.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const perf_event_attr,
            -1,
            0,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => Presence::Missing(format!(
                "opening a cpu-clock event for every process: {e} (kernel.perf_event_paranoid \
                 above 0 needs CAP_PERFMON)"
            )),
            _ => Presence::Missing(format!("opening a cpu-clock event: {e}")),
        };
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    unsafe { libc::close(fd as libc::c_int) };
    Presence::Present
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_below_the_floor_gets_one_line_that_points_at_doctor() {
        let row = Feature::RingBuffer.row();
        let err = anyhow::Error::new(Unsupported {
            release: "5.4.0".into(),
            what: row.what,
            since: row.since,
        });
        assert_eq!(
            format!("{err:#}"),
            "this kernel (5.4.0) has no BPF ring buffer (Linux 5.8+): escapade cannot run here"
        );
        assert_eq!(
            crate::hints::hint(&err),
            Some("`escapade doctor` tells what works")
        );
    }

    #[test]
    fn every_feature_has_one_row() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(row.feature.row().since, row.since);
            assert!(TABLE[i + 1..].iter().all(|r| r.feature != row.feature));
        }
    }
}
