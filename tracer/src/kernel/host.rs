//! What besides the kernel's features decides whether escapade can run here: its
//! capabilities, the memlock limit, the kernel's lockdown mode, tracefs and
//! `perf_event_paranoid`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

/// The capabilities escapade uses, by number (`linux/capability.h`).
const CAPABILITIES: [(&str, u32); 4] = [
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
];

#[derive(Debug, Serialize)]
pub struct Host {
    /// Each capability escapade uses, and whether it has it (effective set).
    pub capabilities: BTreeMap<&'static str, bool>,
    /// RLIMIT_MEMLOCK in bytes; None for unlimited.
    pub memlock_bytes: Option<u64>,
    /// The kernel's lockdown mode (`none`, `integrity`, `confidentiality`); None without the
    /// lockdown LSM.
    pub lockdown: Option<String>,
    /// Where tracefs is mounted, if it is.
    pub tracefs: Option<PathBuf>,
    /// `kernel.perf_event_paranoid`, if readable.
    pub perf_event_paranoid: Option<i64>,
}

impl Host {
    pub fn examine() -> Host {
        Host {
            capabilities: capabilities(),
            memlock_bytes: memlock(),
            lockdown: lockdown(),
            tracefs: ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
                .into_iter()
                .map(PathBuf::from)
                .find(|dir| dir.join("trace").exists()),
            perf_event_paranoid: std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        }
    }

    /// What the attaching commands need and escapade lacks: loading programs (CAP_BPF, or
    /// CAP_SYS_ADMIN before 5.8), opening uprobes (CAP_PERFMON, or CAP_SYS_ADMIN), reading
    /// the target's memory (CAP_SYS_PTRACE).
    pub fn missing_privileges(&self) -> Vec<&'static str> {
        let has = |cap: &str| self.capabilities.get(cap).copied().unwrap_or(false);
        let admin = has("CAP_SYS_ADMIN");
        let mut missing = Vec::new();
        if !has("CAP_BPF") && !admin {
            missing.push("CAP_BPF (loading programs)");
        }
        if !has("CAP_PERFMON") && !admin {
            missing.push("CAP_PERFMON (attaching uprobes)");
        }
        if !has("CAP_SYS_PTRACE") {
            missing.push("CAP_SYS_PTRACE (reading the target's memory)");
        }
        missing
    }
}

/// The effective set, from /proc/self/status.
fn capabilities() -> BTreeMap<&'static str, bool> {
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .unwrap_or(0);
    CAPABILITIES
        .into_iter()
        .map(|(name, bit)| (name, effective & (1 << bit) != 0))
        .collect()
}

fn memlock() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer.
    let ret = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    (ret == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// The bracketed word of `[none] integrity confidentiality`.
fn lockdown() -> Option<String> {
    let modes = std::fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    let start = modes.find('[')? + 1;
    let end = start + modes[start..].find(']')?;
    Some(modes[start..end].to_string())
}
