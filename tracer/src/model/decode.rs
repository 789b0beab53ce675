//! Raw probe events -> typed Go values. Each parameter's bytes are put back together from the
//! registers and stack words its ABI location names; floats in X registers stay unknown because
//! `pt_regs` has no XMM state. Pointers are classified by what they point into.

use std::collections::HashMap;

use probe_common::{CallEvent, MAX_STACK_WORDS};
use serde::{Deserialize, Serialize};

use crate::probes::plan::Captures;
use crate::tracee::Target;
use crate::tracee::gobin::abi::{Location, Reg};
use crate::tracee::gobin::types::{GoType, TypeKind};
use crate::tracee::gobin::{GoBinary, Param};
use crate::tracee::process::{Mapping, Process};

/// Where a pointer points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Nil,
    /// The calling goroutine's own stack.
    Stack,
    /// Go's heap arenas (anonymous mappings, reserved inaccessible, made writable as used).
    Heap,
    /// The binary's initialised globals (`.data`, `.noptrdata`).
    Data,
    /// The binary's zeroed globals (`.bss`, `.noptrbss`).
    Bss,
    /// Read-only data of the binary: string literals, type descriptors.
    Rodata,
    Text,
    Unknown,
}

impl Value {
    /// Where the value's first pointer word points, in layout order; None for a value without
    /// pointers, or one escapade could not read.
    pub fn pointee(&self) -> Option<Region> {
        match self {
            Value::Pointer { region, .. }
            | Value::String { region, .. }
            | Value::Slice { region, .. }
            | Value::Interface { region, .. } => Some(*region),
            Value::Struct { fields } => fields.iter().find_map(|(_, v)| v.pointee()),
            Value::Array { elems } => elems.iter().find_map(Value::pointee),
            _ => None,
        }
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The same spelling as in JSON.
        self.serialize(f)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Value {
    Bool {
        value: bool,
    },
    Int {
        value: i64,
    },
    Uint {
        value: u64,
    },
    Float {
        value: f64,
    },
    Complex {
        real: f64,
        imag: f64,
    },
    Pointer {
        addr: u64,
        region: Region,
    },
    String {
        addr: u64,
        len: u64,
        region: Region,
        /// The first bytes, when `--capture-strings` asked for them.
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    Slice {
        addr: u64,
        len: u64,
        cap: u64,
        region: Region,
    },
    Interface {
        /// The dynamic type; None for a nil interface or when its descriptor could not be read.
        #[serde(rename = "type")]
        dynamic_type: Option<String>,
        data: u64,
        region: Region,
    },
    Struct {
        fields: Vec<(String, Value)>,
    },
    Array {
        elems: Vec<Value>,
    },
    /// Bytes escapade could not see, and why.
    Unreadable {
        reason: String,
    },
    /// A result its caller overwrote without reading: the caller never saw it.
    Discarded,
}

/// A decoded parameter or result.
#[derive(Clone, Debug, Serialize)]
pub struct Arg {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub location: Location,
    pub value: Value,
}

/// The bytes of one value with, for each byte, whether escapade saw it.
struct Bytes {
    data: Vec<u8>,
    known: Vec<bool>,
    /// Why unknown bytes are unknown, by their offset: the X register, or "beyond the copied stack".
    why: HashMap<u64, Unseen>,
}

/// Why a value's bytes were not seen.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Unseen {
    Discarded,
    Because(String),
}

impl Bytes {
    /// The bytes of a value at `location`; `discarded` marks the integer registers (by index)
    /// whose values the caller discarded before a return-site probe saw them.
    fn gather(event: &CallEvent, ty: &GoType, location: &Location, discarded: &[usize]) -> Bytes {
        let size = ty.size as usize;
        let mut b = Bytes {
            data: vec![0; size],
            known: vec![false; size],
            why: HashMap::new(),
        };
        match location {
            Location::Nowhere => {}
            Location::Registers(pieces) => {
                for p in pieces {
                    match p.reg {
                        Reg::Int(i) if discarded.contains(&(i as usize)) => {
                            b.why.insert(p.offset, Unseen::Discarded);
                        }
                        Reg::Int(i) => {
                            let word = event.regs[i as usize].to_le_bytes();
                            b.fill(p.offset as usize, &word[..p.size as usize]);
                        }
                        Reg::Float(_) => {
                            b.why.insert(
                                p.offset,
                                Unseen::Because(format!("in {}, not readable at a uprobe", p.reg)),
                            );
                        }
                    }
                }
            }
            Location::Stack { offset } => {
                let stack: Vec<u8> = event.stack.iter().flat_map(|w| w.to_le_bytes()).collect();
                let start = *offset as usize;
                let end = (start + size).min(stack.len());
                if start < end {
                    b.fill(0, &stack[start..end]);
                }
                if start + size > stack.len() {
                    let reason = format!("beyond the {} stack bytes copied", MAX_STACK_WORDS * 8);
                    b.why
                        .insert(end.saturating_sub(start) as u64, Unseen::Because(reason));
                }
            }
        }
        b
    }

    fn fill(&mut self, at: usize, bytes: &[u8]) {
        let end = (at + bytes.len()).min(self.data.len());
        self.data[at..end].copy_from_slice(&bytes[..end - at]);
        self.known[at..end].iter_mut().for_each(|k| *k = true);
    }

    fn get(&self, at: u64, size: u64) -> Result<u64, Unseen> {
        let (at, size) = (at as usize, size as usize);
        if at + size > self.data.len() || !self.known[at..at + size].iter().all(|k| *k) {
            let reason = self
                .why
                .iter()
                .find(|(o, _)| (**o as usize) >= at && (**o as usize) < at + size.max(1))
                .or_else(|| self.why.iter().next())
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| Unseen::Because("not captured".into()));
            return Err(reason);
        }
        let mut word = [0u8; 8];
        word[..size].copy_from_slice(&self.data[at..at + size]);
        Ok(u64::from_le_bytes(word))
    }
}

/// Decodes events of one traced process against its binary.
pub struct Decoder<'a> {
    pub binary: &'a GoBinary,
    pub process: &'a Process,
    /// Added to link-time addresses to get runtime ones (PIE).
    pub bias: u64,
    type_names: HashMap<u64, Option<String>>,
    /// The process's mappings as last re-read, and when (CLOCK_MONOTONIC, the probes' clock):
    /// the heap grows after escapade attaches, into memory the maps read at open may not show.
    fresh_maps: Vec<Mapping>,
    maps_read_ns: u64,
}

