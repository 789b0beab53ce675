//! Call records, what a Go programmer reads of each probe event: one [`CallRecord`] per entry or
//! return, with decoded values and link-time addresses, and the [`Symbols`] those addresses
//! resolve to. These outlive the target, so the live `trace` view, `record` and the offline
//! `report` render the same values.

use std::collections::HashMap;

use probe_common::{CallEvent, EventKind, ProbeConfig, RESULT_DISCARDED};
use serde::{Deserialize, Serialize};

use crate::model::calls::{Calls, Entered, Hit, Left};
use crate::model::decode::{Decoder, Region, Value};
use crate::probes::plan::{Captures, Plan, ProbePoint, Traced};
use crate::probes::snapshot::Counters;
use crate::session::Ended;
use crate::tracee::clock::WallClock;
use crate::tracee::gobin::arginfo::TraceWord;
use crate::tracee::gobin::{Frame, GoBinary, Param};

/// A parameter or result as the views name it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// Registers or stack offset, as `Location` prints it.
    pub location: String,
}

/// A traced function and how it was probed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionInfo {
    pub name: String,
    /// Link-time address of its first instruction (see [`Symbols`]).
    pub entry: u64,
    pub params: Vec<ParamInfo>,
    pub results: Vec<ParamInfo>,
    /// Where the entry probe sits, as the summary says it.
    pub entry_probe: String,
    /// Whether the kernel emulates the entry probe's instruction.
    pub fast: bool,
    pub return_probes: usize,
    /// Where the returns are probed: return sites in the callers, the function's `RET`s, or
    /// both, and why.
    #[serde(default)]
    pub return_probe: String,
}

impl FunctionInfo {
    pub fn of(traced: &Traced) -> FunctionInfo {
        let infos = |params: &[Param]| {
            params
                .iter()
                .map(|p| ParamInfo {
                    name: p.name.clone(),
                    type_name: p.ty.name.clone(),
                    location: p.location.to_string(),
                })
                .collect()
        };
        let sig = traced.function.signature.as_ref();
        FunctionInfo {
            name: traced.function.name.clone(),
            entry: traced.function.entry,
            params: sig.map(|s| infos(&s.params)).unwrap_or_default(),
            results: sig.map(|s| infos(&s.results)).unwrap_or_default(),
            entry_probe: traced.entry.to_string(),
            fast: traced.entry.is_fast(),
            return_probes: traced.returns.sites + traced.returns.rets,
            return_probe: traced.returns.to_string(),
        }
    }
}

/// One entry or return of a traced function. `function` indexes the session's
/// [`FunctionInfo`]s; values follow the function's parameters (or results) in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CallRecord {
    Entry {
        wall_ns: u64,
        goid: u64,
        tid: u32,
        function: u32,
        #[serde(with = "stored_values")]
        args: Vec<Value>,
        /// Without DWARF: the argument words as Go's traceback prints them (empty otherwise).
        words: Vec<TraceWord>,
        /// Link-time address of the calling instruction (see [`Symbols`]); 0 if unknown.
        caller_pc: u64,
        return_addr: u64,
        sp: u64,
    },
    Return {
        wall_ns: u64,
        goid: u64,
        tid: u32,
        function: u32,
        #[serde(with = "stored_values")]
        results: Vec<Value>,
        /// None when the entry was not seen (the call was running when escapade attached).
        duration_ns: Option<u64>,
    },
}

impl CallRecord {
    pub fn function(&self) -> usize {
        match self {
            CallRecord::Entry { function, .. } | CallRecord::Return { function, .. } => {
                *function as usize
            }
        }
    }
}

/// Link-time code addresses and their frames, innermost (inlined) first, so views can name
/// callers and stacks without the binary. New entries wait in `pending` until a recording
/// writes them.
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    frames: HashMap<u64, Vec<Frame>>,
    pending: Vec<u64>,
}

impl Symbols {
    /// Symbolizes `pc` from the binary the first time it is seen.
    pub fn learn(&mut self, binary: &GoBinary, pc: u64) {
        if pc != 0 && !self.frames.contains_key(&pc) {
            self.frames.insert(pc, binary.symbolize_inlined(pc));
            self.pending.push(pc);
        }
    }

    /// Adds frames read back from a recording.
    pub fn insert(&mut self, pc: u64, frames: Vec<Frame>) {
        self.frames.insert(pc, frames);
    }

    /// Frames at `pc`, innermost first; empty when unknown.
    pub fn frames(&self, pc: u64) -> &[Frame] {
        self.frames.get(&pc).map_or(&[], Vec::as_slice)
    }

