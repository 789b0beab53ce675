//! Pairs each return with its entry. A frame's distance from the top of its goroutine's stack
//! (`stack.hi - SP`) survives the runtime copying the stack to grow it, while SP alone does not,
//! so calls are keyed by (goroutine id, that depth).

use std::collections::{BTreeMap, HashMap};

use probe_common::{CallEvent, CallStart, OpenCall};

use crate::probes::plan::ProbePoint;
use crate::tracee::process::Process;

/// One probe hit, as pairing sees it.
#[derive(Clone, Copy, Debug)]
pub struct Hit {
    pub goid: u64,
    /// `stack.hi - SP`.
    pub depth: u64,
    pub function: usize,
    pub ktime_ns: u64,
    /// Equal for two hits of the same call (see [`fingerprint`]).
    pub fingerprint: u64,
    /// Whether the probe is single-stepped, so that a signal during the step can make it fire
    /// twice for one hit.
    pub may_repeat: bool,
}

impl Hit {
    /// `event` as a hit of the traced function whose probe `point` is; None for a point that
    /// serves no traced function (the allocator's).
    pub fn of(event: &CallEvent, point: &ProbePoint) -> Option<Hit> {
        Some(Hit {
            goid: event.goid,
            depth: stack_depth(event),
            function: point.owner.traced()?,
            ktime_ns: event.ktime_ns,
            fingerprint: fingerprint(event),
            may_repeat: point.single_stepped(),
        })
    }
}

/// The hit frame's `stack.hi - SP`.
pub fn stack_depth(event: &CallEvent) -> u64 {
    event.stack_hi.wrapping_sub(event.sp)
}

/// What stays the same when the kernel restarts a probed instruction: the frame (SP) and the
/// return address. Registers do not qualify: the signal that interrupted the single step may
/// leave scratch registers changed.
fn fingerprint(e: &CallEvent) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (e.sp, e.return_addr).hash(&mut h);
    h.finish()
}

/// An entry waiting for its return.
#[derive(Clone, Copy, Debug)]
pub struct Open {
    pub function: usize,
    pub ktime_ns: u64,
    fingerprint: u64,
}

/// What an entry hit turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entered {
    Call,
    /// The same call hitting the probe again, not a new call: the kernel restarts a
    /// single-stepped instruction when a signal (Go's preemption) interrupts the step.
    Repeat,
}

/// What a return hit turned out to be.
#[derive(Clone, Copy, Debug)]
pub enum Left {
    /// It closes this entry.
    Paired(Open),
    /// No entry was seen: the call was already running when escapade attached.
    Unmatched,
    /// The return just seen, hitting the probe again (see [`Entered::Repeat`]).
    Repeat,
}

#[derive(Debug, Default)]
pub struct Calls {
    open: BTreeMap<(u64, u64), Open>,
    /// Per goroutine, the last return seen, if nothing happened on it since.
    last_return: HashMap<u64, (u64, u64)>,
    /// Returns with no entry: calls that were already running when escapade attached.
    pub unmatched_returns: u64,
    /// Entries whose frame was unwound without a RET (a panic, or runtime.Goexit).
    pub unwound: u64,
    /// Probe hits that repeated the previous hit of the same call.
    pub repeats: u64,
}

impl Calls {
    pub fn enter(&mut self, hit: Hit) -> Entered {
        self.last_return.remove(&hit.goid);
        let key = (hit.goid, hit.depth);
        if hit.may_repeat
            && let Some(open) = self.open.get(&key)
            && open.function == hit.function
            && open.fingerprint == hit.fingerprint
        {
            self.repeats += 1;
            return Entered::Repeat;
        }
        let open = Open {
            function: hit.function,
            ktime_ns: hit.ktime_ns,
            fingerprint: hit.fingerprint,
        };
        // A frame at the same depth that never returned was unwound.
        if self.open.insert(key, open).is_some() {
            self.unwound += 1;
        }
        Entered::Call
    }

