//! The `params` view: for each parameter of the traced functions, where its value really went
//! over the observed calls. Pointers are classified by what they point into (the goroutine's
//! stack, the heap, the binary's globals); a parameter the function itself moved to the heap is
//! caught twice: statically, by the function's own call to the allocator with the parameter's
//! type, and at run time, by that call's new object holding the argument's value when the
//! function returns.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use probe_common::{
    ALLOCATOR_MALLOC, ALLOCATOR_NEWOBJECT, AddressRange, CallEvent, CallHeap, CallStats, EventKind,
    INT_ARG_REGS, MAX_ADDRESS_RANGES, MAX_MOVE_BYTES, MAX_MOVE_CANDIDATES, MAX_MOVE_PIECES,
    MAX_PARAMS, MAX_POINTER_PARAMS, MoveCheck, MovePiece, NO_WORD, PAGE_SHIFT, POINTEE_GLOBAL,
    POINTEE_HEAP, POINTEE_REGIONS, POINTEE_UNKNOWN, ParamProbe, PointerParam, ProbeConfig,
    SAVED_WORDS, Unplaced,
};
use serde::{Deserialize, Serialize};

use crate::model::calls::{Calls, Entered, Hit, Left, stack_depth};
use crate::model::decode::{Decoder, Region};
use crate::probes::attach::AddressRanges;
use crate::probes::placement::{self, AllocationCall, Allocator};
use crate::probes::plan::{
    EntrySite, PlacementMode, Placer, Plan, PointOwner, ProbeKind, SIZE_SPECIALIZED_MALLOCS,
};
use crate::probes::snapshot::KernelCounts;
use crate::sink::EventSink;
use crate::tracee::gobin::abi::{Location, Reg};
use crate::tracee::gobin::types::{GoType, TypeKind};
use crate::tracee::gobin::{Function, GoBinary, Param};
use crate::tracee::process::{Mapping, Process};

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
                .functions_named(SIZE_SPECIALIZED_MALLOCS)
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
        let placer = Placer {
            binary,
            mode: PlacementMode::Fast,
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
                    let mut config = ProbeConfig::default();
                    config.params.moved = move_check(&sig.params, &site);
                    probes
                        .move_sites
                        .insert(plan.points.len() as u32, site.clone());
                    plan.points.push(placer.point(
                        &function.name,
                        PointOwner::Traced(index),
                        ProbeKind::Allocated,
                        (call.after, 0),
                        config,
                    )?);
                }
            }
            let keep_words = probes.static_moves.iter().any(|&(f, _)| f == index);
            let params = entry_params(&function, &sig.params, keep_words);
            for point in &mut plan.points {
                if point.kind == ProbeKind::Entry && point.owner == PointOwner::Traced(index) {
                    point.config.params = params;
                }
            }
        }
        if !with_allocator {
            return Ok(probes);
        }
        for (function, _) in &functions {
            let (entry, _) = placer.place(function)?;
            let is_newobject = function.name == "runtime.newobject";
            let mut config = ProbeConfig::default();
            config.params.allocator = if is_newobject {
                ALLOCATOR_NEWOBJECT
            } else {
                ALLOCATOR_MALLOC
            };
            let owner = PointOwner::Allocator;
            let kind = ProbeKind::Allocating;
            for point in placer.entry_points(&function.name, owner, kind, &entry, config)? {
                probes
                    .allocators
                    .insert(plan.points.len() as u32, is_newobject);
                plan.points.push(point);
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

/// Whether the kernel can work out `plan`'s parameters: it keeps at most `MAX_PARAMS` of a
/// function, and classifies at most `MAX_POINTER_PARAMS` pointers it finds in whole words.
pub fn fits_the_kernel(plan: &Plan) -> anyhow::Result<()> {
    for index in 0..plan.traced.len() {
        let name = &plan.traced[index].function.name;
        let params = params_of(plan, index);
        anyhow::ensure!(
            params.len() <= MAX_PARAMS,
            "{name} takes {} parameters, more than the {MAX_PARAMS} escapade params follows \
             in the kernel: add --events to follow them from an event per call",
            params.len()
        );
        let mut pointers = 0;
        for param in params.iter().filter(|p| has_pointer(&p.ty.kind)) {
            pointers += 1;
            let located = first_pointer(&param.ty).and_then(|at| word_at(&param.location, at));
            anyhow::ensure!(
                located.is_some(),
                "{name}: the pointer in parameter {} does not arrive as a whole word: add \
                 --events to follow it from an event per call",
                param.name
            );
        }
        anyhow::ensure!(
            pointers <= MAX_POINTER_PARAMS,
            "{name} takes {pointers} parameters holding pointers, more than the \
             {MAX_POINTER_PARAMS} escapade params classifies in the kernel: add --events to \
             classify them from an event per call"
        );
    }
    Ok(())
}

/// What an entry probe of `function` works out in the kernel: where each parameter's first
/// pointer word arrives, and whether to keep the argument words for the move checks.
fn entry_params(function: &Function, params: &[Param], keep_words: bool) -> ParamProbe {
    let mut probe = ParamProbe {
        keep_words: u32::from(keep_words),
        code_start: function.entry,
        code_end: function.end,
        ..ParamProbe::default()
    };
    let pointers = params.iter().enumerate().filter_map(|(i, param)| {
        let word = word_at(&param.location, first_pointer(&param.ty)?)?;
        Some(PointerParam {
            param: i as u8,
            word,
        })
    });
    for (slot, pointer) in probe.pointers.iter_mut().zip(pointers) {
        *slot = pointer;
    }
    probe
}

/// The offset of a value's first pointer word, in layout order: the one whose region the
/// view reports (see [`crate::model::decode::Value::pointee`]).
fn first_pointer(ty: &GoType) -> Option<u64> {
    match &ty.kind {
        TypeKind::Pointer | TypeKind::String | TypeKind::Slice => Some(0),
        // The data word; the first is the type's.
        TypeKind::Interface { .. } => Some(8),
        TypeKind::Struct(fields) => fields
            .iter()
            .find_map(|f| Some(f.offset + first_pointer(&f.ty)?)),
        TypeKind::Array { elem, len } if *len > 0 => first_pointer(elem),
        _ => None,
    }
}

/// The entry word (a register, or a word of the argument area) holding the whole 8-byte word
/// at `offset` into a value at `location`.
fn word_at(location: &Location, offset: u64) -> Option<u8> {
    match location {
        Location::Nowhere => None,
        Location::Registers(pieces) => pieces.iter().find_map(|p| match p.reg {
            Reg::Int(i) if p.offset == offset && p.size == 8 => Some(i),
            _ => None,
        }),
        Location::Stack { offset: start } => {
            let at = start + offset;
            let word = INT_ARG_REGS as u64 + at / 8;
            (at.is_multiple_of(8) && word < u64::from(NO_WORD)).then_some(word as u8)
        }
    }
}

/// How the kernel tells, at the return, which of `site`'s candidate parameters a new object
/// holds: the pieces of each candidate's value among the words an entry keeps. Candidates it
/// cannot compare (a float register, past the kept words, too big) are left out, and an
/// object none of the rest matches counts as unverified, as in userspace.
fn move_check(params: &[Param], site: &MoveSite) -> MoveCheck {
    let mut check = MoveCheck {
        size: site.size as u32,
        ..MoveCheck::default()
    };
    if site.size as usize > MAX_MOVE_BYTES {
        return check;
    }
    for &candidate in &site.candidates {
        let n = check.candidates as usize;
        if n == MAX_MOVE_CANDIDATES {
            break;
        }
        let Some(pieces) = move_pieces(&params[candidate]) else {
            continue;
        };
        check.params[n] = candidate as u32;
        check.pieces[n] = pieces;
        check.candidates += 1;
    }
    check
}

fn move_pieces(param: &Param) -> Option<[MovePiece; MAX_MOVE_PIECES]> {
    let mut pieces = Vec::new();
    match &param.location {
        Location::Nowhere => return None,
        Location::Registers(regs) => {
            for p in regs {
                let Reg::Int(i) = p.reg else {
                    return None;
                };
                pieces.push((i as usize, p.offset, p.size));
            }
        }
        Location::Stack { offset } if offset % 8 == 0 => {
            for at in (0..param.ty.size).step_by(8) {
                let word = INT_ARG_REGS + ((offset + at) / 8) as usize;
                pieces.push((word, at, (param.ty.size - at).min(8)));
            }
        }
        Location::Stack { .. } => return None,
    }
    if pieces.len() > MAX_MOVE_PIECES || pieces.iter().any(|&(word, ..)| word >= SAVED_WORDS) {
        return None;
    }
    let mut out = [MovePiece::default(); MAX_MOVE_PIECES];
    for (slot, (word, offset, size)) in out.iter_mut().zip(pieces) {
        *slot = MovePiece {
            word: word as u8,
            offset: offset as u8,
            size: size as u8,
            _pad: 0,
        };
    }
    Some(out)
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
        params_of(self.plan, function)
    }

    fn handle(&mut self, e: &CallEvent) -> anyhow::Result<()> {
        let Some(point) = self.plan.points.get(e.probe_id as usize) else {
            return Ok(());
        };
        let Some(kind) = EventKind::from_u32(e.kind) else {
            return Ok(());
        };
        match (kind, Hit::of(e, point)) {
            (EventKind::Entry, Some(hit)) => self.enter(e, hit),
            (EventKind::Return, Some(hit)) => self.leave(hit)?,
            (EventKind::Allocated, Some(hit)) => {
                if let Some((depth, open)) = self.calls.innermost(e.goid, hit.depth)
                    && open.function == hit.function
                    && let Some(p) = self.pending.get_mut(&(e.goid, depth))
                {
                    p.moved.push((e.regs[0], e.probe_id));
                }
            }
            (EventKind::Allocating, _) => self.allocating(e),
            (_, None) => {}
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

    fn allocating(&mut self, e: &CallEvent) {
        let Some(&is_newobject) = self.probes.allocators.get(&e.probe_id) else {
            return;
        };
        let Some((depth, open)) = self.calls.innermost(e.goid, stack_depth(e)) else {
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
        Counted {
            params: &self.params,
            functions: &self.functions,
            in_flight: self.calls.in_flight() as u64,
            unmatched_returns: self.calls.unmatched_returns,
            unverified_moves: self.unverified_moves,
        }
        .view(self.plan, self.probes)
    }
}

/// What a params session counted, in userspace or in the kernel.
struct Counted<'a> {
    /// Per traced function, per parameter.
    params: &'a [Vec<ParamStats>],
    functions: &'a [FunctionStats],
    in_flight: u64,
    unmatched_returns: u64,
    unverified_moves: u64,
}

impl Counted<'_> {
    fn view(&self, plan: &Plan, probes: &AllocationProbes) -> ParamsView {
        let mut rows = Vec::new();
        for (index, traced) in plan.traced.iter().enumerate() {
            let params = params_of(plan, index);
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
                    static_moved_to_heap: probes.static_moves.contains(&(index, i)),
                    verdict,
                });
            }
        }
        let heap = plan
            .traced
            .iter()
            .zip(self.functions)
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
            in_flight: self.in_flight as usize,
            unmatched_returns: self.unmatched_returns,
            unverified_moves: self.unverified_moves,
            allocator_probes: probes
                .placed
                .iter()
                .map(|(f, e)| (f.clone(), e.to_string()))
                .collect(),
        }
    }
}

