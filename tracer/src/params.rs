//! The `params` view: for each parameter of the traced functions, where its value really went
//! over the observed calls. Pointers are classified by what they point into (the goroutine's
//! stack, the heap, the binary's globals); a parameter the function itself moved to the heap is
//! caught twice: statically, by the function's own call to the allocator with the parameter's
//! type, and at run time, by that call's new object holding the argument's value when the
//! function returns.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use probe_common::{CallEvent, EventKind, ProbeConfig};
use serde::{Deserialize, Serialize};

use crate::attach::{ProbeKind, ProbePoint};
use crate::calls::{Calls, Entered, Hit, Left};
use crate::decode::{Decoder, Region};
use crate::gobin::types::TypeKind;
use crate::gobin::{GoBinary, Param};
use crate::placement::{self, AllocationCall, Allocator};
use crate::session::{EntrySite, EventSink, PlacementMode, Plan};

/// Allocators whose entries the `params` probes watch, and where each takes its type.
const ALLOCATORS: &[(&str, usize)] = &[("runtime.newobject", 0), ("runtime.mallocgc", 1)];

/// What escapade concluded about one parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No pointer inside; arrived in registers.
    Registers,
    /// No pointer inside; arrived (at least partly) on the stack.
    Stack,
    /// The function heap-allocated the parameter variable itself (its address escapes).
    MovedToHeap,
    /// The pointer pointed into the heap: the pointee escaped in a caller.
    PointeeHeap,
    /// The pointer pointed into the calling goroutine's stack.
    PointeeStack,
    /// The pointer pointed at the binary's globals or read-only data (literals).
    PointeeGlobal,
    Nil,
    /// Its pointer pointed somewhere escapade could not name, or could not be read.
    Unknown,
    NotCalled,
}

impl Verdict {
    /// How a person reads it.
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Registers => "stays in registers",
            Verdict::Stack => "passed on the stack",
            Verdict::MovedToHeap => "moved to heap",
            Verdict::PointeeHeap => "pointee on heap (escaped in a caller)",
            Verdict::PointeeStack => "pointee on stack",
            Verdict::PointeeGlobal => "pointee in globals",
            Verdict::Nil => "always nil",
            Verdict::Unknown => "pointee unknown",
            Verdict::NotCalled => "not called",
        }
    }
}

/// Calls seen with the parameter's pointer in each region.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Pointees {
    pub nil: u64,
    pub stack: u64,
    pub heap: u64,
    pub global: u64,
    pub unknown: u64,
}

impl Pointees {
    fn add(&mut self, region: Region) {
        match region {
            Region::Nil => self.nil += 1,
            Region::Stack => self.stack += 1,
            Region::Heap => self.heap += 1,
            Region::Data | Region::Bss | Region::Rodata | Region::Text => self.global += 1,
            Region::Unknown => self.unknown += 1,
        }
    }

    fn total(&self) -> u64 {
        self.nil + self.stack + self.heap + self.global + self.unknown
    }

    /// The region most calls saw; ties go to the earlier of heap, stack, global, nil.
    fn verdict(&self) -> Verdict {
        [
            (self.heap, Verdict::PointeeHeap),
            (self.stack, Verdict::PointeeStack),
            (self.global, Verdict::PointeeGlobal),
            (self.nil, Verdict::Nil),
            (self.unknown, Verdict::Unknown),
        ]
        .into_iter()
        .rev()
        .max_by_key(|(n, _)| *n)
        .map_or(Verdict::Unknown, |(_, v)| v)
    }
}

/// Heap objects the function made for the parameter itself.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Moved {
    /// Calls in which a new object held the argument's value.
    pub calls: u64,
    pub objects: u64,
    pub bytes: u64,
}

/// One row of the view.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParamRow {
    pub function: String,
    pub param: String,
    pub go_type: String,
    /// How it arrived: `RAX`, `RBX+RCX`, `stack+16`.
    pub location: String,
    pub calls: u64,
    /// For a parameter holding a pointer word (the first, in layout order).
    pub pointee: Option<Pointees>,
    pub moved_to_heap: Moved,
    /// The function's code calls the allocator with this parameter's type.
    pub static_moved_to_heap: bool,
    pub verdict: Verdict,
}

