//! One tracing session against one process: pump the attached probes' events until the
//! caller's stop, or the target's exit.

use std::time::Duration;

use anyhow::Context as _;

use crate::probes::attach::Attached;
use crate::probes::snapshot::KernelCounts;
use crate::ringbuf::{EventReader, POLL_INTERVAL};
use crate::sink::EventSink;
use crate::status::StatusLine;
use crate::tracee::Target;

/// Why a session stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    Interrupted,
    Deadline,
    TargetExited,
}

/// One target's probes, attached, and the pump that drains their ring buffer into a sink.
/// Each session owns its own eBPF object (maps, globals and links, none pinned or shared), and
/// nothing it does is process-wide: sessions against different processes run side by side in
/// one process, on one runtime, each stopped by its own future.
pub struct Session<'t> {
    target: &'t Target,
    attached: Attached,
    reader: EventReader,
}

impl<'t> Session<'t> {
    /// A session of `attached`, the probes in `target`'s process. Needs a tokio runtime, which
    /// the ring buffer is registered with.
    pub fn new(target: &'t Target, mut attached: Attached) -> anyhow::Result<Session<'t>> {
        let events = attached
            .take_events()
            .context("the event ring buffer was already taken")?;
        Ok(Session {
            target,
            attached,
            reader: EventReader::new(events)?,
        })
    }

    /// What the probes counted so far.
    pub fn counts(&self) -> &KernelCounts {
        self.attached.counts()
    }

    /// Pumps events into `sink` until `stop` says why to stop, or the target exits, keeping
    /// `status` up to date; then detaches the entry probes, after which the session holds
    /// what the kernel counted. Returns why it stopped, and the malformed events so far.
    pub async fn run(
        &mut self,
        stop: impl std::future::Future<Output = Ended>,
        sink: &mut impl EventSink,
        mut status: Option<StatusLine>,
    ) -> anyhow::Result<(Ended, u64)> {
        let Session {
            target,
            attached,
            reader,
        } = self;
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        let ended = loop {
            tokio::select! {
                why = &mut stop => break why,
                _ = tick.tick() => {
                    reader.drain(sink)?;
                    sink.checkpoint(attached.counts())?;
                    if let Some(status) = status.as_mut() {
                        status.tick(&attached.counts().counters(), sink.status());
                    }
                    if !target.process.alive() {
                        break Ended::TargetExited;
                    }
                }
                readable = reader.readable() => {
                    readable?;
                    reader.drain(sink)?;
                }
                _ = until(attached.next_ret_edge()) => {
                    // A window that opens as the target exits finds no /proc/PID/exe to attach
                    // the RET probes to: that is the end of the target, not an error.
                    if let Err(e) = attached.ret_edge() {
                        if target.process.alive() {
                            return Err(e);
                        }
                        break Ended::TargetExited;
                    }
                }
            }
            // A drain can take long when the sink is slower than the probes: let the runtime
            // see the clock and signals before going on, or the deadline and Ctrl-C wait for
            // tokio's budget of 128 drains to run out.
            tokio::task::yield_now().await;
        };
        if let Some(status) = status.as_mut() {
            status.clear();
        }
        // Let calls in flight return before the return probes go too, draining on both sides
        // of the detach, which can take a while.
        reader.drain(sink)?;
        attached.detach_entries()?;
        reader.drain(sink)?;
        tokio::time::sleep(POLL_INTERVAL).await;
        reader.drain(sink)?;
        Ok((ended, reader.malformed))
    }
}

/// A command's one session: until Ctrl-C or `duration`, with a status line on a terminal.
/// Ctrl-C is the command's to handle: a caller running several sessions gives each its own
/// stop instead ([`Session::run`]).
pub async fn run_command(
    session: &mut Session<'_>,
    duration: Option<Duration>,
    sink: &mut impl EventSink,
) -> anyhow::Result<(Ended, u64)> {
    let stop = async {
        let deadline = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Ended::Interrupted,
            _ = deadline => Ended::Deadline,
        }
    };
    let status = StatusLine::on_terminal(sink.prints_events());
    session.run(stop, sink, status).await
}

/// Waits until `at`, or forever.
async fn until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
