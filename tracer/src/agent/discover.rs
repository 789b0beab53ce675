//! Which running processes a target's selector matches, read from `/proc`.

use std::path::Path;

use super::config::Selector;

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

/// Whether `pid` has exited and only waits for its parent to reap it (a zombie keeps its
/// /proc entry and its command name, but nothing left to trace).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .next()?
                .to_string();
            Some(state == "Z" || state == "X")
        })
        .unwrap_or(true)
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
    const TASK_COMM_LEN: usize = 15;
    let Ok(actual) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
        return false;
    };
    let want = comm.as_bytes();
    actual.trim_end_matches('\n').as_bytes() == &want[..want.len().min(TASK_COMM_LEN)]
}