    /// The innermost frame at `pc`: the function a caller line names.
    pub fn frame(&self, pc: u64) -> Option<&Frame> {
        self.frames(pc).first()
    }

    /// Entries learned since the last call, for a recording to write.
    pub fn take_pending(&mut self) -> Vec<(u64, Vec<Frame>)> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|pc| (pc, self.frames[&pc].clone()))
            .collect()
    }

    /// Every entry, for the first chunk of a new file after rotation.
    pub fn all(&self) -> Vec<(u64, Vec<Frame>)> {
        self.frames.iter().map(|(pc, f)| (*pc, f.clone())).collect()
    }
}

/// What pairing entries with returns counted, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pairing {
    pub unmatched_returns: u64,
    pub unwound: u64,
    pub repeated_hits: u64,
    pub in_flight: u64,
    /// Events from no known probe or of no known kind.
    pub unknown_probe: u64,
}

/// The end of a traced session, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceTotals {
    /// None when a recording stops short (escapade was killed).
    pub ended: Option<Ended>,
    pub counters: Counters,
    /// Ring-buffer records too short to be events.
    pub malformed: u64,
    pub pairing: Pairing,
}

/// Turns the probe events of one session into [`CallRecord`]s.
pub struct CallModel<'a> {
    decoder: Decoder<'a>,
    traced: &'a [Traced],
    points: &'a [ProbePoint],
    calls: Calls,
    unknown_probe: u64,
    /// Decode arguments and results; off when only counts are wanted.
    decode: bool,
    clock: WallClock,
}

impl<'a> CallModel<'a> {
    pub fn new(decoder: Decoder<'a>, plan: &'a Plan, decode: bool) -> Self {
        CallModel {
            decoder,
            traced: &plan.traced,
            points: &plan.points,
            calls: Calls::default(),
            unknown_probe: 0,
            decode,
            clock: WallClock::now(),
        }
    }

    /// The record of `e`, or None for a repeated hit of the same call or an unknown probe;
    /// the caller's address goes into `symbols`.
    pub fn record(&mut self, e: &CallEvent, symbols: &mut Symbols) -> Option<CallRecord> {
        let (Some(point), Some(kind)) = (
            self.points.get(e.probe_id as usize),
            EventKind::from_u32(e.kind),
        ) else {
            self.unknown_probe += 1;
            return None;
        };
        // The allocator's own probes serve no traced function: theirs is the params view.
        let hit = Hit::of(e, point)?;
        let index = hit.function;
        let traced = &self.traced[index];
        let wall_ns = self.clock.wall_ns(e.ktime_ns);
        let sig = traced.function.signature.as_ref().filter(|_| self.decode);
        match kind {
            // The allocator's events are the params view's (`record --params`).
            EventKind::Allocating | EventKind::Allocated => None,
            EventKind::Entry => {
                // Without return probes there is nothing to pair, nor a return to tell a
                // repeated hit from a new call.
                if traced.returns.any() && self.calls.enter(hit) == Entered::Repeat {
                    return None;
                }
                // A return address: the call is the instruction before it.
                let caller_pc = e
                    .return_addr
                    .wrapping_sub(self.decoder.bias)
                    .wrapping_sub(1);
                symbols.learn(self.decoder.binary, caller_pc);
                Some(CallRecord::Entry {
                    wall_ns,
                    goid: e.goid,
                    tid: e.tid,
                    function: index as u32,
                    args: sig
                        .map(|s| values(&mut self.decoder, e, &s.params, &traced.captures))
                        .unwrap_or_default(),
                    words: traced
                        .function
                        .traceback
                        .as_ref()
                        .filter(|_| self.decode)
                        .map(|layout| {
                            let stack: Vec<u8> =
                                e.stack.iter().flat_map(|w| w.to_le_bytes()).collect();
                            layout.read(&e.regs, &stack)
                        })
                        .unwrap_or_default(),
                    caller_pc,
                    return_addr: e.return_addr,
                    sp: e.sp,
                })
            }
            EventKind::Return => {
                // The kernel's timing where it paired the call, as its histograms have it: from
                // the end of the entry probe to the start of the return probe.
                let duration_ns = match (self.calls.leave(hit), e.took_ns) {
                    (Left::Repeat, _) => return None,
                    (_, took) if took > 0 => Some(took),
                    (Left::Unmatched, _) => None,
                    (Left::Paired(open), _) => Some(e.ktime_ns.saturating_sub(open.ktime_ns)),
                };
                Some(CallRecord::Return {
                    wall_ns,
                    goid: e.goid,
                    tid: e.tid,
                    function: index as u32,
                    results: sig
                        .map(|s| {
                            let discarded = discarded(&point.config);
                            let results = self.decoder.results(e, &s.results, &discarded);
                            results.into_iter().map(|a| a.value).collect()
                        })
                        .unwrap_or_default(),
                    duration_ns,
                })
            }
        }
    }

