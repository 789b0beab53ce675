//! Pairs each return with its entry. A frame's distance from the top of its goroutine's stack
//! (`stack.hi - SP`) survives the runtime copying the stack to grow it, while SP alone does not,
//! so calls are keyed by (goroutine id, that depth).

use std::collections::BTreeMap;

/// An entry waiting for its return.
#[derive(Clone, Debug)]
pub struct Open {
    pub probe_function: usize,
    pub ktime_ns: u64,
}

#[derive(Debug, Default)]
pub struct Calls {
    open: BTreeMap<(u64, u64), Open>,
    /// Returns with no entry: calls that were already running when escapade attached.
    pub unmatched_returns: u64,
    /// Entries whose frame was unwound without a RET (a panic, or runtime.Goexit).
    pub unwound: u64,
}

impl Calls {
    pub fn enter(&mut self, goid: u64, depth: u64, open: Open) {
        // A frame at the same depth that never returned was unwound.
        if self.open.insert((goid, depth), open).is_some() {
            self.unwound += 1;
        }
    }

    /// The entry this return closes, if escapade saw it.
    pub fn leave(&mut self, goid: u64, depth: u64, function: usize) -> Option<Open> {
        // Deeper frames of this goroutine still open were unwound past us.
        let deeper: Vec<_> = self
            .open
            .range((goid, depth + 1)..=(goid, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        self.unwound += deeper.len() as u64;
        for key in deeper {
            self.open.remove(&key);
        }
        match self.open.remove(&(goid, depth)) {
            Some(open) if open.probe_function == function => Some(open),
            Some(_) => {
                self.unwound += 1;
                self.unmatched_returns += 1;
                None
            }
            None => {
                self.unmatched_returns += 1;
                None
            }
        }
    }

    /// Calls still running.
    pub fn in_flight(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(f: usize) -> Open {
        Open {
            probe_function: f,
            ktime_ns: 0,
        }
    }

    #[test]
    fn recursion_pairs_by_depth_and_panics_unwind() {
        let mut c = Calls::default();
        c.enter(1, 100, open(0));
        c.enter(1, 200, open(0));
        c.enter(1, 300, open(0));
        assert!(c.leave(1, 300, 0).is_some());
        // A panic unwinds depth 200, recovered at depth 100.
        assert!(c.leave(1, 100, 0).is_some());
        assert_eq!(c.unwound, 1);
        assert_eq!(c.in_flight(), 0);
        assert!(c.leave(2, 100, 0).is_none());
        assert_eq!(c.unmatched_returns, 1);
    }
}