/// Everything the params view shows, as of when it was taken.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParamsView {
    pub rows: Vec<ParamRow>,
    pub heap: Vec<FunctionHeap>,
    /// Calls still running.
    pub in_flight: usize,
    /// Returns seen without their entry (calls already running at attach).
    pub unmatched_returns: u64,
    /// Objects a function made with a parameter's type that held none of the arguments' values
    /// when it returned (a new variable of that type, or a parameter changed before return).
    pub unverified_moves: u64,
    /// Where each allocator probe sits; empty without the allocator probes.
    pub allocator_probes: Vec<(String, String)>,
}

/// Heap allocations made while inside a traced function (by it or anything it called).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FunctionHeap {
    pub function: String,
    pub calls: u64,
    pub objects: u64,
    pub bytes: u64,
    /// Of those, allocated by the function's own code.
    pub own_objects: u64,
}

/// A traced function's own allocator call whose type is one of its parameters'.
#[derive(Clone, Debug)]
struct MoveSite {
    /// The parameters of that type, by index.
    candidates: Vec<usize>,
    size: u64,
}

/// What `params` adds to a trace plan, and what its extra probes mean.
pub struct AllocationProbes {
    /// By probe id: a move site.
    move_sites: HashMap<u32, MoveSite>,
    /// By probe id: whether the allocator is `newobject` (else `mallocgc` or a variant).
    allocators: HashMap<u32, bool>,
    /// Parameters the code moves to the heap, by (function, parameter).
    static_moves: Vec<(usize, usize)>,
    /// `runtime.mallocgc`'s code range: calls from inside it are the same allocation.
    mallocgc: (u64, u64),
    /// Where each allocator probe sits.
    pub placed: Vec<(String, EntrySite)>,
}

impl AllocationProbes {
    /// Adds to `plan` a probe after each traced function's own allocator call whose type is
    /// one of its parameters', and probes on the allocator's entries for the per-call heap
    /// cost. `with_allocator` off leaves only the static analysis (for the benchmark).
    pub fn plan(
        binary: &GoBinary,
        decoder: &mut Decoder,
        plan: &mut Plan,
        with_allocator: bool,
    ) -> anyhow::Result<AllocationProbes> {
        let mut names: Vec<(String, usize)> = ALLOCATORS
            .iter()
            .map(|&(n, r)| (n.to_string(), r))
            .collect();
        names.extend(
            binary
                .functions_named(crate::session::SIZE_SPECIALIZED_MALLOCS)
                .into_iter()
                .map(|n| (n, 1)),
        );
        let mut functions = Vec::new();
        for (name, type_arg) in &names {
            let f = binary.resolve(std::slice::from_ref(name))?.remove(0);
            functions.push((f, *type_arg));
        }
        let allocators: Vec<Allocator> = functions
            .iter()
            .map(|(f, type_arg)| Allocator {
                entry: f.entry,
                type_arg: *type_arg,
            })
            .collect();
        let mut probes = AllocationProbes {
            move_sites: HashMap::new(),
            allocators: HashMap::new(),
            static_moves: Vec::new(),
            mallocgc: functions
                .iter()
                .find(|(f, _)| f.name == "runtime.mallocgc")
                .map_or((0, 0), |(f, _)| (f.entry, f.end)),
            placed: Vec::new(),
        };
        let file_offset = |addr: u64| {
            binary
                .file_offset(addr)
                .with_context(|| format!("{addr:#x} is not in the file"))
        };
        for index in 0..plan.traced.len() {
            let function = plan.traced[index].function.clone();
            let Some(sig) = &function.signature else {
                continue;
            };
            let code = binary
                .code(&function)
                .with_context(|| format!("reading the code of {}", function.name))?;
            for call in placement::allocation_calls(&code, function.entry, &allocators) {
                let Some(site) = move_site(decoder, &sig.params, &call) else {
                    continue;
                };
                for &param in &site.candidates {
                    if !probes.static_moves.contains(&(index, param)) {
                        probes.static_moves.push((index, param));
                    }
                }
                if with_allocator {
                    probes
                        .move_sites
                        .insert(plan.points.len() as u32, site.clone());
                    plan.points.push(ProbePoint {
                        function: index,
                        kind: ProbeKind::Allocated,
                        addr: call.after,
                        file_offset: file_offset(call.after)?,
                        flags: 0,
                        config: ProbeConfig::default(),
                    });
                }
            }
        }
        if !with_allocator {
            return Ok(probes);
        }
        for (function, _) in &functions {
            let code = binary
                .code(function)
                .with_context(|| format!("reading the code of {}", function.name))?;
            let placed = placement::place(&code, function.entry)
                .with_context(|| format!("disassembling {}", function.name))?;
            let entry = EntrySite::choose(binary, function, placed.entry, PlacementMode::Fast)?;
            for (addr, flags) in entry.points() {
                probes.allocators.insert(
                    plan.points.len() as u32,
                    function.name == "runtime.newobject",
                );
                plan.points.push(ProbePoint {
                    function: 0,
                    kind: ProbeKind::Allocating,
                    addr,
                    file_offset: file_offset(addr)?,
                    flags,
                    config: ProbeConfig::default(),
                });
            }
            probes.placed.push((function.name.clone(), entry));
        }
        Ok(probes)
    }
}

