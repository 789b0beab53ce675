//! `escapade params` worked out where the probes run, with no event per call: where each
//! parameter's pointer points (`PARAM_STATS`), what each call allocates (`CALL_HEAP`), and
//! which parameters a function moved to the heap, checked at its return against the objects
//! its own allocator calls made.
//!
//! An allocator's probe counts into the innermost traced call it runs in, which the goroutine's
//! chain of open calls in `calls` names.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::bpf_probe_read_user_buf,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use probe_common::{
    ALLOCATOR_NEWOBJECT, AddressRange, CallHeap, GoOffsets, INT_ARG_REGS, MAX_ADDRESS_RANGES,
    MAX_MOVE_BYTES, MAX_MOVE_CANDIDATES, MAX_MOVE_PIECES, MAX_MOVED, MAX_PARAMS, MovePiece,
    NO_WORD, OpenCall, OpenParams, PAGE_SHIFT, POINTEE_NIL, POINTEE_STACK, POINTEE_UNKNOWN,
    ParamStats, ProbeConfig, SAVED_STACK_WORDS, SAVED_WORDS, Unplaced,
};

use crate::{PROBE_CONFIGS, SIZED_BY_USE, read_u64, register, store_int_arg_registers};

/// Non-zero when `escapade params` works in the kernel: traced calls and the allocator's
/// probes update the maps below and send nothing.
// SAFETY: no other symbol of the object has this name; the loader sets it by name.
#[unsafe(no_mangle)]
static PARAMS_IN_KERNEL: u32 = 0;

pub(crate) fn in_kernel() -> bool {
    // SAFETY: a read of a constant the loader patched.
    unsafe { core::ptr::read_volatile(&PARAMS_IN_KERNEL) != 0 }
}

/// Per traced function, `MAX_PARAMS` slots, one per parameter (sized by the loader).
#[map]
static PARAM_STATS: PerCpuArray<ParamStats> = PerCpuArray::with_max_entries(1, 0);

/// Per traced function (sized by the loader).
#[map]
static CALL_HEAP: PerCpuArray<CallHeap> = PerCpuArray::with_max_entries(1, 0);

/// Traced calls in flight (sized by the loader; the least recently entered go first).
#[map]
static OPEN_PARAMS: LruHashMap<OpenCall, OpenParams> = LruHashMap::with_max_entries(1, 0);

/// Sorted, unused slots last ([`AddressRange::UNUSED`]); userspace rewrites it as the
/// process maps memory.
#[map]
static ADDRESS_RANGES: Array<AddressRange> = Array::with_max_entries(MAX_ADDRESS_RANGES, 0);

/// Pointers `ADDRESS_RANGES` could not place, by parameter slot and page, counted (sized by
/// the loader).
#[map]
static UNPLACED: PerCpuHashMap<Unplaced, u64> = PerCpuHashMap::with_max_entries(1, SIZED_BY_USE);

/// Where an entry builds its `OpenParams`, which does not fit the 512-byte BPF stack.
#[map]
static OPEN_SCRATCH: PerCpuArray<OpenParams> = PerCpuArray::with_max_entries(1, 0);

/// A moved object's bytes, read at the return (one word of slack past `MAX_MOVE_BYTES`, so
/// that a piece's word can be read whole at any offset).
#[map]
static OBJECT_SCRATCH: PerCpuArray<[u8; MAX_MOVE_BYTES + 8]> = PerCpuArray::with_max_entries(1, 0);

/// A traced function's entry, counted by the kernel: classifies its parameters' pointers, and
/// when `starts` (its return will be seen) opens its call.
pub(crate) fn entered(
    regs: &pt_regs,
    config: &ProbeConfig,
    offsets: &GoOffsets,
    call: OpenCall,
    sp: u64,
    starts: bool,
) {
    let stack_hi = call.depth().wrapping_add(sp);
    let stack_lo = read_u64(call.g + offsets.g_stack_lo).unwrap_or(stack_hi);
    let base = config.function * MAX_PARAMS as u32;
    for pointer in &config.params.pointers {
        if pointer.word == NO_WORD {
            break;
        }
        let addr = word(regs, sp, pointer.word);
        count_pointee(addr, stack_lo, stack_hi, base + u32::from(pointer.param));
    }
    if starts {
        let _ = open(regs, config, offsets, call, sp);
    }
}

