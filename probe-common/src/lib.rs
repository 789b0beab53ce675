//! Layouts shared by the eBPF probes (`probe-ebpf`) and the tracer (`escapade`).
//!
//! Everything here is `#[repr(C)]` and `Copy` so the same bytes mean the same thing on both sides
//! of the ring buffer and the BPF maps. With the `user` feature the types implement `aya::Pod`.
#![no_std]

/// Go's ABIInternal passes integer words in RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11.
pub const INT_ARG_REGS: usize = 9;

/// Stack words copied from the caller's argument area (from SP+8 on), per event.
/// Arguments that do not fit in registers, and results that do not fit, live there.
pub const MAX_STACK_WORDS: usize = 32;

/// How many strings one probe may capture, and how many bytes of each at most.
pub const MAX_STRING_CAPTURES: usize = 4;
pub const STRING_CAPTURE_BYTES: usize = 64;

/// Number of probe slots in the `PROBE_CONFIGS` array.
pub const MAX_PROBES: u32 = 8192;

/// `TARGET_TGID` for probes that serve every process running their file (no PID is this high).
pub const EVERY_PROCESS: u32 = u32::MAX;

/// The event ring buffer's size in bytes: about 25,000 events, enough to ride out a slow drain
/// (the detach at the end of a session blocks the reader) at a few hundred thousand events a
/// second.
pub const EVENTS_BYTES: u32 = 16 << 20;

/// The attach cookie carries the probe id in its low 32 bits and these flags above.
pub const COOKIE_FLAGS_SHIFT: u32 = 32;
/// The probe sits on the conditional branch of the stack-bound check: when CF or ZF is set the
/// function is about to call `morestack` and will run its prologue again, so the hit is dropped.
pub const COOKIE_SKIP_IF_BELOW_OR_EQUAL: u64 = 1 << COOKIE_FLAGS_SHIFT;
/// The probe sits on a `CALL` to the function rather than in it: the return address is not pushed
/// yet, so the callee's SP is SP-8 and the argument area starts at SP.
pub const COOKIE_AT_CALL_SITE: u64 = 2 << COOKIE_FLAGS_SHIFT;
/// A return probe in the caller, on the first instruction after one direct call site that the
/// kernel emulates: the call has returned, SP is the callee's entry SP + 8, and the call it
/// closes is the one entered from `ProbeConfig::return_site`. Other paths through the same
/// instruction are not returns.
pub const COOKIE_AT_RETURN_SITE: u64 = 4 << COOKIE_FLAGS_SHIFT;
/// An entry probe of a function that every call returns from through a return site: it is
/// called only directly and each of its call sites has one. The entry then need not look its
/// return address up in `FAST_RETURNS`.
pub const COOKIE_RETURNS_AT_SITES: u64 = 8 << COOKIE_FLAGS_SHIFT;

/// x86 `EFLAGS` bits read from `pt_regs.flags`.
pub const EFLAGS_CF: u64 = 1 << 0;
pub const EFLAGS_ZF: u64 = 1 << 6;

/// What kind of instruction a probe sits on, as seen by the tracer.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A traced function was entered: registers hold its arguments.
    Entry = 1,
    /// A traced function is about to return: registers hold its results.
    Return = 2,
    /// The runtime's allocator was entered (`runtime.newobject`, `runtime.mallocgc`) by a
    /// goroutine inside a traced function: registers hold the allocator's arguments.
    Allocating = 3,
    /// A traced function's own `CALL runtime.newobject` just returned: RAX is the new object.
    Allocated = 4,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Entry),
            2 => Some(Self::Return),
            3 => Some(Self::Allocating),
            4 => Some(Self::Allocated),
            _ => None,
        }
    }
}

/// Goroutines the kernel tracks: inside a traced function at once (`ACTIVE_CALLS`), or that
/// made traced calls, per process (`INNERMOST_CALL`).
pub const MAX_ACTIVE_GOROUTINES: u32 = 65_536;

/// Where a string to capture sits, as indices into the event's word array:
/// `0..INT_ARG_REGS` are the integer registers, `INT_ARG_REGS..` the stack words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StringCapture {
    pub ptr_word: u8,
    pub len_word: u8,
    /// 0 means this slot is unused.
    pub enabled: u8,
    pub _pad: u8,
}

