//! `runtime.MemProfileRate` in a live target: the heap profiler's sampling that `allocs`'
//! sampled mode rides on, checked before relying on it and set for a session when asked.

use anyhow::Context as _;

use super::gobin::GoBinary;
use super::process::Process;

/// `runtime.MemProfileRate` in the target, checked before sampled mode relies on it, and set for
/// the session when the user asked.
pub struct MemProfileRate {
    /// Link-time address of the variable.
    pub addr: u64,
    /// The value before escapade changed it, if it did.
    pub saved: Option<u64>,
    pub in_effect: u64,
}

impl MemProfileRate {
    /// Checks the rate in `process`, running `binary` loaded at `bias`, and sets it to
    /// `requested` if given.
    pub fn prepare(
        binary: &GoBinary,
        process: &Process,
        bias: u64,
        requested: Option<u64>,
    ) -> anyhow::Result<MemProfileRate> {
        let (Some(addr), Some(disabled)) =
            (binary.mem_profile_rate, binary.disable_memory_profiling)
        else {
            anyhow::bail!(
                "{} has no symbol table, and escapade did not recognise where its runtime keeps \
                 runtime.MemProfileRate, so it cannot check the heap profiler's sampling: \
                 use --exact",
                process.exe_target.display()
            );
        };
        let read = |a: u64| process.read_u64(a + bias);
        if read(disabled).is_some_and(|v| v & 0xff != 0) {
            anyhow::bail!(
                "the program never uses runtime.MemProfile (nor runtime/pprof), so the linker \
                 turned heap-profile sampling off and there are no samples to follow: use --exact"
            );
        }
        let current = read(addr).context("reading runtime.MemProfileRate")?;
        match requested {
            Some(rate) => {
                process
                    .write_u64(addr + bias, rate)
                    .context("setting runtime.MemProfileRate (--mem-profile-rate)")?;
                Ok(MemProfileRate {
                    addr,
                    saved: Some(current),
                    in_effect: rate,
                })
            }
            None if current == 0 => anyhow::bail!(
                "runtime.MemProfileRate is 0 in PID {}: the program turned heap profiling off; \
                 pass --mem-profile-rate N to turn it on for this session, or use --exact",
                process.pid
            ),
            None => Ok(MemProfileRate {
                addr,
                saved: None,
                in_effect: current,
            }),
        }
    }

    /// Puts back the rate escapade replaced; nothing to do if the process is gone.
    pub fn restore(&self, process: &Process, bias: u64) -> anyhow::Result<()> {
        match self.saved {
            Some(saved) if process.alive() => process
                .write_u64(self.addr + bias, saved)
                .context("restoring runtime.MemProfileRate"),
            _ => Ok(()),
        }
    }
}