fn params_of(plan: &Plan, function: usize) -> &[Param] {
    plan.traced[function]
        .function
        .signature
        .as_ref()
        .map_or(&[][..], |s| &s.params[..])
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

/// `params` worked out in the kernel ([`crate::probes::attach::Programs::Params`]): no event per
/// call. While the session runs it keeps the kernel's map of the process's memory current, so
/// that the probes can tell heap pointers from others.
pub struct KernelParams<'a> {
    binary: &'a GoBinary,
    process: &'a Process,
    bias: u64,
    memory: AddressRanges,
    written: Option<Vec<AddressRange>>,
    followed: std::time::Instant,
    /// Pointers the kernel left for userspace to place (`KernelCounts::unplaced`): how many of
    /// each were placed so far, and where they went, per `PARAM_STATS` slot.
    placed: HashMap<Unplaced, u64>,
    pointees: HashMap<u64, [u64; POINTEE_REGIONS]>,
}

/// How often the kernel's map of the process's memory is brought up to date: the heap grows
/// by reserving address space, and a pointer into memory reserved since counts as unknown.
const FOLLOW_MEMORY: std::time::Duration = std::time::Duration::from_millis(100);

impl<'a> KernelParams<'a> {
    /// For probes attached with the process's memory as [`address_ranges`] read it, which
    /// it keeps current in `memory`.
    pub fn new(
        binary: &'a GoBinary,
        process: &'a Process,
        bias: u64,
        memory: AddressRanges,
    ) -> Self {
        KernelParams {
            binary,
            process,
            bias,
            memory,
            written: None,
            followed: std::time::Instant::now(),
            placed: HashMap::new(),
            pointees: HashMap::new(),
        }
    }

