//! The node's processes as the targets' selectors see them: one scan of `/proc` for the whole
//! agent, however many targets it has, kept current between scans from the PIDs the kernel's
//! exec tracepoint names ([`super::execs`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::config::Selector;
use super::execs::ExecWatcher;
use crate::tracee::process::exited;

/// New processes are found within this long of their `exec` when the kernel cannot say.
const SCAN_INTERVAL: Duration = Duration::from_millis(250);
/// When it says, scanning is only the safety net (the exec watcher's buffer can overflow).
const SCAN_INTERVAL_WITH_EXECS: Duration = Duration::from_secs(2);

/// What a selector matches a process on.
#[derive(Clone, Debug)]
struct Seen {
    /// The executable as the kernel reports it (without symlinks); a process started before
    /// its file was replaced still runs the old build, which the kernel shows as
    /// `PATH (deleted)`: kept as `PATH`, since the process matches too (and is planned from
    /// its own file, `/proc/PID/exe`).
    exe: Option<PathBuf>,
    comm: String,
}

impl Seen {
    fn read(pid: u32) -> Option<Seen> {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|exe| {
                let exe = exe.to_string_lossy();
                PathBuf::from(exe.strip_suffix(" (deleted)").unwrap_or(&exe))
            });
        Some(Seen {
            exe,
            comm: comm.trim_end_matches('\n').to_string(),
        })
    }
}

/// The processes running when last looked at, escapade's own left out.
#[derive(Clone, Debug, Default)]
pub struct Processes(Arc<BTreeMap<u32, Seen>>);

impl Processes {
    /// Reads every process in `/proc`: thousands of files on a busy node, so off the agent's
    /// thread.
    fn scan() -> Processes {
        let me = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Processes::default();
        };
        let seen = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me && !exited(pid))
            .filter_map(|pid| Some((pid, Seen::read(pid)?)))
            .collect();
        Processes(Arc::new(seen))
    }

    /// Adds processes that just ran a new program, replacing what was seen of their PIDs.
    fn exec(&mut self, pids: &[u32]) {
        let seen = Arc::make_mut(&mut self.0);
        for &pid in pids {
            match Seen::read(pid) {
                Some(process) if pid != std::process::id() => _ = seen.insert(pid, process),
                _ => _ = seen.remove(&pid),
            }
        }
    }

    /// The PIDs `selector` matches, those that have exited since excluded.
    pub fn matching(&self, selector: &Selector) -> Vec<u32> {
        if let Selector::Pid(pid) = selector {
            let exists = Path::new(&format!("/proc/{pid}")).exists();
            return if exists && *pid != std::process::id() && !exited(*pid) {
                vec![*pid]
            } else {
                vec![]
            };
        }
        // The path as the kernel reports a process's executable: without symlinks.
        let want_exe = match selector {
            Selector::Exe(path) => {
                Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()))
            }
            _ => None,
        };
        self.0
            .iter()
            .filter(|(_, seen)| match (selector, &want_exe) {
                (Selector::Exe(_), Some(want)) => seen.exe.as_ref() == Some(want),
                (Selector::Comm(comm), _) => comm_matches(&seen.comm, comm),
                _ => false,
            })
            .map(|(&pid, _)| pid)
            .filter(|&pid| !exited(pid))
            .collect()
    }
}

/// Keeps `Processes` current for every target: a scan now, then one every
/// [`SCAN_INTERVAL`] (or [`SCAN_INTERVAL_WITH_EXECS`] with `execs`), and between them the
/// processes `execs` names as they exec.
pub fn watch(execs: Option<ExecWatcher>) -> watch::Receiver<Processes> {
    let (tx, rx) = watch::channel(Processes::scan());
    tokio::task::spawn_local(async move {
        let interval = match execs {
            Some(_) => SCAN_INTERVAL_WITH_EXECS,
            None => SCAN_INTERVAL,
        };
        let mut execs = execs;
        loop {
            let exec = async {
                match execs.as_mut() {
                    Some(watcher) => watcher.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(interval) => {
                    let Ok(scanned) = tokio::task::spawn_blocking(Processes::scan).await else {
                        continue;
                    };
                    if tx.send(scanned).is_err() {
                        return;
                    }
                }
                pids = exec => match pids {
                    Ok(pids) => tx.send_modify(|processes| processes.exec(&pids)),
                    Err(error) => {
                        tracing::warn!("exec watcher stopped ({error}): scanning /proc only");
                        execs = None;
                    }
                },
            }
        }
    });
    rx
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

    /// A process that execs after a scan is matched from what the exec watcher says, without
    /// another scan; and one that exits drops out at once.
    #[test]
    fn an_exec_is_seen_without_a_scan_and_an_exit_at_once() {
        let mut processes = Processes::scan();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let sleep = Selector::Comm("sleep".to_string());
        assert!(!processes.matching(&sleep).contains(&child.id()));
        processes.exec(&[child.id()]);
        assert!(processes.matching(&sleep).contains(&child.id()));
        let exe = std::fs::read_link(format!("/proc/{}/exe", child.id())).unwrap();
        assert!(
            processes
                .matching(&Selector::Exe(exe))
                .contains(&child.id())
        );
        child.kill().unwrap();
        // Not reaped: a zombie, which has nothing left to trace.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while processes.matching(&sleep).contains(&child.id()) {
            assert!(
                std::time::Instant::now() < deadline,
                "still matched after exit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().unwrap();
    }
}
