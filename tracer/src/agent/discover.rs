//! Which running processes a target's selector matches, read from `/proc`.

use std::path::Path;

use super::config::Selector;
use crate::tracee::process::exited;

/// The PIDs `selector` matches now, escapade's own excluded.
pub fn matching(selector: &Selector) -> Vec<u32> {
    let me = std::process::id();
    if let Selector::Pid(pid) = selector {
        let exists = Path::new(&format!("/proc/{pid}")).exists();
        return if exists && *pid != me && !exited(*pid) {
            vec![*pid]
        } else {
            vec![]
        };
    }
    let want_exe = match selector {
        // The path as the kernel reports a process's executable: without symlinks.
        Selector::Exe(path) => Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone())),
        _ => None,
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && !exited(pid))
        .filter(|&pid| match (selector, &want_exe) {
            (Selector::Exe(_), Some(want)) => runs(pid, want),
            (Selector::Comm(comm), _) => has_comm(pid, comm),
            _ => false,
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Whether `pid` runs the executable at `path`. A process started before its file was replaced
/// still runs the old build, which the kernel shows as `PATH (deleted)`: it matches too, and is
/// planned from its own file, `/proc/PID/exe`.
fn runs(pid: u32, path: &Path) -> bool {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let exe = exe.to_string_lossy();
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe);
    Path::new(exe) == path
}

/// Whether `pid`'s command name is `comm`; the kernel keeps its first 15 bytes.
fn has_comm(pid: u32, comm: &str) -> bool {
    let Ok(actual) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
        return false;
    };
    comm_matches(actual.trim_end_matches('\n'), comm)
}

/// Whether a process named `actual` (as /proc shows it) runs the command `comm`: the kernel's
/// `TASK_COMM_LEN` is 16 bytes with the NUL, so a longer name is cut to 15.
fn comm_matches(actual: &str, comm: &str) -> bool {
    const TASK_COMM_LEN: usize = 16;
    let want = comm.as_bytes();
    actual.as_bytes() == &want[..want.len().min(TASK_COMM_LEN - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_command_names_match_as_the_kernel_cuts_them() {
        assert!(comm_matches("api", "api"));
        assert!(comm_matches("payments-servic", "payments-service-v2"));
        assert!(!comm_matches("payments-servi", "payments-service-v2"));
        assert!(!comm_matches("api", "api2"));
    }
}