/// Per-probe settings, indexed by the probe id in the attach cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    /// How many words of the argument area to copy (0..=MAX_STACK_WORDS).
    pub stack_words: u32,
    /// How many bytes of each captured string to copy (0..=STRING_CAPTURE_BYTES).
    pub string_bytes: u32,
    pub strings: [StringCapture; MAX_STRING_CAPTURES],
    /// For entry and return probes, the traced function's index (into `CALL_STATS`).
    pub function: u32,
    /// 1 when the function's returns are probed too, so that its calls can be timed; without
    /// them (`--entries-only`, a function without a `RET`) the kernel only counts entries.
    pub timed: u32,
    /// 1 when the function's `RET`s are probed, so that every call's return is seen; 0 when
    /// only the return sites in `FAST_RETURNS` are.
    pub ret_probed: u32,
    /// For tail capture of failing calls (`--errors`): 1 + the integer result register that
    /// holds the type word of the function's last result, an `error`; 0 when it has none.
    pub error_word: u32,
    /// For a probe at a return site (`COOKIE_AT_RETURN_SITE`): the link-time return address of
    /// the call it closes.
    pub return_site: u64,
    /// For a probe at a return site: where each integer result register's value is by then
    /// (the caller may have moved it between the return and the probe).
    pub results: [ResultSource; INT_ARG_REGS],
    /// What `escapade params` has the probe work out in the kernel.
    pub params: ParamProbe,
}

/// Parameters one traced function takes at most under `escapade params` in the kernel
/// (`PARAM_STATS` holds this many slots per function).
pub const MAX_PARAMS: usize = 32;

/// Where a parameter's pointer points, as the kernel classifies it (`ParamStats::pointees`).
pub const POINTEE_NIL: usize = 0;
pub const POINTEE_STACK: usize = 1;
pub const POINTEE_HEAP: usize = 2;
/// The binary's code, data, bss or read-only data.
pub const POINTEE_GLOBAL: usize = 3;
pub const POINTEE_UNKNOWN: usize = 4;
pub const POINTEE_REGIONS: usize = 5;

/// Ends the list of `ParamProbe::pointers`.
pub const NO_WORD: u8 = u8::MAX;

/// Stack words of the argument area an entry keeps for the move checks at the return, after
/// the registers (`OpenParams::words`).
pub const SAVED_STACK_WORDS: usize = 16;
pub const SAVED_WORDS: usize = INT_ARG_REGS + SAVED_STACK_WORDS;

/// Objects a function makes for its parameters that one call checks at its return; more are
/// counted as unverified.
pub const MAX_MOVED: usize = 4;
/// A parameter moved to the heap is checked only when it takes at most this many bytes, in at
/// most this many pieces.
pub const MAX_MOVE_BYTES: usize = 64;
pub const MAX_MOVE_PIECES: usize = 8;
/// Parameters of one allocated type a move check compares the new object with.
pub const MAX_MOVE_CANDIDATES: usize = 2;

/// Address ranges the kernel classifies pointers by (`ADDRESS_RANGES`): the binary's sections
/// and the process's anonymous mappings, merged.
pub const MAX_ADDRESS_RANGES: u32 = 128;

/// `ParamProbe::allocator`: which allocator an `Allocating` probe sits on.
pub const ALLOCATOR_NEWOBJECT: u32 = 1;
/// `runtime.mallocgc` or one of Go 1.27's size-specialized allocators.
pub const ALLOCATOR_MALLOC: u32 = 2;

/// Per-probe settings of `escapade params` in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamProbe {
    /// On a traced function's entry: the parameters holding a pointer, and where the first
    /// pointer word of each arrives; `NO_WORD` ends the list.
    pub pointers: [PointerParam; MAX_POINTER_PARAMS],
    /// On an entry: 1 to keep the argument words in `OpenParams::words` for the move checks.
    pub keep_words: u32,
    /// On an allocator's entry: `ALLOCATOR_*`.
    pub allocator: u32,
    /// On an entry: the function's link-time code range, to tell its own allocations.
    pub code_start: u64,
    pub code_end: u64,
    /// After a traced function's own call to the allocator: how to tell which parameter the
    /// new object holds at the function's return.
    pub moved: MoveCheck,
}

/// Parameters holding a pointer that the kernel classifies, per function.
pub const MAX_POINTER_PARAMS: usize = 12;