/// `call` as a possible move of one of `params` to the heap: the allocated type is theirs.
fn move_site(decoder: &mut Decoder, params: &[Param], call: &AllocationCall) -> Option<MoveSite> {
    let type_name = decoder.type_name_at(call.type_addr? + decoder.bias)?;
    let candidates: Vec<usize> = params
        .iter()
        .enumerate()
        .filter(|(_, p)| p.ty.name == type_name)
        .map(|(i, _)| i)
        .collect();
    let size = params.get(*candidates.first()?)?.ty.size;
    Some(MoveSite { candidates, size })
}

/// A traced call in flight.
struct Pending {
    function: usize,
    /// Each parameter's bytes at entry, when the probe saw them all.
    args: Vec<Option<Vec<u8>>>,
    /// Where each parameter's pointer pointed at entry.
    pointees: Vec<Option<Region>>,
    /// Objects the function allocated for its parameters: (address, move site's probe id).
    moved: Vec<(u64, u32)>,
    objects: u64,
    bytes: u64,
    own_objects: u64,
}

#[derive(Default, Clone)]
struct ParamStats {
    calls: u64,
    pointee: Pointees,
    has_pointer: bool,
    moved: Moved,
}

#[derive(Default, Clone)]
struct FunctionStats {
    calls: u64,
    objects: u64,
    bytes: u64,
    own_objects: u64,
}

/// One call's evidence, for `--events`.
#[derive(Serialize)]
struct CallEvidence<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: &'a str,
    goid: u64,
    /// Per parameter, where its pointer pointed.
    pointee: Vec<(&'a str, Option<Region>)>,
    moved_to_heap: Vec<&'a str>,
    heap_objects: u64,
    heap_bytes: u64,
}

/// Follows calls of the traced functions and what happened to their parameters.
pub struct ParamTracker<'a, W: std::io::Write> {
    decoder: Decoder<'a>,
    plan: &'a Plan,
    probes: &'a AllocationProbes,
    calls: Calls,
    /// By (goroutine, depth), like the calls they belong to.
    pending: BTreeMap<(u64, u64), Pending>,
    params: Vec<Vec<ParamStats>>,
    functions: Vec<FunctionStats>,
    unverified_moves: u64,
    events: Option<W>,
}

impl<'a, W: std::io::Write> ParamTracker<'a, W> {
    /// `events`, when given, receives a JSON line per completed call.
    pub fn new(
        decoder: Decoder<'a>,
        plan: &'a Plan,
        probes: &'a AllocationProbes,
        events: Option<W>,
    ) -> Self {
        let params = plan
            .traced
            .iter()
            .map(|t| {
                let n = t.function.signature.as_ref().map_or(0, |s| s.params.len());
                vec![ParamStats::default(); n]
            })
            .collect();
        ParamTracker {
            decoder,
            plan,
            probes,
            calls: Calls::default(),
            pending: BTreeMap::new(),
            params,
            functions: vec![FunctionStats::default(); plan.traced.len()],
            unverified_moves: 0,
            events,
        }
    }