    pub fn leave(&mut self, hit: Hit) -> Left {
        let last = self
            .last_return
            .insert(hit.goid, (hit.depth, hit.fingerprint));
        if hit.may_repeat && last == Some((hit.depth, hit.fingerprint)) {
            self.repeats += 1;
            return Left::Repeat;
        }
        // Deeper frames of this goroutine still open were unwound past us.
        let deeper: Vec<_> = self
            .open
            .range((hit.goid, hit.depth + 1)..=(hit.goid, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        self.unwound += deeper.len() as u64;
        for key in deeper {
            self.open.remove(&key);
        }
        match self.open.remove(&(hit.goid, hit.depth)) {
            Some(open) if open.function == hit.function => Left::Paired(open),
            Some(_) => {
                self.unwound += 1;
                self.unmatched_returns += 1;
                Left::Unmatched
            }
            None => {
                self.unmatched_returns += 1;
                Left::Unmatched
            }
        }
    }

    /// The innermost call still running on `goid` whose frame is at `depth` or above (a hit
    /// inside that call, or in something it called), with its depth.
    pub fn innermost(&self, goid: u64, depth: u64) -> Option<(u64, Open)> {
        self.open
            .range((goid, 0)..=(goid, depth))
            .next_back()
            .map(|(&(_, d), open)| (d, *open))
    }

    /// Calls still running.
    pub fn in_flight(&self) -> usize {
        self.open.len()
    }
}

/// `runtime.g.atomicstatus` sits right before `goid` in every supported Go version; `_Gdead`
/// and the `_Gscan` bit are from runtime2.go.
const STATUS_BEFORE_GOID: u64 = 8;
const G_DEAD: u32 = 6;
const G_SCAN: u32 = 0x1000;

/// How many of the calls the kernel still holds open are really running: a panic unwinds
/// frames without a return, leaving their entries behind.
/// A call runs while its goroutine is alive and the slot its return address was pushed to
/// still holds it, which the frames that reuse the memory after an unwind overwrite. Only
/// `process`'s calls count: other processes of its binary may share the probes.
pub fn still_running(
    open: &[(OpenCall, CallStart)],
    process: &Process,
    goid_offset: u64,
    stack_hi_offset: u64,
) -> u64 {
    let mut running = 0;
    let of_process = open.iter().filter(|(call, _)| call.tgid == process.pid);
    for (call, start) in of_process {
        let alive = || -> Option<bool> {
            let status = process.read_u64(call.g + goid_offset - STATUS_BEFORE_GOID)? as u32;
            if status & !G_SCAN == G_DEAD {
                return Some(false);
            }
            let stack_hi = process.read_u64(call.g + stack_hi_offset)?;
            let slot = stack_hi.checked_sub(call.depth())?;
            Some(process.read_u64(slot)? == start.return_addr)
        };
        if alive() == Some(true) {
            running += 1;
        }
    }
    running
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(goid: u64, depth: u64, fingerprint: u64) -> Hit {
        Hit {
            goid,
            depth,
            function: 0,
            ktime_ns: 0,
            fingerprint,
            may_repeat: true,
        }
    }

    #[test]
    fn recursion_pairs_by_depth_and_panics_unwind() {
        let mut c = Calls::default();
        c.enter(hit(1, 100, 1));
        c.enter(hit(1, 200, 2));
        c.enter(hit(1, 300, 3));
        assert!(matches!(c.leave(hit(1, 300, 4)), Left::Paired(_)));
        // A panic unwinds depth 200, recovered at depth 100.
        assert!(matches!(c.leave(hit(1, 100, 5)), Left::Paired(_)));
        assert_eq!(c.unwound, 1);
        assert_eq!(c.in_flight(), 0);
        assert!(matches!(c.leave(hit(2, 100, 6)), Left::Unmatched));
        assert_eq!(c.unmatched_returns, 1);
    }

    #[test]
    fn a_restarted_single_step_is_one_call() {
        let mut c = Calls::default();
        assert_eq!(c.enter(hit(1, 100, 7)), Entered::Call);
        assert_eq!(c.enter(hit(1, 100, 7)), Entered::Repeat);
        assert!(matches!(c.leave(hit(1, 100, 8)), Left::Paired(_)));
        assert!(matches!(c.leave(hit(1, 100, 8)), Left::Repeat));
        // The next call with the same arguments is a call again.
        assert_eq!(c.enter(hit(1, 100, 7)), Entered::Call);
        assert!(matches!(c.leave(hit(1, 100, 8)), Left::Paired(_)));
        assert_eq!((c.repeats, c.unwound, c.unmatched_returns), (2, 0, 0));
    }

    /// An emulated probe never fires twice: the same call site at the same depth again is a
    /// new call, as when a panic unwound the last one.
    #[test]
    fn an_emulated_probe_hit_is_always_a_call() {
        let mut c = Calls::default();
        let emulated = |fingerprint| Hit {
            may_repeat: false,
            ..hit(1, 100, fingerprint)
        };
        assert_eq!(c.enter(emulated(7)), Entered::Call);
        assert_eq!(c.enter(emulated(7)), Entered::Call);
        assert_eq!(c.unwound, 1);
        assert!(matches!(c.leave(emulated(8)), Left::Paired(_)));
        assert!(matches!(c.leave(emulated(8)), Left::Unmatched));
        assert_eq!(c.repeats, 0);
    }
}