/// A parameter's first pointer word: `word` indexes the registers (`0..INT_ARG_REGS`), then
/// the argument area's words.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointerParam {
    pub param: u8,
    pub word: u8,
}

impl PointerParam {
    pub const NONE: PointerParam = PointerParam {
        param: 0,
        word: NO_WORD,
    };
}

impl Default for ParamProbe {
    fn default() -> Self {
        ParamProbe {
            pointers: [PointerParam::NONE; MAX_POINTER_PARAMS],
            keep_words: 0,
            allocator: 0,
            code_start: 0,
            code_end: 0,
            moved: MoveCheck::default(),
        }
    }
}

/// Compares a new object with the parameters of its type: the first whose bytes it holds was
/// moved to the heap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MoveCheck {
    /// The object's size in bytes (0: no check here).
    pub size: u32,
    /// How many of `params` and `pieces` are used.
    pub candidates: u32,
    pub params: [u32; MAX_MOVE_CANDIDATES],
    /// Per candidate, where each piece of its value was at entry.
    pub pieces: [[MovePiece; MAX_MOVE_PIECES]; MAX_MOVE_CANDIDATES],
}

/// `size` bytes at `offset` into a parameter's value, taken from the low bytes of the kept
/// entry word `word` (`OpenParams::words`); size 0 ends the list.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MovePiece {
    pub word: u8,
    pub offset: u8,
    pub size: u8,
    pub _pad: u8,
}

/// One parameter of a traced function, over its calls (`PARAM_STATS`, per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamStats {
    /// Calls whose pointer pointed into each `POINTEE_*` region.
    pub pointees: [u64; POINTEE_REGIONS],
    /// Calls in which a new object held the argument's value at the return, those objects
    /// and their bytes.
    pub moved_calls: u64,
    pub moved_objects: u64,
    pub moved_bytes: u64,
}

/// Heap allocations made inside one traced function's calls (`CALL_HEAP`, per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallHeap {
    pub objects: u64,
    pub bytes: u64,
    /// Of `objects`, those the function's own code asked for.
    pub own_objects: u64,
    /// Objects made with a parameter's type that held none of the arguments at the return.
    pub unverified_moves: u64,
    /// Returns on a `RET` whose entry the kernel did not see (running at attach).
    pub unmatched_returns: u64,
}

/// A traced call in flight under `escapade params` in the kernel (`OPEN_PARAMS`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OpenParams {
    pub function: u32,
    /// How many of `moved_addrs` are used.
    pub moved: u32,
    /// The function's run-time code range.
    pub code_start: u64,
    pub code_end: u64,
    pub objects: u64,
    pub bytes: u64,
    pub own_objects: u64,
    /// The argument words at entry, for the move checks (`ParamProbe::keep_words`).
    pub words: [u64; SAVED_WORDS],
    /// Objects the function made for its parameters, and the probe that saw each made.
    pub moved_addrs: [u64; MAX_MOVED],
    pub moved_probes: [u32; MAX_MOVED],
}

/// A pointer the kernel could not place in `ADDRESS_RANGES` (memory mapped since userspace
/// last wrote them): its `PARAM_STATS` slot and the page it points into, for userspace to
/// place (`UNPLACED`, counted per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Unplaced {
    pub slot: u64,
    pub page: u64,
}

/// Distinct (slot, page) pairs waiting for userspace to place them.
pub const MAX_UNPLACED: u32 = 16_384;
pub const PAGE_SHIFT: u64 = 12;

/// `[start, end)` of the traced process's memory holding one `POINTEE_*` region.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRange {
    pub start: u64,
    pub end: u64,
    pub region: u64,
}

impl AddressRange {
    /// What unused slots hold: sorted past every address.
    pub const UNUSED: AddressRange = AddressRange {
        start: u64::MAX,
        end: u64::MAX,
        region: POINTEE_UNKNOWN as u64,
    };
}

/// Where a return-site probe finds one integer result word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResultSource {
    /// `RESULT_*`.
    pub kind: u32,
    /// For `RESULT_IN_REGISTER`, an index into [`RESULT_REGISTERS`]; for `RESULT_ON_STACK`,
    /// the byte offset from the caller's SP.
    pub at: u32,
}

