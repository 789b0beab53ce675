//! The traced process as `/proc/PID` shows it: its executable, where the kernel loaded it, its
//! memory map, and reads of its memory.

use std::fs::File;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("no process with PID {0} (it has exited, or the PID is wrong)")]
    Gone(u32),
    #[error("not allowed to inspect PID {pid}")]
    Denied { pid: u32, source: std::io::Error },
    #[error("reading /proc/{pid}/{what}")]
    Io {
        pid: u32,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot find where PID {0} mapped its executable in /proc/{0}/maps")]
    NoExeMapping(u32),
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub writable: bool,
    pub offset: u64,
    pub path: String,
}

impl Mapping {
    /// The mapping of `maps` holding `addr`.
    pub fn find(maps: &[Mapping], addr: u64) -> Option<&Mapping> {
        maps.iter().find(|m| m.start <= addr && addr < m.end)
    }
}

pub struct Process {
    pub pid: u32,
    /// `/proc/PID/exe`: opening it works even if the file was replaced or deleted on disk.
    pub exe: PathBuf,
    /// Where the executable really is, for messages.
    pub exe_target: PathBuf,
    pub maps: Vec<Mapping>,
    mem: File,
    /// The process itself, not its PID, which a later process can be given: readable once it
    /// has exited. None where the kernel has no pidfds (before 5.3).
    pidfd: Option<OwnedFd>,
}

impl Process {
    pub fn open(pid: u32) -> Result<Process, ProcessError> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        if !proc.exists() {
            return Err(ProcessError::Gone(pid));
        }
        let io = |what, source: std::io::Error| match source.kind() {
            std::io::ErrorKind::PermissionDenied => ProcessError::Denied { pid, source },
            std::io::ErrorKind::NotFound => ProcessError::Gone(pid),
            _ => ProcessError::Io { pid, what, source },
        };
        // First, so that everything read below is of this process or it is seen gone.
        let pidfd = pidfd_open(pid);
        let exe = proc.join("exe");
        let exe_target = std::fs::read_link(&exe).map_err(|e| io("exe", e))?;
        let mem = File::open(proc.join("mem")).map_err(|e| io("mem", e))?;
        let maps = read_maps(pid).map_err(|e| io("maps", e))?;
        Ok(Process {
            pid,
            exe,
            exe_target,
            maps,
            mem,
            pidfd,
        })
    }

    pub fn alive(&self) -> bool {
        let Some(pidfd) = &self.pidfd else {
            return !exited(self.pid);
        };
        let mut poll = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, and a timeout of 0: poll only looks.
        match unsafe { libc::poll(&mut poll, 1, 0) } {
            0 => true,
            ready if ready > 0 => false,
            _ => !exited(self.pid),
        }
    }

    /// How far the kernel moved the executable from its link-time addresses (0 unless PIE).
    /// `first_load_vaddr` is the lowest PT_LOAD address of the binary as linked.
    pub fn load_bias(&self, is_pie: bool, first_load_vaddr: u64) -> Result<u64, ProcessError> {
        if !is_pie {
            return Ok(0);
        }
        let target = self.exe_target.to_string_lossy();
        let base = self
            .maps
            .iter()
            .filter(|m| m.path == target || m.path.trim_end_matches(" (deleted)") == target)
            .find(|m| m.offset == 0)
            .ok_or(ProcessError::NoExeMapping(self.pid))?;
        Ok(base.start - (first_load_vaddr & !0xfff))
    }

    /// The mappings now (`maps` is as they were at open).
    pub fn current_maps(&self) -> Result<Vec<Mapping>, ProcessError> {
        read_maps(self.pid).map_err(|source| ProcessError::Io {
            pid: self.pid,
            what: "maps",
            source,
        })
    }

    pub fn mapping_at(&self, addr: u64) -> Option<&Mapping> {
        Mapping::find(&self.maps, addr)
    }

    /// Reads target memory; None if the range is not mapped (or the process is gone).
    pub fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.mem.read_exact_at(&mut buf, addr).ok()?;
        Some(buf)
    }

    /// Writes a word into the target's memory (used only where the user asked for it).
    pub fn write_u64(&self, addr: u64, value: u64) -> std::io::Result<()> {
        let mem = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{}/mem", self.pid))?;
        mem.write_all_at(&value.to_le_bytes(), addr)
    }

    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        self.read(addr, 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

fn read_maps(pid: u32) -> std::io::Result<Vec<Mapping>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(text.lines().filter_map(parse_map_line).collect())
}

fn parse_map_line(line: &str) -> Option<Mapping> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim().to_string();
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        writable: perms.as_bytes().get(1) == Some(&b'w'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        path,
    })
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags, and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a descriptor just returned to us, owned by nothing else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether process `pid` is gone, or has exited and only waits for its parent to reap it: a
/// zombie (`Z`, or `X` while the kernel tears it down) keeps its /proc entry and its command
/// name, but nothing is left to trace.
pub fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| stat_exited(&stat))
}

/// [`exited`] from the text of `/proc/PID/stat`, whose state follows the command name in
/// parentheses (which may hold spaces and parentheses itself).
fn stat_exited(stat: &str) -> bool {
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some("Z" | "X") | None)
}

/// When process `pid` started, in clock ticks since boot (`starttime` in `/proc/PID/stat`, the
/// 20th field after the command name); None once it is gone.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_comm) = stat.rsplit_once(')')?;
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// The time since boot in the clock ticks of [`start_ticks`].
pub fn boot_ticks_now() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    now.tv_sec as u64 * hz + now.tv_nsec as u64 * hz / 1_000_000_000
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_started_before_now() {
        let started = super::start_ticks(std::process::id()).unwrap();
        assert!(started <= super::boot_ticks_now());
    }

    #[test]
    fn zombies_and_dead_processes_have_exited() {
        assert!(!stat_exited("42 (api (v2)) S 1 42"));
        assert!(!stat_exited("42 (api) R 1 42"));
        assert!(stat_exited("42 (api) Z 1 42"));
        assert!(stat_exited("42 (api) X 1 42"));
        assert!(stat_exited("garbled"));
    }

    use super::*;

    #[test]
    fn parses_maps_lines() {
        let m = parse_map_line("c000000000-c000400000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(
            (m.start, m.end, m.writable, m.path.as_str()),
            (0xc000000000, 0xc000400000, true, "")
        );
        let m =
            parse_map_line("55d0c000-55d0d000 r-xp 00001000 fd:01 123   /usr/bin/demo").unwrap();
        assert_eq!(
            (m.offset, m.path.as_str(), m.writable),
            (0x1000, "/usr/bin/demo", false)
        );
    }

    #[test]
    fn own_process_is_alive_and_readable() {
        let p = Process::open(std::process::id()).unwrap();
        assert!(p.alive());
        let x = 0x1122_3344_5566_7788u64;
        assert_eq!(p.read_u64(&x as *const u64 as u64), Some(x));
    }

    /// A zombie has exited; and a process of the same PID later is not the one opened (which a
    /// check of `/proc/PID` alone could not tell).
    #[test]
    fn a_process_that_exited_is_not_alive_even_before_it_is_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let p = Process::open(child.id()).unwrap();
        assert!(
            p.pidfd.is_some(),
            "pidfd_open works on any kernel escapade runs on"
        );
        assert!(p.alive());
        // SAFETY: signals our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while p.alive() {
            assert!(
                std::time::Instant::now() < deadline,
                "still alive after SIGKILL"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            std::path::Path::new(&format!("/proc/{}", child.id())).exists(),
            "not reaped yet: a zombie"
        );
        child.wait().unwrap();
        assert!(!p.alive());
    }
}
