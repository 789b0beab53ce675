//! Drains the probes' ring buffer. The probes submit without waking the reader (a wake-up per
//! event costs the traced thread ~7 us), so the reader polls on a short timer and is woken early
//! only when a probe sees the buffer filling up.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use probe_common::{CallEvent, EVENTS_BYTES};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::sink::EventSink;

/// `ring` registered with the runtime, to wait until it has records.
pub fn watch_readable(ring: RingBuf<MapData>) -> std::io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until the AsyncFd
    // (which owns the RingBuf) is dropped.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// How often the reader drains when nothing wakes it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records of the wrong size: a mismatch between the probes and this build.
    pub malformed: u64,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        Ok(EventReader {
            ring: watch_readable(ring)?,
            malformed: 0,
        })
    }

    /// Waits until a probe asks for a wake-up (the buffer is half full).
    pub async fn readable(&self) -> std::io::Result<()> {
        let mut guard = self.ring.readable().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands the events in the buffer to `sink`, oldest first, then flushes it: at most a full
    /// buffer's worth, so that a sink slower than the probes cannot keep the session from
    /// seeing Ctrl-C or its deadline (the probes count what they then drop).
    pub fn drain(&mut self, sink: &mut impl EventSink) -> anyhow::Result<()> {
        let ring = self.ring.get_mut();
        let most = EVENTS_BYTES as usize / size_of::<CallEvent>();
        for _ in 0..most {
            let Some(item) = ring.next() else {
                break;
            };
            if item.len() != size_of::<CallEvent>() {
                self.malformed += 1;
                continue;
            }
            // SAFETY: CallEvent is plain old data and the record has exactly its size; the
            // record may not be aligned for it, hence read_unaligned.
            let event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const CallEvent) };
            sink.event(&event)?;
        }
        sink.flush()
    }
}
