//! What the running kernel offers escapade, found by trying it rather than by its version:
//! `features` is the table of the kernel features escapade uses, each with the release that
//! brought it and what escapade does without it, and how each is probed; `host`, the rest
//! of what decides whether escapade can run here (capabilities, memlock, lockdown); `bpf`,
//! the system calls aya does not make for escapade, and the verifier's refusals.

pub mod bpf;
pub mod features;
pub mod host;

/// The kernel's release, as `uname -r` prints it.
pub fn release() -> String {
    // SAFETY: an all-zero utsname is a valid buffer for uname to fill.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes NUL-terminated strings into the buffer it is given.
    if unsafe { libc::uname(&mut name) } != 0 {
        return "unknown".to_string();
    }
    // SAFETY: uname succeeded, so `release` holds a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}