fn open(
    regs: &pt_regs,
    config: &ProbeConfig,
    offsets: &GoOffsets,
    call: OpenCall,
    sp: u64,
) -> Option<()> {
    let scratch = OPEN_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, which nothing else uses while the program runs here.
    let open = unsafe { &mut *scratch };
    open.function = config.function;
    open.moved = 0;
    open.code_start = config.params.code_start + offsets.code_bias;
    open.code_end = config.params.code_end + offsets.code_bias;
    open.objects = 0;
    open.bytes = 0;
    open.own_objects = 0;
    if config.params.keep_words != 0 {
        let (registers, _) = open.words.split_first_chunk_mut::<INT_ARG_REGS>()?;
        store_int_arg_registers(regs, registers);
        // SAFETY: the words are plain bytes; the helper checks the user address and writes at
        // most the slice's length.
        let stack = unsafe {
            core::slice::from_raw_parts_mut(
                open.words[INT_ARG_REGS..].as_mut_ptr() as *mut u8,
                SAVED_STACK_WORDS * 8,
            )
        };
        // SAFETY: as above.
        if unsafe { bpf_probe_read_user_buf((sp + 8) as *const u8, stack) }.is_err() {
            stack.fill(0);
        }
    }
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the call would not fit the 512-byte BPF stack"
    )]
    OPEN_PARAMS.insert(call, &*open, 0).ok()
}

/// A traced call's return, paired with its entry: adds what it allocated to its function's
/// counts and checks which parameters its new objects hold.
pub(crate) fn returned(call: OpenCall) {
    // SAFETY: the value stays valid until removed below, by this program (a goroutine runs
    // on one CPU at a time, and only its own probes touch its calls).
    let Some(open) = (unsafe { OPEN_PARAMS.get(call) }) else {
        return;
    };
    let Some(heap) = CALL_HEAP.get_ptr_mut(open.function) else {
        let _ = OPEN_PARAMS.remove(call);
        return;
    };
    // SAFETY: this CPU's slot; nothing else writes it while the program runs here.
    let heap = unsafe { &mut *heap };
    heap.objects += open.objects;
    heap.bytes += open.bytes;
    heap.own_objects += open.own_objects;
    let mut moved_params: u64 = 0;
    for i in 0..MAX_MOVED {
        if i >= open.moved as usize {
            break;
        }
        match moved_param(open, open.moved_addrs[i], open.moved_probes[i]) {
            Some((param, size)) => {
                let slot = open.function as usize * MAX_PARAMS + param as usize;
                if let Some(stats) = PARAM_STATS.get_ptr_mut(slot as u32) {
                    // SAFETY: this CPU's slot; nothing else writes it while the program runs.
                    let stats = unsafe { &mut *stats };
                    let bit = 1u64 << (param & 63);
                    if moved_params & bit == 0 {
                        stats.moved_calls += 1;
                        moved_params |= bit;
                    }
                    stats.moved_objects += 1;
                    stats.moved_bytes += u64::from(size);
                }
            }
            None => heap.unverified_moves += 1,
        }
    }
    let _ = OPEN_PARAMS.remove(call);
}

/// The parameter, of those `probe`'s check names, whose entry bytes the object at `addr`
/// holds now; and the object's size.
fn moved_param(open: &OpenParams, addr: u64, probe: u32) -> Option<(u32, u32)> {
    let check = &PROBE_CONFIGS.get(probe)?.params.moved;
    let size = check.size as usize;
    if size == 0 || size > MAX_MOVE_BYTES {
        return None;
    }
    let bytes = OBJECT_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; the helper checks the user address and writes at most `size`
    // bytes, fewer than the slot holds.
    let bytes = unsafe { &mut *bytes };
    // SAFETY: as above.
    unsafe { bpf_probe_read_user_buf(addr as *const u8, &mut bytes[..size]) }.ok()?;
    for c in 0..MAX_MOVE_CANDIDATES {
        if c >= check.candidates as usize {
            break;
        }
        if holds(bytes, &check.pieces[c], &open.words) {
            return Some((check.params[c], check.size));
        }
    }
    None
}

/// Whether `object` holds each piece of a value as the entry's `words` had it. Not inlined:
/// see [`count_pointee`].
#[inline(never)]
fn holds(
    object: &[u8; MAX_MOVE_BYTES + 8],
    pieces: &[MovePiece; MAX_MOVE_PIECES],
    words: &[u64; SAVED_WORDS],
) -> bool {
    for piece in pieces {
        if piece.size == 0 {
            break;
        }
        let Some(word) = words.get(piece.word as usize) else {
            return false;
        };
        let at = piece.offset as usize & (MAX_MOVE_BYTES - 1);
        let mut held = [0u8; 8];
        held.copy_from_slice(&object[at..at + 8]);
        let mask = if piece.size >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * piece.size)) - 1
        };
        if (u64::from_le_bytes(held) ^ word) & mask != 0 {
            return false;
        }
    }
    true
}

/// The allocator entered (`regs` its arguments, `return_addr` into its caller) from a
/// goroutine at `call`: counts the allocation into the traced call it runs inside, at depth
/// `inside`.
pub(crate) fn allocating(
    regs: &pt_regs,
    config: &ProbeConfig,
    offsets: &GoOffsets,
    call: OpenCall,
    inside: Option<u64>,
    return_addr: u64,
) {
    let Some(open) = open_at(call, inside) else {
        return;
    };
    // SAFETY: the goroutine's own call, which only its probes touch, one at a time.
    let open = unsafe { &mut *open };
    if (open.code_start..open.code_end).contains(&return_addr) {
        open.own_objects += 1;
    }
    // newobject calls mallocgc, and mallocgc hands small sizes to the size-specialized
    // allocators (Go 1.27), all probed: each allocation counts once, where it has its size.
    // Size 0 allocates nothing.
    let size = regs.rax;
    if config.params.allocator == ALLOCATOR_NEWOBJECT
        || (offsets.mallocgc_start..offsets.mallocgc_end).contains(&return_addr)
        || size == 0
    {
        return;
    }
    open.objects += 1;
    open.bytes += size;
}

