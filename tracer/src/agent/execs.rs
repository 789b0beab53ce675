//! Processes that start a new program, told by the kernel's `sched_process_exec` tracepoint, so
//! that a target's new process is attached to within milliseconds of its `exec`. Where the
//! tracepoint cannot be used, the agent relies on its scan of /proc alone ([`super::discover`]).

use anyhow::Context as _;
use aya::Ebpf;
use aya::maps::{MapData, RingBuf};
use aya::programs::RawTracePoint;
use tokio::io::unix::AsyncFd;

use crate::kernel::bpf::aya_load_error;
use crate::probes::snapshot::take;
use crate::ringbuf::watch_readable;

static WATCHER: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-exec"));

pub struct ExecWatcher {
    /// Keeps the program attached.
    _ebpf: Ebpf,
    execs: AsyncFd<RingBuf<MapData>>,
}

impl ExecWatcher {
    pub fn start() -> anyhow::Result<ExecWatcher> {
        let mut ebpf = load()?;
        program(&mut ebpf)?
            .attach(PROGRAM)
            .context("attaching to the sched_process_exec tracepoint")?;
        let ring = take(&mut ebpf, "EXECS")?;
        Ok(ExecWatcher {
            _ebpf: ebpf,
            execs: watch_readable(ring)?,
        })
    }

    /// Waits until processes exec'd; returns their PIDs.
    pub async fn next(&mut self) -> std::io::Result<Vec<u32>> {
        loop {
            let mut ready = self.execs.readable_mut().await?;
            let mut pids = Vec::new();
            while let Some(pid) = ready.get_inner_mut().next() {
                if let Ok(pid) = <[u8; 4]>::try_from(&*pid) {
                    pids.push(u32::from_ne_bytes(pid));
                }
            }
            ready.clear_ready();
            if !pids.is_empty() {
                return Ok(pids);
            }
        }
    }
}

/// The watcher's program, in its own object.
pub const PROGRAM: &str = "sched_process_exec";

/// The watcher's object, its program loaded into the kernel but not attached.
pub fn load() -> anyhow::Result<Ebpf> {
    let mut ebpf = Ebpf::load(WATCHER).context("loading the exec watcher")?;
    program(&mut ebpf)?
        .load()
        .map_err(|e| aya_load_error(PROGRAM, e))?;
    Ok(ebpf)
}

fn program(ebpf: &mut Ebpf) -> anyhow::Result<&mut RawTracePoint> {
    Ok(ebpf
        .program_mut(PROGRAM)
        .context("program sched_process_exec missing from the exec watcher")?
        .try_into()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_call_chain_fits_the_classic_bpf_stack() {
        crate::probes::stack_budget::assert_fits("probe-exec", super::WATCHER);
    }
}