    /// Places the pointers the kernel could not, with the process's memory as it is now: Go
    /// does not give its heap's address space back, so memory mapped since the kernel's
    /// ranges were written is mapped still.
    fn place_pointers(&mut self, counts: &KernelCounts) -> anyhow::Result<()> {
        let unplaced = counts.unplaced()?;
        let mut ranges = None;
        for (key, count) in unplaced {
            let placed = self.placed.entry(key).or_default();
            // An entry the map evicted and made again counts from 0.
            let new = if count >= *placed {
                count - *placed
            } else {
                count
            };
            *placed = count;
            if new == 0 {
                continue;
            }
            if ranges.is_none() {
                ranges = Some(
                    address_ranges(self.binary, self.process, self.bias)
                        .unwrap_or_else(|_| self.written.clone().unwrap_or_default()),
                );
            }
            let addr = key.page << PAGE_SHIFT;
            let region = ranges
                .iter()
                .flatten()
                .find(|r| r.start <= addr && addr < r.end)
                .map_or(POINTEE_UNKNOWN, |r| r.region as usize);
            self.pointees.entry(key.slot).or_default()[region] += new;
        }
        Ok(())
    }

    /// Writes the process's memory regions into the kernel if they changed.
    fn follow_memory(&mut self) -> anyhow::Result<()> {
        self.followed = std::time::Instant::now();
        // The process may be gone: the session notices and ends.
        let Ok(ranges) = address_ranges(self.binary, self.process, self.bias) else {
            return Ok(());
        };
        if self.written.as_ref() != Some(&ranges) {
            self.memory.write(&ranges)?;
            self.written = Some(ranges);
        }
        Ok(())
    }

