//! Launch mode (`escapade trace ... -- ./prog args`): the program starts stopped at its first
//! instruction, so the probes are in place before it runs any of its code, as `py-spy record --
//! prog` and `bpftrace -c` do; escapade then lets it go, and exits with its status.

use std::cell::Cell;
use std::ffi::OsString;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Child, Command};

use anyhow::Context as _;

pub struct Launched {
    /// None once waited for.
    child: Option<Child>,
    /// Whether the program was let go.
    released: Cell<bool>,
}

impl Launched {
    /// Starts `command` (a program and its arguments) stopped at its first instruction.
    pub fn start(command: &[OsString]) -> anyhow::Result<Launched> {
        let (program, args) = command
            .split_first()
            .context("no program to start: give one after --, e.g. -- ./server --port 8080")?;
        let mut start = Command::new(program);
        start.args(args);
        // SAFETY: between fork and exec the child only makes the ptrace system call, which is
        // async-signal-safe; the exec then stops it with SIGTRAP, before its first
        // instruction.
        unsafe {
            start.pre_exec(|| {
                if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = start
            .spawn()
            .with_context(|| format!("starting {}", program.to_string_lossy()))?;
        let launched = Launched {
            child: Some(child),
            released: Cell::new(false),
        };
        let mut status = 0;
        // SAFETY: waitpid on our own child, with a valid pointer for its status.
        let waited = unsafe { libc::waitpid(launched.pid() as i32, &mut status, 0) };
        anyhow::ensure!(
            waited > 0 && libc::WIFSTOPPED(status),
            "{} did not stop at its start as escapade asked: {}",
            program.to_string_lossy(),
            std::io::Error::last_os_error()
        );
        Ok(launched)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Lets the program run; called once the probes are in place.
    pub fn release(&self) -> anyhow::Result<()> {
        if self.released.replace(true) {
            return Ok(());
        }
        // SAFETY: detaching from our own stopped tracee; signal 0 drops the exec's SIGTRAP.
        let detached = unsafe { libc::ptrace(libc::PTRACE_DETACH, self.pid() as i32, 0, 0) };
        anyhow::ensure!(
            detached == 0,
            "letting PID {} run: {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// Waits for the program to end; returns its exit code as a shell gives it (128 plus the
    /// signal that ended it).
    pub fn wait(mut self) -> anyhow::Result<i32> {
        let mut child = self.child.take().expect("waited for once");
        let status = child.wait().context("waiting for the launched program")?;
        Ok(status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1))
    }
}

impl Drop for Launched {
    /// A program escapade failed to trace is not left stopped, nor let run untraced.
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && !self.released.get()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