/// Still in its own register, or not a result at all.
pub const RESULT_AS_IS: u32 = 0;
pub const RESULT_IN_REGISTER: u32 = 1;
pub const RESULT_ON_STACK: u32 = 2;
/// The caller overwrote it without keeping it: it never saw the value.
pub const RESULT_DISCARDED: u32 = 3;

/// The registers a result can be moved to, in `ResultSource::at` order: Go's nine integer
/// argument registers, then RDX, RBP, R12, R13 and R15 (not RSP, nor R14, which holds g).
pub const RESULT_REGISTERS: usize = 14;

/// Calls whose entry event the kernel holds under tail capture, waiting for their return
/// (`HELD_ENTRIES`); the least recently entered go first.
pub const MAX_HELD_ENTRIES: u32 = 8192;

/// Call sites whose return is probed in the caller (`FAST_RETURNS`, keyed by link-time return
/// address).
pub const MAX_FAST_RETURNS: u32 = 65_536;

/// Traced functions the kernel counts and times calls of (`CALL_STATS`).
pub const MAX_TRACED_FUNCTIONS: u32 = 4096;

/// Calls entered and not returned yet whose parameters the kernel keeps (`OPEN_PARAMS`); the
/// least recently entered go first when it is full.
pub const MAX_OPEN_CALLS: u32 = 65_536;

/// Calls entered and not returned yet whose entry time the kernel keeps apart from their
/// goroutine's (`CALL_STARTS`): nested deeper than `INLINE_OPEN_CALLS` traced calls, or of a
/// goroutine past `MAX_ACTIVE_GOROUTINES`. The least recently entered go first when it is full.
pub const MAX_DEEP_CALLS: u32 = 16_384;

/// Log2 latency buckets: bucket `i` counts calls that took `[2^i, 2^(i+1))` ns (bucket 0 also
/// 0 ns; the last also anything longer, past 18 minutes).
pub const LATENCY_BUCKETS: usize = 40;

/// One traced function's calls, counted and timed by the probes in the kernel, with no event
/// per call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallStats {
    pub entries: u64,
    /// Returns whose entry the kernel saw (a call already running at attach is not counted).
    pub returns: u64,
    /// Of `returns`, those seen in the caller, at a return site; the rest were seen on a `RET`.
    pub caller_returns: u64,
    /// Entries whose return no probe would see: calls from a site without a return-site probe
    /// while the function's `RET`s are not probed (`--returns direct`).
    pub unobserved: u64,
    pub total_ns: u64,
    pub latency: [u64; LATENCY_BUCKETS],
}

impl Default for CallStats {
    fn default() -> Self {
        CallStats {
            entries: 0,
            returns: 0,
            caller_returns: 0,
            unobserved: 0,
            total_ns: 0,
            latency: [0; LATENCY_BUCKETS],
        }
    }
}

/// Something named by a number only its own process gives meaning: a `g`, a goroutine id, a
/// heap address, a GC cycle. Maps are keyed by it with the process, because the processes of one
/// non-PIE binary can share one object's maps: their heaps, and so their g's and objects, sit at
/// the same addresses, and each numbers its goroutines and GC cycles from 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InProcess {
    pub tgid: u64,
    pub key: u64,
}

/// A call entered and not returned yet: its goroutine's `g` (R14, which costs no read, unlike
/// the goroutine id) in process `tgid`, and its frame's distance from the top of the goroutine's
/// stack (`stack.hi - SP`), which survives the runtime copying the stack to grow it. The depth
/// fits 32 bits (a goroutine's stack is at most 1 GB), and the key stays 16 bytes: the probes'
/// deepest call chain has no room for more on the 512 bytes of BPF stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenCall {
    pub g: u64,
    pub tgid: u32,
    depth: u32,
}

impl OpenCall {
    pub fn new(g: u64, tgid: u32, depth: u64) -> OpenCall {
        OpenCall {
            g,
            tgid,
            depth: depth as u32,
        }
    }

    pub fn depth(&self) -> u64 {
        u64::from(self.depth)
    }

    /// The call's goroutine, the key of its per-goroutine state.
    pub fn goroutine(&self) -> InProcess {
        InProcess {
            tgid: u64::from(self.tgid),
            key: self.g,
        }
    }

    /// The call at `depth` on the same goroutine.
    pub fn at(&self, depth: u64) -> OpenCall {
        OpenCall::new(self.g, self.tgid, depth)
    }
}