    /// The view from what the kernel counted. `in_flight` is the calls still running.
    pub fn view(
        &mut self,
        plan: &Plan,
        probes: &AllocationProbes,
        counts: &KernelCounts,
        in_flight: u64,
    ) -> anyhow::Result<ParamsView> {
        let functions = plan.traced.len();
        let calls = counts.call_stats(functions)?;
        let heap = counts.call_heap(functions)?;
        let mut kernel = counts.param_stats(functions)?;
        self.place_pointers(counts)?;
        for (&slot, placed) in &self.pointees {
            if let Some(stats) = kernel.get_mut(slot as usize) {
                for (total, n) in stats.pointees.iter_mut().zip(placed) {
                    *total += n;
                }
            }
        }
        let params: Vec<Vec<ParamStats>> = (0..functions)
            .map(|f| {
                params_of(plan, f)
                    .iter()
                    .enumerate()
                    .map(|(i, param)| {
                        let k = kernel.get(f * MAX_PARAMS + i).copied().unwrap_or_default();
                        let [nil, stack, heap, global, unknown] = k.pointees;
                        ParamStats {
                            calls: calls[f].entries,
                            pointee: Pointees {
                                nil,
                                stack,
                                heap,
                                global,
                                unknown,
                            },
                            has_pointer: has_pointer(&param.ty.kind),
                            moved: Moved {
                                calls: k.moved_calls,
                                objects: k.moved_objects,
                                bytes: k.moved_bytes,
                            },
                        }
                    })
                    .collect()
            })
            .collect();
        let function_stats: Vec<FunctionStats> = calls
            .iter()
            .zip(&heap)
            .map(|(c, h): (&CallStats, &CallHeap)| FunctionStats {
                calls: c.returns,
                objects: h.objects,
                bytes: h.bytes,
                own_objects: h.own_objects,
            })
            .collect();
        Ok(Counted {
            params: &params,
            functions: &function_stats,
            in_flight,
            unmatched_returns: heap.iter().map(|h| h.unmatched_returns).sum(),
            unverified_moves: heap.iter().map(|h| h.unverified_moves).sum(),
        }
        .view(plan, probes))
    }
}

