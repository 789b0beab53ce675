//! Turns an error into a next step for the user, in the spirit of "what do I do now".

use crate::kernel::bpf::Refused;
use crate::kernel::features::Unsupported;
use crate::tracee::gobin::GoBinError;
use crate::tracee::process::ProcessError;

/// A one-line suggestion for `err`, if escapade knows one.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ProcessError>() {
            return match e {
                ProcessError::Denied { .. } => Some(PRIVILEGES),
                ProcessError::Gone(_) => Some("check the PID with `pgrep -f <program>`"),
                _ => None,
            };
        }
        if let Some(e) = cause.downcast_ref::<GoBinError>() {
            return match e {
                GoBinError::NoMatch { .. } => Some(
                    "list the binary's functions with `go tool nm <binary> | grep ' T '`; \
                     methods are spelled like 'main.(*Server).handle'",
                ),
                GoBinError::NotGo { .. } | GoBinError::NotElf { .. } => {
                    Some("escapade traces Go programs only; is this the right PID?")
                }
                _ => None,
            };
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>()
            && e.kind() == std::io::ErrorKind::PermissionDenied
        {
            return Some(PRIVILEGES);
        }
        // The verifier rejecting a program is escapade's bug, whatever errno it comes with.
        if cause.is::<Refused>() {
            return Some(
                "this is a bug in escapade's probes: please report it with this line and the \
                 output of `escapade doctor` (`-v` prints the verifier's whole log)",
            );
        }
        if cause.is::<Unsupported>() {
            return Some("`escapade doctor` tells what works");
        }
        if let Some(aya::programs::ProgramError::SyscallError(e)) =
            cause.downcast_ref::<aya::programs::ProgramError>()
            && e.io_error.kind() == std::io::ErrorKind::PermissionDenied
        {
            return Some(PRIVILEGES);
        }
    }
    None
}

/// What a target without DWARF cannot give and what `--symbols` adds, in one line; None for a
/// target with DWARF (its own or from a symbols file).
pub fn without_dwarf(dwarf: bool) -> Option<&'static str> {
    (!dwarf).then_some(
        "no DWARF (-ldflags=-w, or stripped): arguments show as raw words, as Go's traceback \
         prints them, without names, types or decoded values, and `params` cannot follow them; \
         --symbols FILE (the binary before stripping, or its `objcopy --only-keep-debug` file) \
         adds them",
    )
}

const PRIVILEGES: &str =
    "run escapade as root (sudo), or grant it CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE";