    fn params_of(&self, function: usize) -> &'a [Param] {
        self.plan.traced[function]
            .function
            .signature
            .as_ref()
            .map_or(&[][..], |s| &s.params[..])
    }

    fn handle(&mut self, e: &CallEvent) -> anyhow::Result<()> {
        let Some(point) = self.plan.points.get(e.probe_id as usize) else {
            return Ok(());
        };
        let Some(kind) = EventKind::from_u32(e.kind) else {
            return Ok(());
        };
        let hit = Hit::of(e, point);
        match kind {
            EventKind::Entry => self.enter(e, hit),
            EventKind::Return => self.leave(hit)?,
            EventKind::Allocated => {
                if let Some((depth, open)) = self.calls.innermost(e.goid, hit.depth)
                    && open.function == point.function
                    && let Some(p) = self.pending.get_mut(&(e.goid, depth))
                {
                    p.moved.push((e.regs[0], e.probe_id));
                }
            }
            EventKind::Allocating => self.allocating(e, hit),
        }
        Ok(())
    }

    fn enter(&mut self, e: &CallEvent, hit: Hit) {
        if self.calls.enter(hit) == Entered::Repeat {
            return;
        }
        let function = hit.function;
        let params = self.params_of(function);
        let args = self.decoder.args(e, params, &Default::default());
        let mut pointees = Vec::new();
        for ((stats, arg), param) in self.params[function].iter_mut().zip(&args).zip(params) {
            stats.calls += 1;
            let pointee = has_pointer(&param.ty.kind).then(|| arg.value.pointee());
            if let Some(pointee) = pointee {
                stats.has_pointer = true;
                stats.pointee.add(pointee.unwrap_or(Region::Unknown));
            }
            pointees.push(pointee.flatten());
        }
        self.pending.insert(
            (hit.goid, hit.depth),
            Pending {
                function,
                args: params.iter().map(|p| Decoder::param_bytes(e, p)).collect(),
                pointees,
                moved: Vec::new(),
                objects: 0,
                bytes: 0,
                own_objects: 0,
            },
        );
    }

    fn allocating(&mut self, e: &CallEvent, hit: Hit) {
        let Some(&is_newobject) = self.probes.allocators.get(&e.probe_id) else {
            return;
        };
        let Some((depth, open)) = self.calls.innermost(e.goid, hit.depth) else {
            return;
        };
        let Some(p) = self.pending.get_mut(&(e.goid, depth)) else {
            return;
        };
        let caller = e.return_addr.wrapping_sub(self.decoder.bias);
        // The function's own code calls newobject, or (Go 1.27) a size-specialized allocator;
        // newobject's own call to mallocgc is not the function's.
        let f = &self.plan.traced[open.function].function;
        if (f.entry..f.end).contains(&caller) {
            p.own_objects += 1;
        }
        // newobject calls mallocgc, and mallocgc hands small sizes to the size-specialized
        // allocators (Go 1.27), all probed: count each allocation once, where it has its size.
        // Size 0 allocates nothing.
        let (start, end) = self.probes.mallocgc;
        if is_newobject || (start..end).contains(&caller) || e.regs[0] == 0 {
            return;
        }
        p.objects += 1;
        p.bytes += e.regs[0];
    }

    fn leave(&mut self, hit: Hit) -> anyhow::Result<()> {
        let left = self.calls.leave(hit);
        if matches!(left, Left::Repeat) {
            return Ok(());
        }
        // Calls deeper on this goroutine were unwound without returning (a panic).
        let unwound: Vec<_> = self
            .pending
            .range((hit.goid, hit.depth + 1)..=(hit.goid, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for key in unwound {
            self.pending.remove(&key);
        }
        let Left::Paired(_) = left else {
            return Ok(());
        };
        let Some(p) = self.pending.remove(&(hit.goid, hit.depth)) else {
            return Ok(());
        };
        let f = &mut self.functions[p.function];
        f.calls += 1;
        f.objects += p.objects;
        f.bytes += p.bytes;
        f.own_objects += p.own_objects;
        // The object the function made for a parameter holds that parameter's value.
        let mut moved_params = Vec::new();
        for (addr, probe_id) in &p.moved {
            let Some(site) = self.probes.move_sites.get(probe_id) else {
                continue;
            };
            let held = self.decoder.process.read(*addr, site.size as usize);
            let param = site.candidates.iter().copied().find(|&c| {
                held.is_some() && p.args.get(c).is_some_and(|a| a.is_some() && *a == held)
            });
            match param {
                Some(param) => {
                    let moved = &mut self.params[p.function][param].moved;
                    if !moved_params.contains(&param) {
                        moved.calls += 1;
                        moved_params.push(param);
                    }
                    moved.objects += 1;
                    moved.bytes += site.size;
                }
                None => self.unverified_moves += 1,
            }
        }
        let params = self.params_of(p.function);
        if let Some(out) = &mut self.events {
            let evidence = CallEvidence {
                kind: "call",
                function: &self.plan.traced[p.function].function.name,
                goid: hit.goid,
                pointee: params
                    .iter()
                    .zip(&p.pointees)
                    .map(|(q, r)| (q.name.as_str(), *r))
                    .collect(),
                moved_to_heap: moved_params
                    .iter()
                    .map(|&i| params[i].name.as_str())
                    .collect(),
                heap_objects: p.objects,
                heap_bytes: p.bytes,
            };
            writeln!(out, "{}", serde_json::to_string(&evidence)?)?;
        }
        Ok(())
    }

    /// The view so far: a row per parameter of each traced function, the heap cost per
    /// function, and what could not be paired or verified.
    pub fn view(&self) -> ParamsView {
        let mut rows = Vec::new();
        for (index, traced) in self.plan.traced.iter().enumerate() {
            let params = self.params_of(index);
            for (i, (param, stats)) in params.iter().zip(&self.params[index]).enumerate() {
                // A shape function's dictionary is the compiler's, not the source's.
                if param.name == ".dict" {
                    continue;
                }
                let verdict = if stats.calls == 0 {
                    Verdict::NotCalled
                } else if stats.moved.calls > 0 {
                    Verdict::MovedToHeap
                } else if stats.has_pointer {
                    stats.pointee.verdict()
                } else if param.location.to_string().contains("stack") {
                    Verdict::Stack
                } else {
                    Verdict::Registers
                };
                rows.push(ParamRow {
                    function: traced.function.name.clone(),
                    param: param.name.clone(),
                    go_type: param.ty.name.clone(),
                    location: param.location.to_string(),
                    calls: stats.calls,
                    pointee: (stats.has_pointer && stats.pointee.total() > 0)
                        .then_some(stats.pointee),
                    moved_to_heap: stats.moved,
                    static_moved_to_heap: self.probes.static_moves.contains(&(index, i)),
                    verdict,
                });
            }
        }
        let heap = self
            .plan
            .traced
            .iter()
            .zip(&self.functions)
            .map(|(t, f)| FunctionHeap {
                function: t.function.name.clone(),
                calls: f.calls,
                objects: f.objects,
                bytes: f.bytes,
                own_objects: f.own_objects,
            })
            .collect();
        ParamsView {
            rows,
            heap,
            in_flight: self.calls.in_flight(),
            unmatched_returns: self.calls.unmatched_returns,
            unverified_moves: self.unverified_moves,
            allocator_probes: self
                .probes
                .placed
                .iter()
                .map(|(f, e)| (f.clone(), e.to_string()))
                .collect(),
        }
    }
}

impl<W: std::io::Write> EventSink for ParamTracker<'_, W> {
    fn event(&mut self, event: &CallEvent) -> anyhow::Result<()> {
        self.handle(event)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(out) = &mut self.events {
            out.flush()?;
        }
        Ok(())
    }

    fn prints_events(&self) -> bool {
        self.events.is_some()
    }
}

/// Whether a value of this kind holds a pointer word somewhere.
fn has_pointer(kind: &TypeKind) -> bool {
    match kind {
        TypeKind::Pointer | TypeKind::String | TypeKind::Slice | TypeKind::Interface { .. } => true,
        TypeKind::Struct(fields) => fields.iter().any(|f| has_pointer(&f.ty.kind)),
        TypeKind::Array { elem, len } => *len > 0 && has_pointer(&elem.kind),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_most_calls_saw_decides() {
        let mut p = Pointees::default();
        p.add(Region::Stack);
        p.add(Region::Heap);
        p.add(Region::Heap);
        assert_eq!(p.verdict(), Verdict::PointeeHeap);
        p.add(Region::Stack);
        assert_eq!(p.verdict(), Verdict::PointeeHeap, "a tie goes to the heap");
        p.add(Region::Rodata);
        p.add(Region::Rodata);
        p.add(Region::Rodata);
        assert_eq!(p.verdict(), Verdict::PointeeGlobal);
    }
}
