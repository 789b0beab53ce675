//! The one status line long-running commands keep on a terminal's stderr, as `py-spy record`
//! does: time elapsed, events a second, events lost and, when recording, the file's size.
//! Off a terminal it prints nothing.

use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::probes::snapshot::Counters;

const EVERY: Duration = Duration::from_secs(1);

pub struct StatusLine {
    started: Instant,
    last: Instant,
    events_at_last: u64,
    shown: bool,
}

impl StatusLine {
    /// A status line, or None when stderr is not a terminal or `printing` output shares it.
    pub fn on_terminal(printing: bool) -> Option<StatusLine> {
        use std::io::IsTerminal as _;
        (!printing && std::io::stderr().is_terminal()).then(|| StatusLine {
            started: Instant::now(),
            last: Instant::now(),
            events_at_last: 0,
            shown: false,
        })
    }

    /// Redraws the line once a second from the probes' counters and what the sink adds.
    pub fn tick(&mut self, counters: &Counters, extra: Option<String>) {
        let since = self.last.elapsed();
        if since < EVERY {
            return;
        }
        let events = counters.events;
        let rate = (events - self.events_at_last.min(events)) as f64 / since.as_secs_f64();
        self.last = Instant::now();
        self.events_at_last = events;
        let mut line = format!(
            "escapade: {}s, {rate:.0} events/s, {} dropped",
            self.started.elapsed().as_secs(),
            counters.dropped
        );
        if let Some(extra) = extra {
            line.push_str(", ");
            line.push_str(&extra);
        }
        // Carriage return and erase-line: the line is redrawn in place.
        let _ = write!(std::io::stderr(), "\r\x1b[K{line}");
        self.shown = true;
    }

    /// Erases the line, for what the command prints next.
    pub fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.shown = false;
        }
    }
}