/// A traced function and a return address into one of its callers (`CALLERS`, run-time).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CallerKey {
    pub function: u64,
    pub return_addr: u64,
}

/// The calls one caller made to one traced function, and the time of those that returned
/// (`CALLERS`, per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallerStats {
    pub calls: u64,
    pub total_ns: u64,
}

/// Distinct (function, caller) pairs the kernel counts calls of; more are not counted per
/// caller (their calls still are, in `CALL_STATS`).
pub const MAX_CALLERS: u32 = 16_384;

/// When an open call entered, and from where (a restarted single-stepped entry hits again
/// with the same return address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallStart {
    pub ktime_ns: u64,
    /// At the end of a session, a call still open is still running only if its goroutine is
    /// alive and its frame still holds this (a panic unwinds frames without a return).
    pub return_addr: u64,
    /// 1 when the return address is a return site in `FAST_RETURNS`: the probe there closes
    /// the call, and the callee's `RET` probe leaves it alone.
    pub at_return_site: u64,
    /// The depth of the open call this one runs inside, on the same goroutine; 0 for none.
    /// The chain lets the probes drop the calls a panic unwound.
    pub parent_depth: u64,
}

/// Open calls of one goroutine kept in its `INNERMOST_CALL` value, outermost first; deeper
/// ones go to `CALL_STARTS`. A hit then finds its call in the one value it looks up anyway:
/// an LRU map's insert, lookup and delete cost more than the rest of a call's probes together.
pub const INLINE_OPEN_CALLS: usize = 4;

/// An open call kept inline: its depth (the key it would have in `CALL_STARTS`) and start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InlineCall {
    pub depth: u64,
    pub start: CallStart,
}

/// A goroutine's open calls (`INNERMOST_CALL`): the outermost in `inline`, any deeper in
/// `CALL_STARTS`, chained by `CallStart::parent_depth`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoroutineCalls {
    /// The depth of the innermost open call, inline or not; 0 for none.
    pub innermost: u64,
    /// How many of `inline` hold a call.
    pub inline_len: u64,
    pub inline: [InlineCall; INLINE_OPEN_CALLS],
}

impl GoroutineCalls {
    /// No open call: a goroutine's value before its first.
    pub const NONE: GoroutineCalls = GoroutineCalls {
        innermost: 0,
        inline_len: 0,
        inline: [InlineCall {
            depth: 0,
            start: CallStart {
                ktime_ns: 0,
                return_addr: 0,
                at_return_site: 0,
                parent_depth: 0,
            },
        }; INLINE_OPEN_CALLS],
    };

    /// The calls held inline.
    pub fn inline(&self) -> &[InlineCall] {
        &self.inline[..(self.inline_len as usize).min(INLINE_OPEN_CALLS)]
    }
}

/// Offsets into the traced process's runtime structures, found from DWARF or the version tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoOffsets {
    /// Offset of `goid` in `runtime.g`.
    pub g_goid: u64,
    /// Offset of `stack.lo` and `stack.hi` in `runtime.g` (`stack` is its first field today).
    pub g_stack_lo: u64,
    pub g_stack_hi: u64,
    /// Which argument registers (0 = RAX, 1 = RBX, ...) of `runtime.mProf_Malloc` hold the
    /// object's address and size: Go 1.23 added an `mp *m` first.
    pub mprof_malloc_addr_reg: u64,
    pub mprof_malloc_size_reg: u64,
    /// Where `runtime.special.kind` sits, and its value for a heap-profile record.
    pub special_kind_offset: u64,
    pub special_kind_profile: u64,
    /// Offsets of `gopc` (the `go` statement's return address) and `startpc` (the function
    /// it started) in `runtime.g`, to attribute a stack growth to its `go` statement; 0 when
    /// unknown (no DWARF), and the stack-growth probe is not attached.
    pub g_gopc: u64,
    pub g_startpc: u64,
    /// Run-time address of `runtime.startingStackSize` (a uint32), 0 when unknown.
    pub starting_stack_size: u64,
    /// Run-time addresses of the runtime variables a GC cycle's record is read from, indexed
    /// by `GC_*`; 0 where unknown (no DWARF).
    pub gc_fields: [u64; GC_FIELDS],
    /// Run-time code range of `runtime.mallocgc`. Since Go 1.27 the compiler calls
    /// size-specialized allocators (`runtime.mallocgcSmallScanNoHeaderSC3`, ...) directly, and
    /// mallocgc calls them too: a call from within mallocgc is already counted there.
    pub mallocgc_start: u64,
    pub mallocgc_end: u64,
    /// Run-time address minus link-time address of the program's code (non-zero for PIE):
    /// `FAST_RETURNS` and `ProbeConfig::return_site` hold link-time addresses, so that one
    /// plan serves every process of a build.
    pub code_bias: u64,
}