impl EventSink for KernelParams<'_> {
    /// Nothing is sent per call.
    fn event(&mut self, _event: &CallEvent) -> anyhow::Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    fn checkpoint(&mut self, counts: &KernelCounts) -> anyhow::Result<()> {
        if self.followed.elapsed() >= FOLLOW_MEMORY {
            self.follow_memory()?;
            self.place_pointers(counts)?;
        }
        Ok(())
    }
}

/// The process's memory as the kernel classifies pointers (`POINTEE_*`), sorted: the binary's
/// sections (globals), and its anonymous mappings outside them (Go's heap arenas reserve such
/// memory), as [`Decoder::region`] tells them apart.
pub fn address_ranges(
    binary: &GoBinary,
    process: &Process,
    bias: u64,
) -> anyhow::Result<Vec<AddressRange>> {
    let maps = process.current_maps()?;
    let sections: Vec<(u64, u64)> = binary
        .sections
        .iter()
        .filter(|s| s.size > 0)
        .map(|s| (s.addr + bias, s.addr + s.size + bias))
        .collect();
    Ok(ranges_of(sections, &maps))
}

/// `sections` as run-time `[start, end)`.
fn ranges_of(mut sections: Vec<(u64, u64)>, maps: &[Mapping]) -> Vec<AddressRange> {
    sections.sort_unstable();
    // Sections can overlap (.tbss), which a binary search cannot have.
    let mut globals: Vec<(u64, u64)> = Vec::new();
    for (start, end) in sections {
        match globals.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => globals.push((start, end)),
        }
    }
    let range = |(start, end): (u64, u64), region: usize| AddressRange {
        start,
        end,
        region: region as u64,
    };
    let mut all: Vec<AddressRange> = globals.iter().map(|&g| range(g, POINTEE_GLOBAL)).collect();
    for m in maps.iter().filter(|m| m.path.is_empty()) {
        // The parts of the mapping no section covers (.bss sits in anonymous memory).
        let mut start = m.start;
        for &(s, e) in globals.iter().filter(|&&(s, e)| s < m.end && e > m.start) {
            if start < s {
                all.push(range((start, s), POINTEE_HEAP));
            }
            start = start.max(e);
        }
        if start < m.end {
            all.push(range((start, m.end), POINTEE_HEAP));
        }
    }
    all.sort_unstable_by_key(|r| r.start);
    let mut merged: Vec<AddressRange> = Vec::new();
    for r in all {
        match merged.last_mut() {
            Some(last) if last.end == r.start && last.region == r.region => last.end = r.end,
            _ => merged.push(r),
        }
    }
    if merged.len() > MAX_ADDRESS_RANGES as usize {
        tracing::debug!(
            "{} memory ranges, the kernel classifies pointers into the first {MAX_ADDRESS_RANGES}",
            merged.len()
        );
        merged.truncate(MAX_ADDRESS_RANGES as usize);
    }
    merged
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

    fn anonymous(start: u64, end: u64) -> Mapping {
        Mapping {
            start,
            end,
            writable: true,
            offset: 0,
            path: String::new(),
        }
    }

    #[test]
    fn memory_ranges_are_sorted_disjoint_and_sections_win() {
        let range = |start, end, region: usize| AddressRange {
            start,
            end,
            region: region as u64,
        };
        // .data and .bss touching, .tbss inside .data, .bss inside the anonymous mapping
        // after the file's; then the heap.
        let sections = vec![(0x5000, 0x5800), (0x5100, 0x5108), (0x5800, 0x6400)];
        let maps = [anonymous(0x6000, 0x7000), anonymous(0xc000, 0xd000)];
        let mut file = anonymous(0x4000, 0x6000);
        file.path = "/bin/prog".into();
        assert_eq!(
            ranges_of(sections, &[file, maps[0].clone(), maps[1].clone()]),
            [
                range(0x5000, 0x6400, POINTEE_GLOBAL),
                range(0x6400, 0x7000, POINTEE_HEAP),
                range(0xc000, 0xd000, POINTEE_HEAP),
            ]
        );
    }

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
