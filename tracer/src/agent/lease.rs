//! A read lease on a target's executable (`fcntl(F_SETLEASE)`), held while probes wait in the
//! file for its next process. Uprobes sit at file offsets and keep a copy of the instruction
//! each one replaced: a binary rewritten in place (`cp new-build /usr/local/bin/api` while the
//! service is stopped) would run with breakpoints in the middle of other instructions, and
//! crash. Opening the file for writing, or truncating it, breaks the lease: the kernel holds
//! the writer back and signals the agent (SIGIO), which detaches those probes and then lets the
//! lease go. A binary replaced by rename gets a new inode, which no probe is on.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::Path;

pub struct Lease {
    file: File,
}

impl Lease {
    /// Takes a read lease on `path`. Fails while any process has the file open for writing.
    pub fn take(path: &Path) -> io::Result<Lease> {
        let file = File::open(path)?;
        // SAFETY: fcntl on an fd this function owns, with an integer argument.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Lease { file })
    }

    /// Whether a writer waits for the lease: while it does, the kernel reports the type the
    /// lease is being broken to.
    pub fn broken(&self) -> bool {
        // SAFETY: fcntl on an fd this lease owns, without an argument.
        unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_GETLEASE) != libc::F_RDLCK }
    }
}