/// What `runtime.gcMarkTermination` leaves behind when it returns, read into a
/// [`GcCycleRecord`]: `memstats.numgc`, then `work`'s phase start times (`nanotime`, the
/// probes' clock), the cycle's total stop-the-world pause, and the heap sizes gctrace prints.
pub const GC_NUMGC: usize = 0;
pub const GC_T_SWEEP_TERM: usize = 1;
pub const GC_T_MARK: usize = 2;
pub const GC_T_MARK_TERM: usize = 3;
pub const GC_T_END: usize = 4;
pub const GC_PAUSE_NS: usize = 5;
/// `work.heap0`: the heap when the cycle started.
pub const GC_HEAP_START: usize = 6;
/// `work.heap1`: the heap when marking ended.
pub const GC_HEAP_MARK_END: usize = 7;
/// `work.heap2`: the bytes marked live.
pub const GC_HEAP_MARKED: usize = 8;
/// `gcController.lastHeapGoal`.
pub const GC_HEAP_GOAL: usize = 9;
pub const GC_FIELDS: usize = 10;

/// One completed GC cycle (`GC_CYCLES`, keyed by its number, or by `ktime_ns` when the number
/// is unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcCycleRecord {
    pub ktime_ns: u64,
    /// Indexed by `GC_*`.
    pub fields: [u64; GC_FIELDS],
}

/// GC cycles whose record the kernel keeps: the most recent ones.
pub const MAX_GC_CYCLES: u32 = 4096;

/// Counters the probes keep in a per-CPU array, indexed by these constants.
pub const COUNTER_EVENTS: u32 = 0;
/// Events lost because the ring buffer was full.
pub const COUNTER_DROPPED: u32 = 1;
/// Hits on a stack-check branch that was about to grow the stack (not an event).
pub const COUNTER_MORESTACK: u32 = 2;
/// Reads of target memory that failed (g, argument area or string bytes).
pub const COUNTER_READ_ERRORS: u32 = 3;
/// Allocations whose key did not fit in `ALLOC_SITES`.
pub const COUNTER_ALLOCS_LOST: u32 = 4;
pub const COUNTERS: u32 = 5;

/// One probe hit, as it travels through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CallEvent {
    pub ktime_ns: u64,
    /// [`EventKind`] as u32.
    pub kind: u32,
    /// Probe id (low half of the attach cookie): the tracer maps it back to a function.
    pub probe_id: u32,
    pub tgid: u32,
    pub tid: u32,
    pub goid: u64,
    /// SP as the callee sees it at its first instruction: [SP] is the return address.
    pub sp: u64,
    pub stack_lo: u64,
    pub stack_hi: u64,
    pub return_addr: u64,
    /// For a return the kernel paired with its entry, the call's duration as the kernel timed
    /// it (`CALL_STATS`); 0 otherwise.
    pub took_ns: u64,
    /// RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11.
    pub regs: [u64; INT_ARG_REGS],
    /// Words at SP+8.. : the stack-assigned arguments (and, on return, results).
    pub stack: [u64; MAX_STACK_WORDS],
    /// Bytes actually copied for each capture slot.
    pub string_lens: [u32; MAX_STRING_CAPTURES],
    pub strings: [[u8; STRING_CAPTURE_BYTES]; MAX_STRING_CAPTURES],
}

impl CallEvent {
    /// The word array a [`StringCapture`] indexes: registers first, then stack words.
    pub fn word(&self, index: usize) -> Option<u64> {
        if index < INT_ARG_REGS {
            Some(self.regs[index])
        } else {
            self.stack.get(index - INT_ARG_REGS).copied()
        }
    }
}

