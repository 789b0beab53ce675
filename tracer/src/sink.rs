//! Where a session's events go: the one interface between the event pump (`session` and the
//! ring buffer reader, which drive it) and what each command does with the events (print,
//! record, count). A module of its own so that both sides import it and neither the other.

use probe_common::CallEvent;

use crate::probes::snapshot::KernelCounts;

/// Where a session's events go.
pub trait EventSink {
    fn event(&mut self, event: &CallEvent) -> anyhow::Result<()>;
    /// Called after each drain of the ring buffer, so output reaches readers promptly.
    fn flush(&mut self) -> anyhow::Result<()>;
    /// Called on every tick of the session's poll timer, for sinks that also read what the
    /// probes counted in kernel maps, or keep what the probes read current.
    fn checkpoint(&mut self, _counts: &KernelCounts) -> anyhow::Result<()> {
        Ok(())
    }
    /// Whether the sink prints as events come, which a status line on the same terminal would
    /// garble.
    fn prints_events(&self) -> bool {
        false
    }
    /// What the status line adds to its counts, e.g. the size of a recording.
    fn status(&self) -> Option<String> {
        None
    }
}