impl<'a> Decoder<'a> {
    /// The decoder of `target`'s events.
    pub fn of(target: &'a Target) -> Self {
        Decoder::new(&target.binary, &target.process, target.bias)
    }

    pub fn new(binary: &'a GoBinary, process: &'a Process, bias: u64) -> Self {
        Decoder {
            binary,
            process,
            bias,
            type_names: HashMap::new(),
            fresh_maps: Vec::new(),
            maps_read_ns: 0,
        }
    }

    pub fn args(&mut self, event: &CallEvent, params: &[Param], captures: &Captures) -> Vec<Arg> {
        self.decode(event, params, captures, &[])
    }

    /// A return's results; `discarded` are the integer result registers (by index) that the
    /// caller discarded before the return-site probe saw them.
    pub fn results(
        &mut self,
        event: &CallEvent,
        results: &[Param],
        discarded: &[usize],
    ) -> Vec<Arg> {
        self.decode(event, results, &Captures::default(), discarded)
    }

    fn decode(
        &mut self,
        event: &CallEvent,
        params: &[Param],
        captures: &Captures,
        discarded: &[usize],
    ) -> Vec<Arg> {
        params
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let bytes = Bytes::gather(event, &p.ty, &p.location, discarded);
                let ctx = Ctx {
                    event,
                    captures,
                    param: index,
                };
                Arg {
                    name: p.name.clone(),
                    type_name: p.ty.name.clone(),
                    location: p.location.clone(),
                    value: self.value(&ctx, &p.ty, &bytes, 0),
                }
            })
            .collect()
    }

    /// The bytes of `param` in `event`, if the probe saw all of them.
    pub fn param_bytes(event: &CallEvent, param: &Param) -> Option<Vec<u8>> {
        let b = Bytes::gather(event, &param.ty, &param.location, &[]);
        b.known.iter().all(|k| *k).then_some(b.data)
    }

    fn value(&mut self, ctx: &Ctx, ty: &GoType, b: &Bytes, at: u64) -> Value {
        match self.try_value(ctx, ty, b, at) {
            Ok(v) => v,
            Err(Unseen::Discarded) => Value::Discarded,
            Err(Unseen::Because(reason)) => Value::Unreadable { reason },
        }
    }

    fn try_value(&mut self, ctx: &Ctx, ty: &GoType, b: &Bytes, at: u64) -> Result<Value, Unseen> {
        Ok(match &ty.kind {
            TypeKind::Bool => Value::Bool {
                value: b.get(at, 1)? != 0,
            },
            TypeKind::Int { signed: true } => {
                let shift = 64 - 8 * ty.size.clamp(1, 8);
                Value::Int {
                    value: ((b.get(at, ty.size)? << shift) as i64) >> shift,
                }
            }
            TypeKind::Int { signed: false } => Value::Uint {
                value: b.get(at, ty.size)?,
            },
            TypeKind::Float => Value::Float {
                value: float(b.get(at, ty.size)?, ty.size),
            },
            TypeKind::Complex => {
                let half = ty.size / 2;
                Value::Complex {
                    real: float(b.get(at, half)?, half),
                    imag: float(b.get(at + half, half)?, half),
                }
            }
            TypeKind::Pointer => {
                let addr = b.get(at, 8)?;
                Value::Pointer {
                    addr,
                    region: self.region(ctx.event, addr),
                }
            }
            TypeKind::String => {
                let (addr, len) = (b.get(at, 8)?, b.get(at + 8, 8)?);
                let text = (at == 0)
                    .then(|| ctx.captures.text(ctx.event, ctx.param))
                    .flatten();
                Value::String {
                    addr,
                    len,
                    region: self.region(ctx.event, addr),
                    text,
                }
            }
            TypeKind::Slice => {
                let addr = b.get(at, 8)?;
                Value::Slice {
                    addr,
                    len: b.get(at + 8, 8)?,
                    cap: b.get(at + 16, 8)?,
                    region: self.region(ctx.event, addr),
                }
            }
            TypeKind::Interface { empty } => {
                let (tab, data) = (b.get(at, 8)?, b.get(at + 8, 8)?);
                Value::Interface {
                    dynamic_type: self.dynamic_type(tab, *empty),
                    data,
                    region: self.region(ctx.event, data),
                }
            }
            TypeKind::Struct(fields) => Value::Struct {
                fields: fields
                    .iter()
                    .map(|f| (f.name.clone(), self.value(ctx, &f.ty, b, at + f.offset)))
                    .collect(),
            },
            TypeKind::Array { elem, len } => Value::Array {
                elems: (0..*len)
                    .map(|i| self.value(ctx, elem, b, at + i * elem.size))
                    .collect(),
            },
            TypeKind::Opaque => {
                return Err(Unseen::Because(format!(
                    "no DWARF description of type {}",
                    ty.name
                )));
            }
        })
    }

    /// Names what `addr` points into: the goroutine's stack, the binary's sections, or the heap.
    pub fn region(&mut self, event: &CallEvent, addr: u64) -> Region {
        if addr == 0 {
            return Region::Nil;
        }
        if event.stack_lo <= addr && addr < event.stack_hi {
            return Region::Stack;
        }
        if let Some(section) = self.binary.section_at(addr.wrapping_sub(self.bias)) {
            return match section.name.as_str() {
                ".data" | ".noptrdata" | ".go.buildinfo" => Region::Data,
                ".bss" | ".noptrbss" => Region::Bss,
                ".text" => Region::Text,
                _ => Region::Rodata,
            };
        }
        // Go reserves its heap arenas as inaccessible anonymous memory and makes them
        // writable as the heap grows: memory reserved when the maps were read may have been
        // heap by the time of the event, and the process may be gone before a re-read.
        let heap = |m: Option<&Mapping>| m.is_some_and(|m| m.path.is_empty());
        if heap(self.process.mapping_at(addr)) {
            return Region::Heap;
        }
        // Maps read before the event may miss memory mapped in between; maps read after it
        // show what was there (Go does not unmap its heap), so one re-read a drain suffices.
        if !heap(Mapping::find(&self.fresh_maps, addr)) && self.maps_read_ns < event.ktime_ns {
            self.maps_read_ns = crate::tracee::clock::monotonic_ns();
            if let Ok(maps) = self.process.current_maps() {
                self.fresh_maps = maps;
            }
        }
        if heap(Mapping::find(&self.fresh_maps, addr)) {
            Region::Heap
        } else {
            Region::Unknown
        }
    }

    /// The dynamic type of an interface: `tab` is a `*_type` for `any`, else an `*itab` whose
    /// second word is the `*_type`.
    fn dynamic_type(&mut self, tab: u64, empty: bool) -> Option<String> {
        if tab == 0 {
            return None;
        }
        let ty = if empty {
            tab
        } else {
            // In a PIE the file holds this pointer as a relocation, not its value: ask the process.
            let word = match self.process.read(tab + 8, 8) {
                Some(word) => word,
                None if !self.binary.is_pie => self.read_static(tab + 8, 8)?,
                None => return None,
            };
            u64::from_le_bytes(word.try_into().ok()?)
        };
        self.type_name_at(ty)
    }

    /// The name of the runtime type descriptor at `ty` (a `*_type` in the process).
    pub fn type_name_at(&mut self, ty: u64) -> Option<String> {
        if let Some(name) = self.type_names.get(&ty) {
            return name.clone();
        }
        let name = self.type_name(ty);
        self.type_names.insert(ty, name.clone());
        name
    }

    /// Reads runtime data that never changes and holds no pointers (type descriptors' names and
    /// flags): from the binary when it holds them, so it works after the target exits, else
    /// from the process.
    fn read_static(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.binary
            .bytes_at(addr.wrapping_sub(self.bias), len)
            .or_else(|| self.process.read(addr, len))
    }

    /// Reads a runtime type descriptor's name (`internal/abi.Type.Str`, a NameOff from
    /// `runtime.types`), which the runtime never changes once loaded.
    fn type_name(&self, ty: u64) -> Option<String> {
        const TFLAG_EXTRA_STAR: u8 = 1 << 1;
        let header = self.read_static(ty, 48)?;
        let tflag = header[20];
        let name_off = i32::from_le_bytes(header[40..44].try_into().ok()?);
        let name_addr =
            (self.binary.types_base? + self.bias).checked_add_signed(name_off as i64)?;
        // A name is a flag byte, a uvarint length, then the bytes.
        let head = self.read_static(name_addr, 11)?;
        let (mut len, mut shift, mut i) = (0usize, 0, 1);
        loop {
            let byte = *head.get(i)?;
            len |= ((byte & 0x7f) as usize) << shift;
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        // Longer than any type name: garbage, which must not become a huge allocation.
        if len > 1 << 20 {
            return None;
        }
        let bytes = self.read_static(name_addr + i as u64, len)?;
        let name = String::from_utf8_lossy(&bytes);
        let name = if tflag & TFLAG_EXTRA_STAR != 0 {
            name.strip_prefix('*')?
        } else {
            &name
        };
        Some(name.to_string())
    }
}

struct Ctx<'e> {
    event: &'e CallEvent,
    captures: &'e Captures,
    param: usize,
}

fn float(bits: u64, size: u64) -> f64 {
    if size == 4 {
        f32::from_bits(bits as u32) as f64
    } else {
        f64::from_bits(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_print_as_in_json() {
        assert_eq!(Region::Heap.to_string(), "heap");
        assert_eq!(serde_json::to_string(&Region::Bss).unwrap(), "\"bss\"");
    }
}