/// Right after a traced function's own call to the allocator for one of its parameters' type,
/// in the traced call at depth `inside`: keeps the new object (RAX) for the check at the
/// function's return.
pub(crate) fn allocated(
    regs: &pt_regs,
    config: &ProbeConfig,
    probe_id: u32,
    call: OpenCall,
    inside: Option<u64>,
) {
    let Some(open) = open_at(call, inside) else {
        return;
    };
    // SAFETY: the goroutine's own call, which only its probes touch, one at a time.
    let open = unsafe { &mut *open };
    if open.function != config.function {
        return;
    }
    let n = open.moved as usize;
    if n < MAX_MOVED {
        open.moved_addrs[n] = regs.rax;
        open.moved_probes[n] = probe_id;
        open.moved += 1;
    } else if let Some(heap) = CALL_HEAP.get_ptr_mut(config.function) {
        // SAFETY: this CPU's slot; nothing else writes it while the program runs here.
        unsafe { (*heap).unverified_moves += 1 };
    }
}

/// Counts a return on a `RET` whose entry the kernel never saw.
pub(crate) fn unmatched_return(function: u32) {
    if let Some(heap) = CALL_HEAP.get_ptr_mut(function) {
        // SAFETY: this CPU's slot; nothing else writes it while the program runs here.
        unsafe { (*heap).unmatched_returns += 1 };
    }
}

/// A call a panic unwound, dropped from the goroutine's open calls.
pub(crate) fn unwound(call: OpenCall) {
    if in_kernel() {
        let _ = OPEN_PARAMS.remove(call);
    }
}

/// The open call at `depth` on `here`'s goroutine.
fn open_at(here: OpenCall, depth: Option<u64>) -> Option<*mut OpenParams> {
    OPEN_PARAMS.get_ptr_mut(here.at(depth?))
}

/// Argument word `at` at entry: a register, or a word of the argument area above `sp`.
fn word(regs: &pt_regs, sp: u64, at: u8) -> Option<u64> {
    let at = at as usize;
    if at < INT_ARG_REGS {
        return register(regs, at as u32);
    }
    read_u64(sp + 8 + 8 * (at - INT_ARG_REGS) as u64)
}

/// Counts where `addr` points (`POINTEE_*`) into `PARAM_STATS` slot `slot`. Not inlined, and
/// returning nothing, so that the verifier walks the search once per call site and the
/// caller's state after it is the same whatever region the pointer was in.
#[inline(never)]
fn count_pointee(addr: Option<u64>, stack_lo: u64, stack_hi: u64, slot: u32) {
    let region = match addr {
        Some(addr) => classify(addr, stack_lo, stack_hi),
        None => POINTEE_UNKNOWN,
    };
    if let (POINTEE_UNKNOWN, Some(addr)) = (region, addr) {
        unplaced(slot, addr);
        return;
    }
    let Some(stats) = PARAM_STATS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: this CPU's slot; nothing else writes it while the program runs here.
    if let Some(count) = unsafe { (*stats).pointees.get_mut(region) } {
        *count += 1;
    }
}

/// Leaves a pointer into memory `ADDRESS_RANGES` does not have yet for userspace to place.
fn unplaced(slot: u32, addr: u64) {
    let key = Unplaced {
        slot: u64::from(slot),
        page: addr >> PAGE_SHIFT,
    };
    match UNPLACED.get_ptr_mut(key) {
        // SAFETY: this CPU's value; nothing else writes it while the program runs here.
        Some(count) => unsafe { *count += 1 },
        None => {
            let _ = UNPLACED.insert(key, 1, 0);
        }
    }
}

/// The `POINTEE_*` region `addr` points into.
fn classify(addr: u64, stack_lo: u64, stack_hi: u64) -> usize {
    if addr == 0 {
        return POINTEE_NIL;
    }
    if stack_lo <= addr && addr < stack_hi {
        return POINTEE_STACK;
    }
    // Binary search: unused slots sort last.
    let (mut lo, mut hi) = (0u32, MAX_ADDRESS_RANGES);
    for _ in 0..8 {
        if lo >= hi {
            break;
        }
        let mid = (lo + hi) / 2;
        let Some(range) = ADDRESS_RANGES.get(mid) else {
            break;
        };
        if addr < range.start {
            hi = mid;
        } else if addr >= range.end {
            lo = mid + 1;
        } else {
            return range.region as usize;
        }
    }
    POINTEE_UNKNOWN
}
