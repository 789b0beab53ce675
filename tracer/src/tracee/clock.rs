//! The probes time events with CLOCK_MONOTONIC (`bpf_ktime_get_ns`), as does the Go runtime
//! (`nanotime`); people read wall-clock time.

/// Converts CLOCK_MONOTONIC readings to Unix time in nanoseconds, with the offset between the
/// two clocks taken once, when the converter is made.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC.
    offset_ns: i128,
}

impl WallClock {
    pub fn now() -> WallClock {
        WallClock {
            offset_ns: clock_ns(libc::CLOCK_REALTIME) as i128
                - clock_ns(libc::CLOCK_MONOTONIC) as i128,
        }
    }

    pub fn wall_ns(&self, monotonic_ns: u64) -> u64 {
        (monotonic_ns as i128 + self.offset_ns) as u64
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the probes' clock.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