    pub fn pairing(&self) -> Pairing {
        Pairing {
            unmatched_returns: self.calls.unmatched_returns,
            unwound: self.calls.unwound,
            repeated_hits: self.calls.repeats,
            in_flight: self.calls.in_flight() as u64,
            unknown_probe: self.unknown_probe,
        }
    }
}

/// The integer result registers a return-site probe found discarded by the caller.
fn discarded(config: &ProbeConfig) -> Vec<usize> {
    (config.results.iter().enumerate())
        .filter(|(_, r)| r.kind == RESULT_DISCARDED)
        .map(|(i, _)| i)
        .collect()
}

fn values(
    decoder: &mut Decoder,
    e: &CallEvent,
    params: &[Param],
    captures: &Captures,
) -> Vec<Value> {
    decoder
        .args(e, params, captures)
        .into_iter()
        .map(|a| a.value)
        .collect()
}

/// [`Value`]s as a recording stores them. The JSON lines tag values with a `kind` field and
/// leave out absent text, which only self-describing formats can read back; the compact binary
/// encoding of recordings needs externally tagged variants with every field present.
mod stored_values {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Region, Value};

    #[derive(Serialize, Deserialize)]
    enum Stored {
        Bool(bool),
        Int(i64),
        Uint(u64),
        Float(f64),
        Complex(f64, f64),
        Pointer(u64, Region),
        String(u64, u64, Region, Option<String>),
        Slice(u64, u64, u64, Region),
        Interface(Option<String>, u64, Region),
        Struct(Vec<(String, Stored)>),
        Array(Vec<Stored>),
        Unreadable(String),
        Discarded,
    }

    fn store(v: Value) -> Stored {
        match v {
            Value::Bool { value } => Stored::Bool(value),
            Value::Int { value } => Stored::Int(value),
            Value::Uint { value } => Stored::Uint(value),
            Value::Float { value } => Stored::Float(value),
            Value::Complex { real, imag } => Stored::Complex(real, imag),
            Value::Pointer { addr, region } => Stored::Pointer(addr, region),
            Value::String {
                addr,
                len,
                region,
                text,
            } => Stored::String(addr, len, region, text),
            Value::Slice {
                addr,
                len,
                cap,
                region,
            } => Stored::Slice(addr, len, cap, region),
            Value::Interface {
                dynamic_type,
                data,
                region,
            } => Stored::Interface(dynamic_type, data, region),
            Value::Struct { fields } => {
                Stored::Struct(fields.into_iter().map(|(n, v)| (n, store(v))).collect())
            }
            Value::Array { elems } => Stored::Array(elems.into_iter().map(store).collect()),
            Value::Unreadable { reason } => Stored::Unreadable(reason),
            Value::Discarded => Stored::Discarded,
        }
    }

    fn load(s: Stored) -> Value {
        match s {
            Stored::Bool(value) => Value::Bool { value },
            Stored::Int(value) => Value::Int { value },
            Stored::Uint(value) => Value::Uint { value },
            Stored::Float(value) => Value::Float { value },
            Stored::Complex(real, imag) => Value::Complex { real, imag },
            Stored::Pointer(addr, region) => Value::Pointer { addr, region },
            Stored::String(addr, len, region, text) => Value::String {
                addr,
                len,
                region,
                text,
            },
            Stored::Slice(addr, len, cap, region) => Value::Slice {
                addr,
                len,
                cap,
                region,
            },
            Stored::Interface(dynamic_type, data, region) => Value::Interface {
                dynamic_type,
                data,
                region,
            },
            Stored::Struct(fields) => Value::Struct {
                fields: fields.into_iter().map(|(n, v)| (n, load(v))).collect(),
            },
            Stored::Array(elems) => Value::Array {
                elems: elems.into_iter().map(load).collect(),
            },
            Stored::Unreadable(reason) => Value::Unreadable { reason },
            Stored::Discarded => Value::Discarded,
        }
    }

    pub fn serialize<S: Serializer>(values: &[Value], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(values.iter().cloned().map(store))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
        Ok(Vec::<Stored>::deserialize(d)?
            .into_iter()
            .map(load)
            .collect())
    }
}