/// What a counting probe counted, in [`AllocKey::counted`]; each code says what the key's
/// `detail` holds.
///
/// Heap allocations (`runtime.mallocgc` and its size-specialized siblings), with their bytes
/// summed; `detail` is the allocated type's `*_type`, 0 for untyped memory.
pub const COUNTED_ALLOCATION: u64 = 1;
/// Goroutine creations (`runtime.newproc1`), with the stack each started with as its bytes,
/// keyed by the `go` statement; `detail` is the entry PC of the function the goroutine runs.
pub const COUNTED_GOROUTINE: u64 = 2;
/// Completed garbage-collection cycles (`runtime.gcMarkTermination`); `detail` is 0.
pub const COUNTED_GC_CYCLE: u64 = 3;
/// Objects the runtime's heap profiler sampled (`runtime.mProf_Malloc`); `detail` is 0, as
/// the profiler is not told the type.
pub const COUNTED_SAMPLED: u64 = 4;
/// Sampled objects freed by the sweeper (`runtime.freeSpecial` of a profile record), keyed by
/// where they were allocated; `detail` is 0.
pub const COUNTED_SAMPLED_FREED: u64 = 5;
/// Sampled objects' lifetimes, keyed by where they were allocated; `detail` is the log2 bucket
/// of the lifetime in ns (bucket b holds lifetimes in [2^(b-1), 2^b)).
pub const COUNTED_RESIDENCY: u64 = 6;
/// Goroutine stacks grown (`runtime.copystack` to a larger size), keyed like a goroutine
/// creation by the `go` statement and, in `detail`, the function; `bytes` is the largest stack
/// reached.
pub const COUNTED_STACK_GROWTH: u64 = 7;

/// A sampled object still live, by address (`SAMPLED_LIVE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveObject {
    pub ktime_ns: u64,
    pub stack_id: i64,
    pub caller: u64,
    pub size: u64,
}

/// Sampled objects tracked at once; more are counted in `COUNTER_ALLOCS_LOST`.
pub const MAX_LIVE_SAMPLES: u32 = 262_144;

/// What allocations and goroutine creations are aggregated by, in the kernel (`ALLOC_SITES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AllocKey {
    /// One of the `COUNTED_*` codes.
    pub counted: u64,
    /// Key in `ALLOC_STACKS` of the user stack above the allocator's caller (a hash of its
    /// return addresses), or `NO_STACK`: when it could not be taken, and for goroutines and GC
    /// cycles, whose probes take none.
    pub stack_id: i64,
    /// Return address into the allocator's direct caller (a probe at the allocator's
    /// stack-check branch runs before its frame exists, so the frame-pointer walk that
    /// `stack_id` comes from skips that caller); for a goroutine, the return address of the
    /// `go` statement's call to `runtime.newproc`.
    pub caller: u64,
    /// A type, a function or a lifetime bucket, as the code in `counted` says.
    pub detail: u64,
}

/// Objects and bytes allocated under one [`AllocKey`], on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    pub objects: u64,
    pub bytes: u64,
}

/// Distinct (stack, caller, type) keys the kernel keeps; more are counted as lost.
pub const MAX_ALLOC_SITES: u32 = 65_536;
/// Distinct user stacks the kernel keeps.
pub const MAX_ALLOC_STACKS: u32 = 16_384;
/// The stack key of a hit whose user stack could not be taken.
pub const NO_STACK: i64 = -1;
/// Frames kept per stack; deeper stacks lose their outermost frames.
pub const MAX_STACK_FRAMES: usize = 64;

/// A user stack as the probe took it: return addresses, innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackRecord {
    pub frames: u64,
    pub pcs: [u64; MAX_STACK_FRAMES],
}

#[cfg(feature = "user")]
mod pod {
    macro_rules! pod {
        ($($t:ident),*) => {$(
            // SAFETY: each type given is repr(C) and Copy, and holds only integers (and arrays
            // of them) laid out without padding: every byte is initialized, and every bit
            // pattern is a valid value.
            unsafe impl aya::Pod for super::$t {}
        )*};
    }

    pod!(
        ProbeConfig,
        ResultSource,
        GoOffsets,
        CallEvent,
        AllocKey,
        AllocStats,
        LiveObject,
        StackRecord,
        GcCycleRecord,
        CallStats,
        CallStart,
        InlineCall,
        GoroutineCalls,
        InProcess,
        OpenCall,
        CallerKey,
        CallerStats,
        ParamStats,
        CallHeap,
        AddressRange,
        Unplaced
    );
}
