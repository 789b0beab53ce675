//! One tracing session against one process: open the target, plan where probes go, attach,
//! and pump events until Ctrl-C, the deadline, or the target's exit.

use std::time::Duration;

use anyhow::Context as _;
use probe_common::{
    COOKIE_SKIP_IF_BELOW_OR_EQUAL, CallEvent, EventKind, MAX_STACK_WORDS, ProbeConfig,
    STRING_CAPTURE_BYTES,
};

use crate::attach::{Attached, ProbePoint};
use crate::decode::Captures;
use crate::gobin::{Function, GoBinary};
use crate::placement::{self, EntryProbe, SlowReason};
use crate::process::Process;
use crate::ringbuf::{EventReader, POLL_INTERVAL};

/// A running Go process and the model of its binary.
pub struct Target {
    pub process: Process,
    pub binary: GoBinary,
    /// Runtime address minus link-time address (non-zero for PIE).
    pub bias: u64,
}

impl Target {
    pub fn open(pid: u32) -> anyhow::Result<Target> {
        let process = Process::open(pid)?;
        let binary = GoBinary::open(&process.exe)
            .with_context(|| format!("PID {pid} runs {}", process.exe_target.display()))?;
        let bias = process.load_bias(binary.is_pie, binary.first_load_vaddr)?;
        Ok(Target {
            process,
            binary,
            bias,
        })
    }
}

/// Where entry probes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlacementMode {
    /// On the stack-check branch where the function has one (emulated by the kernel, ~0.5 us).
    Fast,
    /// On every function's first instruction (single-stepped, ~10 us): for comparison.
    Entry,
}

#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// Bytes of each string argument to copy; 0 copies none.
    pub capture_strings: u32,
    pub placement: PlacementMode,
}

/// A function being traced and how its probes sit.
#[derive(Clone, Debug)]
pub struct Traced {
    pub function: Function,
    pub entry: EntryProbe,
    pub returns: usize,
    pub captures: Captures,
}

pub struct Plan {
    pub traced: Vec<Traced>,
    pub points: Vec<ProbePoint>,
}

impl Plan {
    pub fn new(
        binary: &GoBinary,
        functions: Vec<Function>,
        opts: &PlanOptions,
    ) -> anyhow::Result<Plan> {
        let mut traced = Vec::new();
        let mut points = Vec::new();
        for function in functions {
            let code = binary
                .code(&function)
                .with_context(|| format!("{}: code not found in the file", function.name))?;
            let placed = placement::place(code, function.entry)
                .with_context(|| format!("disassembling {}", function.name))?;
            let entry = match (opts.placement, placed.entry) {
                (PlacementMode::Entry, _) => EntryProbe::FirstInstruction {
                    addr: function.entry,
                    reason: SlowReason::Forced,
                },
                (PlacementMode::Fast, e) => e,
            };
            let (params, stack_bytes) = match &function.signature {
                Some(s) => (&s.params[..], s.stack_bytes),
                None => (&[][..], 0),
            };
            let captures = if opts.capture_strings > 0 {
                Captures::plan(params)
            } else {
                Captures::default()
            };
            let config = ProbeConfig {
                stack_words: (stack_bytes.div_ceil(8) as u32).min(MAX_STACK_WORDS as u32),
                string_bytes: opts.capture_strings.min(STRING_CAPTURE_BYTES as u32),
                strings: captures.configs,
            };
            let index = traced.len();
            let file_offset = |addr: u64| {
                binary
                    .file_offset(addr)
                    .with_context(|| format!("{}: {addr:#x} is not in the file", function.name))
            };
            let entry_flags = if entry.is_fast() {
                COOKIE_SKIP_IF_BELOW_OR_EQUAL
            } else {
                0
            };
            points.push(ProbePoint {
                function: index,
                kind: EventKind::Entry,
                addr: entry.addr(),
                file_offset: file_offset(entry.addr())?,
                flags: entry_flags,
                config,
            });
            for &ret in &placed.returns {
                points.push(ProbePoint {
                    function: index,
                    kind: EventKind::Return,
                    addr: ret,
                    file_offset: file_offset(ret)?,
                    flags: 0,
                    // Strings are captured at entry only.
                    config: ProbeConfig {
                        string_bytes: 0,
                        strings: Default::default(),
                        ..config
                    },
                });
            }
            traced.push(Traced {
                function,
                entry,
                returns: placed.returns.len(),
                captures,
            });
        }
        Ok(Plan { traced, points })
    }
}

/// Why a session stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    Interrupted,
    Deadline,
    TargetExited,
}

/// Where a session's events go.
pub trait EventSink {
    fn event(&mut self, event: &CallEvent) -> anyhow::Result<()>;
    /// Called after each drain of the ring buffer, so output reaches readers promptly.
    fn flush(&mut self) -> anyhow::Result<()>;
}

/// Pumps events into `sink` until Ctrl-C, `duration`, or the target's exit.
pub async fn run(
    target: &Target,
    attached: &mut Attached,
    duration: Option<Duration>,
    sink: &mut impl EventSink,
) -> anyhow::Result<(Ended, u64)> {
    let events = attached
        .take_events()
        .context("the event ring buffer was already taken")?;
    let mut reader = EventReader::new(events)?;
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    let ended = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ended::Interrupted,
            _ = &mut deadline => break Ended::Deadline,
            _ = tick.tick() => {
                reader.drain(sink)?;
                if !target.process.alive() {
                    break Ended::TargetExited;
                }
            }
            readable = reader.readable() => {
                readable?;
                reader.drain(sink)?;
            }
        }
    };
    reader.drain(sink)?;
    Ok((ended, reader.malformed))
}
