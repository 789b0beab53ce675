//! Traced functions: their entries and returns, paired, counted and timed in the kernel, and
//! the events they send (every call, or under tail capture the slow and failing ones).

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, pt_regs},
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user_buf,
    },
    macros::{map, uprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::ProbeContext,
};
use probe_common::{
    COOKIE_AT_CALL_SITE, COOKIE_AT_RETURN_SITE, COOKIE_RETURNS_AT_SITES,
    COOKIE_SKIP_IF_BELOW_OR_EQUAL, COUNTER_DROPPED, COUNTER_EVENTS, COUNTER_MORESTACK,
    COUNTER_READ_ERRORS, CallEvent, CallStart, CallStats, CallerKey, CallerStats, EFLAGS_CF,
    EFLAGS_ZF, EventKind, GoOffsets, GoroutineCalls, INLINE_OPEN_CALLS, INT_ARG_REGS, InProcess,
    InlineCall, LATENCY_BUCKETS, MAX_ACTIVE_GOROUTINES, MAX_DEEP_CALLS, MAX_FAST_RETURNS,
    MAX_HELD_ENTRIES, MAX_STACK_WORDS, MAX_STRING_CAPTURES, MAX_TRACED_FUNCTIONS, OpenCall,
    ProbeConfig, RESULT_DISCARDED, RESULT_IN_REGISTER, RESULT_ON_STACK, STRING_CAPTURE_BYTES,
};

use crate::{
    EVENTS, GO_OFFSETS, PROBE_CONFIGS, SIZED_BY_USE, WAKEUP_THRESHOLD, count, current_tgid,
    in_this_process, is_target, read_u64, register, store_int_arg_registers,
};

/// Non-zero when entries and returns keep `ACTIVE_CALLS`, so that the allocator's probes
/// report only allocations made inside traced functions (`escapade params`).
// SAFETY: no other symbol of the object has this name; the loader sets it by name.
#[unsafe(no_mangle)]
static TRACK_CALLS: u32 = 0;

/// Per goroutine id, how many traced calls it is inside. Entries of calls unwound without a
/// RET (panics) stay counted; userspace pairs calls exactly and drops what does not belong.
/// LRU: goroutines that a panic left counted forever go first, rather than filling the map
/// and keeping every new goroutine's allocations out.
#[map]
static ACTIVE_CALLS: LruHashMap<InProcess, u64> =
    LruHashMap::with_max_entries(MAX_ACTIVE_GOROUTINES, 0);

#[uprobe]
pub fn go_entry(ctx: ProbeContext) -> u32 {
    let _ = try_record(&ctx, EventKind::Entry);
    0
}

#[uprobe]
pub fn go_return(ctx: ProbeContext) -> u32 {
    let _ = try_record(&ctx, EventKind::Return);
    0
}

/// `runtime.newobject` and `runtime.mallocgc` entries: reported only from goroutines inside a
/// traced function, so the rest of the program pays just the (emulated) probe.
#[uprobe]
pub fn go_allocating(ctx: ProbeContext) -> u32 {
    let _ = try_record(&ctx, EventKind::Allocating);
    0
}

/// The instruction after a traced function's `CALL runtime.newobject`.
#[uprobe]
pub fn go_allocated(ctx: ProbeContext) -> u32 {
    let _ = try_record(&ctx, EventKind::Allocated);
    0
}

/// Does nothing: the baseline that benchmarks compare the real probes against.
#[uprobe]
pub fn go_empty(_ctx: ProbeContext) -> u32 {
    0
}

/// One probe hit on a traced function's entry or return or on the allocator, as read from
/// the registers and the goroutine. It stays on the probe's stack while the phases that follow
/// (`observe`, `count_params` or `emit`, `open_call`) take it by reference, each in a frame of
/// its own: inlined into one, their frames would add up past the 512 bytes of BPF stack that
/// kernels without private stacks allow.
struct Hit<'a> {
    kind: EventKind,
    /// The probe id (`PROBE_CONFIGS` index) and the `COOKIE_*` placement flags.
    cookie: u64,
    ktime_ns: u64,
    /// 0 when it could not be read, as for `stack_hi`: neither is ever 0 in a Go program, and
    /// two `Option`s would take 16 bytes more of the probe's stack.
    return_addr: u64,
    /// The top of the goroutine's stack.
    stack_hi: u64,
    regs: &'a pt_regs,
    config: &'a ProbeConfig,
    offsets: &'a GoOffsets,
}

impl Hit<'_> {
    fn probe_id(&self) -> u32 {
        self.cookie as u32
    }

    fn at_return_site(&self) -> bool {
        self.cookie & COOKIE_AT_RETURN_SITE != 0
    }

    fn return_addr(&self) -> Option<u64> {
        known(self.return_addr)
    }

    fn sp(&self) -> u64 {
        callee_sp(self.cookie, self.regs)
    }

    /// The call the hit is in, once its goroutine's stack is known. (Worked out again where
    /// needed rather than kept: the 24 bytes count on the probe's stack.)
    fn call(&self) -> Option<OpenCall> {
        known(self.stack_hi).map(|stack_hi| {
            OpenCall::new(
                self.regs.r14,
                current_tgid(),
                stack_hi.wrapping_sub(self.sp()),
            )
        })
    }
}

/// A word read from the goroutine, None for 0 (could not be read).
fn known(word: u64) -> Option<u64> {
    (word != 0).then_some(word)
}

/// The callee's SP at its entry, wherever the probe sits: before a CALL the return address
/// is not pushed yet, after the return it is popped, so either way it is 8 below.
fn callee_sp(cookie: u64, regs: &pt_regs) -> u64 {
    if cookie & (COOKIE_AT_CALL_SITE | COOKIE_AT_RETURN_SITE) != 0 {
        regs.rsp - 8
    } else {
        regs.rsp
    }
}

fn try_record(ctx: &ProbeContext, kind: EventKind) -> Result<(), ()> {
    // A return's time is taken first thing and an entry's last thing (its start), so that a
    // call's duration leaves out as much of the probes' own work as they can. An entry's event
    // carries its hit's time too; counting alone does not read the clock twice.
    // SAFETY: a read of a constant the loader patched.
    let sends_calls = unsafe { core::ptr::read_volatile(&SEND_CALLS) } != 0;
    let ktime_ns = if kind == EventKind::Entry && !sends_calls {
        0
    } else {
        // SAFETY: no preconditions.
        unsafe { bpf_ktime_get_ns() }
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return Ok(());
    }
    // SAFETY: the context of a uprobe program is its pt_regs.
    let regs: &pt_regs = unsafe { &*(ctx.as_ptr() as *const pt_regs) };
    // SAFETY: helper valid for uprobe programs since 5.15.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    if cookie & COOKIE_SKIP_IF_BELOW_OR_EQUAL != 0 && regs.eflags & (EFLAGS_CF | EFLAGS_ZF) != 0 {
        count(COUNTER_MORESTACK);
        return Ok(());
    }
    let config = PROBE_CONFIGS.get(cookie as u32).ok_or(())?;
    let offsets = GO_OFFSETS.get(0).ok_or(())?;
    // R14 holds the current g in Go's register ABI.
    let g = regs.r14;
    let sp = callee_sp(cookie, regs);
    let return_addr = if cookie & COOKIE_AT_CALL_SITE != 0 {
        // CALL rel32 is 5 bytes; the kernel reports the probed instruction's address in ip.
        Some(regs.rip + 5)
    } else if cookie & COOKIE_AT_RETURN_SITE != 0 {
        Some(config.return_site + offsets.code_bias)
    } else {
        read_u64(sp)
    };
    let stack_hi = read_u64(g + offsets.g_stack_hi).unwrap_or(0);
    let hit = Hit {
        kind,
        cookie,
        ktime_ns,
        return_addr: return_addr.unwrap_or(0),
        stack_hi,
        regs,
        config,
        offsets,
    };
    let observed = observe(&hit);
    if observed.hit == CallHit::NotThisCall {
        return Ok(());
    }
    let sent = if crate::params::in_kernel() {
        count_params(&hit, observed.hit);
        Ok(())
    } else if matches!(kind, EventKind::Entry | EventKind::Return) && !sends_calls && {
        // SAFETY: a read of a constant the loader patched.
        unsafe { core::ptr::read_volatile(&TRACK_CALLS) == 0 }
    } {
        // `trace --quiet` and the agent: counted above, and nothing to send or track.
        Ok(())
    } else if tail_capture().is_some() && matches!(kind, EventKind::Entry | EventKind::Return) {
        capture_tail(&hit, observed.hit, observed.took_ns)
    } else {
        emit(&hit, observed.hit, observed.took_ns)
    };
    if observed.hit == CallHit::Starts {
        open_call(&hit, observed.closed_at_return_site);
    }
    sent
}

/// What the kernel made of a hit (see `observe`).
struct Observed {
    hit: CallHit,
    /// For a return the kernel paired, the call's duration.
    took_ns: u64,
    /// For an entry that starts a call, whether a return-site probe will close it.
    closed_at_return_site: bool,
}

/// Counts an entry or a return and pairs a return with its entry.
#[inline(never)]
fn observe(hit: &Hit) -> Observed {
    let (kind, cookie, config) = (hit.kind, hit.cookie, hit.config);
    match (kind, hit.call(), hit.return_addr()) {
        (EventKind::Entry, Some(call), Some(return_addr)) => {
            // Only a single-stepped probe can fire twice for one entry.
            let may_repeat = cookie & (COOKIE_SKIP_IF_BELOW_OR_EQUAL | COOKIE_AT_CALL_SITE) == 0;
            let at_sites = cookie & COOKIE_RETURNS_AT_SITES != 0;
            let (observed, closed_at_return_site) =
                entered(config, call, return_addr, hit.offsets, may_repeat, at_sites);
            Observed {
                hit: observed,
                took_ns: 0,
                closed_at_return_site,
            }
        }
        (EventKind::Return, Some(call), _) => {
            let code_bias = hit.offsets.code_bias;
            let (observed, took_ns) =
                returned(config, call, hit.ktime_ns, hit.at_return_site(), code_bias);
            Observed {
                hit: observed,
                took_ns,
                closed_at_return_site: false,
            }
        }
        // Without the goroutine a return site cannot tell its call from other paths.
        (EventKind::Return, None, _) if hit.at_return_site() => Observed {
            hit: CallHit::NotThisCall,
            took_ns: 0,
            closed_at_return_site: false,
        },
        _ => Observed {
            hit: CallHit::Unpaired,
            took_ns: 0,
            closed_at_return_site: false,
        },
    }
}

/// `escapade params` in the kernel: what the hit tells of its call's parameters and heap.
#[inline(never)]
fn count_params(hit: &Hit, observed: CallHit) {
    let Some(call) = hit.call() else {
        return;
    };
    let (regs, config, offsets) = (hit.regs, hit.config, hit.offsets);
    match (hit.kind, observed) {
        (EventKind::Entry, CallHit::Repeat) => {}
        (EventKind::Entry, _) if hit.return_addr().is_some() => crate::params::entered(
            regs,
            config,
            offsets,
            call,
            hit.sp(),
            observed == CallHit::Starts,
        ),
        (EventKind::Return, CallHit::Paired) => crate::params::returned(call),
        (EventKind::Return, CallHit::Unpaired) if config.timed != 0 => {
            crate::params::unmatched_return(config.function)
        }
        (EventKind::Allocating, _) => crate::params::allocating(
            regs,
            config,
            offsets,
            call,
            innermost_below(call),
            hit.return_addr,
        ),
        (EventKind::Allocated, _) => {
            crate::params::allocated(regs, config, hit.probe_id(), call, innermost_below(call))
        }
        _ => {}
    }
}

/// Keeps the start of a call whose return a probe will see, as its goroutine's innermost.
#[inline(never)]
fn open_call(hit: &Hit, closed_at_return_site: bool) {
    let (Some(call), Some(return_addr)) = (hit.call(), hit.return_addr()) else {
        return;
    };
    // SAFETY: the goroutine's own value, which only its probes touch, one at a time.
    let mut calls = goroutine_calls(call.goroutine()).map(|calls| unsafe { &mut *calls });
    if let Some(calls) = calls.as_deref_mut() {
        // Calls on this goroutine at this depth or deeper were unwound without returning.
        drop_unwound(calls, &call);
    }
    let start = CallStart {
        // SAFETY: no preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        return_addr,
        at_return_site: u64::from(closed_at_return_site),
        parent_depth: calls.as_deref().map_or(0, |calls| calls.innermost),
    };
    open(calls, call, start);
}

/// Per goroutine (`g` in its process), its open calls: the outermost inline, deeper ones in `CALL_STARTS`
/// (see `GoroutineCalls`). Updated in place: one lookup a hit.
///
/// Sized by use rather than an LRU's preallocated worst case: a goroutine's entry is made at
/// its first traced call and kept, and the runtime reuses its `g`s, so a process holds at most
/// one per goroutine it ever ran at once. The tracer removes a process's entries when it
/// exits. Once full, calls of further goroutines are kept in `CALL_STARTS` alone.
#[map]
static INNERMOST_CALL: HashMap<InProcess, GoroutineCalls> =
    HashMap::with_max_entries(MAX_ACTIVE_GOROUTINES, SIZED_BY_USE);

/// A goroutine's calls before its first: inserted from here, a global, because on the probe's
/// stack its 176 bytes would not fit beside the rest in the 512 bytes of older kernels.
static NO_CALLS: GoroutineCalls = GoroutineCalls::NONE;

/// The goroutine's open calls, made on its first call.
fn goroutine_calls(goroutine: InProcess) -> Option<*mut GoroutineCalls> {
    if let Some(calls) = INNERMOST_CALL.get_ptr_mut(goroutine) {
        return Some(calls);
    }
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the 176 bytes would be copied onto the BPF stack"
    )]
    INNERMOST_CALL.insert(goroutine, &NO_CALLS, 0).ok()?;
    INNERMOST_CALL.get_ptr_mut(goroutine)
}

/// The depth of the innermost call held inline, 0 for none. (Every slot is read at a constant
/// index: the verifier cannot bound one computed from the map value.)
fn inline_top(calls: &GoroutineCalls) -> u64 {
    let mut top = 0;
    for i in 0..INLINE_OPEN_CALLS {
        if (i as u64) < calls.inline_len {
            top = calls.inline[i].depth;
        }
    }
    top
}

/// The start of open call `call`, inline in its goroutine's `calls` or in `CALL_STARTS`.
fn start_of(calls: Option<&GoroutineCalls>, call: OpenCall) -> Option<CallStart> {
    if let Some(calls) = calls {
        for i in 0..INLINE_OPEN_CALLS {
            if (i as u64) < calls.inline_len && calls.inline[i].depth == call.depth() {
                return Some(calls.inline[i].start);
            }
        }
    }
    // SAFETY: the value is copied.
    unsafe { CALL_STARTS.get(call) }.copied()
}

/// Makes `call` its goroutine's innermost open call: inline while the goroutine's open calls
/// all are and there is room, in `CALL_STARTS` past that (or without `calls`).
fn open(calls: Option<&mut GoroutineCalls>, call: OpenCall, start: CallStart) {
    if let Some(calls) = calls {
        let len = calls.inline_len;
        let all_inline = calls.innermost == inline_top(calls);
        calls.innermost = call.depth();
        if all_inline && (len as usize) < INLINE_OPEN_CALLS {
            for i in 0..INLINE_OPEN_CALLS {
                if i as u64 == len {
                    calls.inline[i] = InlineCall {
                        depth: call.depth(),
                        start,
                    };
                }
            }
            calls.inline_len = len + 1;
            return;
        }
    }
    let _ = CALL_STARTS.insert(call, start, 0);
}

/// Closes `call`, which returned: it is its goroutine's innermost open call once the deeper
/// ones are dropped, and its caller's call (`parent_depth`) becomes the innermost.
fn close(calls: Option<&mut GoroutineCalls>, call: OpenCall, parent_depth: u64) {
    let Some(calls) = calls else {
        let _ = CALL_STARTS.remove(call);
        return;
    };
    drop_unwound(calls, &call.at(call.depth() + 1));
    if calls.inline_len > 0 && inline_top(calls) == call.depth() {
        calls.inline_len -= 1;
    } else {
        let _ = CALL_STARTS.remove(call);
    }
    // With deeper calls still left to drop, the chain stays headed by them.
    if calls.innermost <= call.depth() {
        calls.innermost = parent_depth;
    }
}

/// The depth of the innermost open call of `here`'s goroutine that is shallower than `here`: the call a
/// probe at `here` runs inside. Calls a panic unwound and no probe dropped yet are skipped (a
/// few at most).
fn innermost_below(here: OpenCall) -> Option<u64> {
    // SAFETY: the value is only read, while this goroutine's probe runs.
    let calls = unsafe { INNERMOST_CALL.get(here.goroutine()) }?;
    let mut depth = calls.innermost;
    for _ in 0..4 {
        if depth == 0 {
            return None;
        }
        if depth < here.depth() {
            return Some(depth);
        }
        depth = start_of(Some(calls), here.at(depth))?.parent_depth;
    }
    None
}

/// Per goroutine (`g` in its process), the depth of the last call it returned from on a `RET` probe.
#[map]
static LAST_RET: LruHashMap<InProcess, u64> =
    LruHashMap::with_max_entries(MAX_ACTIVE_GOROUTINES, 0);

/// Calls of a goroutine in `CALL_STARTS` one probe hit drops as unwound, at most (the verifier
/// walks the loop whole): the goroutine's next hits drop the rest.
const UNWOUND_PER_HIT: usize = 128;

/// Drops the open calls of `from`'s goroutine at `from`'s depth or deeper, innermost first, which a panic
/// (or `Goexit`) unwound without a return: a probe hit at `depth` means the stack below it is
/// gone. Left open, they would crowd out the calls still running. Not inlined, so that the
/// verifier walks it once per call site.
#[inline(never)]
fn drop_unwound(calls: &mut GoroutineCalls, from: &OpenCall) {
    let depth = from.depth();
    // The usual hit: a new call inside the innermost, or the innermost's return.
    if calls.innermost < depth {
        return;
    }
    let innermost_inline = inline_top(calls);
    let top = drop_spilled(from, calls.innermost, innermost_inline);
    calls.innermost = top;
    if top > innermost_inline {
        // Calls in `CALL_STARTS` are left: shallower than `depth`, or more than a hit drops.
        return;
    }
    for i in (0..INLINE_OPEN_CALLS).rev() {
        if (i as u64) < calls.inline_len && calls.inline[i].depth >= depth {
            let held = calls.inline[i];
            forget(from.at(held.depth), held.start);
            calls.inline_len = i as u64;
        }
    }
    calls.innermost = inline_top(calls);
}

/// The part of `drop_unwound` in `CALL_STARTS`, from the goroutine's `innermost` call down to
/// `from`'s depth or to its calls held inline (the innermost at `inline_top`). Returns the innermost call left. Not
/// inlined, so that the verifier walks the loop once per call site.
#[inline(never)]
fn drop_spilled(from: &OpenCall, innermost: u64, inline_top: u64) -> u64 {
    let mut top = innermost;
    for _ in 0..UNWOUND_PER_HIT {
        if top <= inline_top || top < from.depth() {
            break;
        }
        let unwound = from.at(top);
        // SAFETY: the value is copied before the entry is removed.
        top = match (unsafe { CALL_STARTS.get(unwound) }).copied() {
            Some(start) => {
                let _ = CALL_STARTS.remove(unwound);
                forget(unwound, start);
                start.parent_depth
            }
            // The chain breaks here (its next call was evicted): the LRU map evicts the rest.
            None => return inline_top,
        };
    }
    top
}

/// What else keeps an open call that was unwound, it lets go of.
fn forget(unwound: OpenCall, start: CallStart) {
    crate::params::unwound(unwound);
    if start.at_return_site == 0 {
        add_open_via_ret(-1);
    }
}

/// Sends a probe hit's event, if it is to be sent, once the kernel has counted it. Not
/// inlined: its frame (the event's reads) and the probe's own (the hit's state) would add up on
/// the 512-byte BPF stack of kernels without private stacks.
#[inline(never)]
fn emit(hit: &Hit, observed: CallHit, took_ns: u64) -> Result<(), ()> {
    let Some(goid) = to_send(hit, observed) else {
        return Ok(());
    };
    let Some(mut entry) = EVENTS.reserve::<CallEvent>(0) else {
        count(COUNTER_DROPPED);
        return Err(());
    };
    // SAFETY: `entry` points at a reserved, writable CallEvent until submit/discard.
    fill(unsafe { &mut *entry.as_mut_ptr() }, hit, goid, took_ns);
    entry.submit(wakeup_flags());
    Ok(())
}

/// Whether a hit's event is to be sent, with its goroutine id (None if unread), once it is
/// counted into `ACTIVE_CALLS`.
#[inline(always)]
fn to_send(hit: &Hit, observed: CallHit) -> Option<Option<u64>> {
    let kind = hit.kind;
    // The goroutine id only goes into events and the allocator's filter: counting alone saves
    // the read.
    // SAFETY: reads of constants the loader patched.
    let (sends_calls, tracks_calls) = unsafe {
        (
            core::ptr::read_volatile(&SEND_CALLS) != 0,
            core::ptr::read_volatile(&TRACK_CALLS) != 0,
        )
    };
    let goid = if sends_calls || tracks_calls {
        read_u64(hit.regs.r14 + hit.offsets.g_goid)
    } else {
        None
    };
    if tracks_calls
        && let Some(goid) = goid
        && observed != CallHit::Unobserved
    {
        track_calls(goid, kind);
    }
    if kind == EventKind::Allocating
        && goid.is_none_or(|goid| {
            // SAFETY: lookup only tests presence.
            unsafe { ACTIVE_CALLS.get(in_this_process(goid)) }.is_none()
        })
    {
        return None;
    }
    if !sends_calls && matches!(kind, EventKind::Entry | EventKind::Return) {
        return None;
    }
    Some(goid)
}

/// Don't wake the reader for each event: it drains on a timer, unless the buffer is filling.
fn wakeup_flags() -> u64 {
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_THRESHOLD {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    flags as u64
}

/// Writes `hit`'s event into `e`: registers, goroutine, stack words and strings. Inlined into
/// `emit`: one frame for both takes less of the BPF stack than two.
#[inline(always)]
fn fill(e: &mut CallEvent, hit: &Hit, goid: Option<u64>, took_ns: u64) {
    let (regs, config) = (hit.regs, hit.config);
    e.ktime_ns = hit.ktime_ns;
    e.kind = hit.kind as u32;
    e.probe_id = hit.probe_id();
    let pid_tgid = bpf_get_current_pid_tgid();
    e.tgid = (pid_tgid >> 32) as u32;
    e.tid = pid_tgid as u32;
    e.sp = hit.sp();
    store_int_arg_registers(regs, &mut e.regs);
    let mut read_failed = hit.return_addr == 0 || goid.is_none();
    if hit.at_return_site() && !restore_results(e, regs, config) {
        read_failed = true;
    }
    e.return_addr = hit.return_addr;
    e.took_ns = took_ns;
    e.goid = goid.unwrap_or(0);
    e.stack_lo = read_u64(regs.r14 + hit.offsets.g_stack_lo).unwrap_or(0);
    e.stack_hi = hit.stack_hi;

    // The argument area starts right above the return address.
    let words = config.stack_words as usize;
    let bytes = if words > MAX_STACK_WORDS {
        MAX_STACK_WORDS
    } else {
        words
    } * 8;
    // SAFETY: CallEvent.stack is MAX_STACK_WORDS*8 bytes and `bytes` is bounded by it.
    let stack = unsafe {
        core::slice::from_raw_parts_mut(e.stack.as_mut_ptr() as *mut u8, MAX_STACK_WORDS * 8)
    };
    if bytes > 0 {
        let words = (e.sp + 8) as *const u8;
        // SAFETY: the helper checks the user address and writes at most the slice's length.
        if unsafe { bpf_probe_read_user_buf(words, &mut stack[..bytes]) }.is_err() {
            read_failed = true;
        }
    }

    let string_bytes = config.string_bytes as usize;
    // Zeroed whole, before the loop: a store per slot inside it becomes a call to memset.
    e.string_lens = [0; MAX_STRING_CAPTURES];
    for i in 0..MAX_STRING_CAPTURES {
        let capture = config.strings[i];
        if capture.enabled == 0 || string_bytes == 0 {
            continue;
        }
        let (Some(ptr), Some(len)) = (
            e.word(capture.ptr_word as usize),
            e.word(capture.len_word as usize),
        ) else {
            continue;
        };
        let mut n = if len < string_bytes as u64 {
            len as usize
        } else {
            string_bytes
        };
        if n > STRING_CAPTURE_BYTES {
            n = STRING_CAPTURE_BYTES;
        }
        if n == 0 || ptr == 0 {
            continue;
        }
        // SAFETY: as for the stack words above.
        if unsafe { bpf_probe_read_user_buf(ptr as *const u8, &mut e.strings[i][..n]) }.is_ok() {
            e.string_lens[i] = n as u32;
        } else {
            read_failed = true;
        }
    }
    if read_failed {
        count(COUNTER_READ_ERRORS);
    }
    count(COUNTER_EVENTS);
}

/// Tail capture: calls slower than this many ns are sent whole, entry and return (0: off).
// SAFETY: no other symbol of the object has this name; the loader sets it by name.
#[unsafe(no_mangle)]
static TAIL_SLOWER_THAN_NS: u64 = 0;

/// Tail capture: non-zero to send whole the calls that return a non-nil error.
// SAFETY: no other symbol of the object has this name; the loader sets it by name.
#[unsafe(no_mangle)]
static TAIL_ERRORS: u32 = 0;

/// Tail capture's thresholds, `TAIL_SLOWER_THAN_NS` and `TAIL_ERRORS`, when it is on.
fn tail_capture() -> Option<(u64, bool)> {
    // SAFETY: reads of constants the loader patched.
    let (slower_than_ns, errors) = unsafe {
        (
            core::ptr::read_volatile(&TAIL_SLOWER_THAN_NS),
            core::ptr::read_volatile(&TAIL_ERRORS) != 0,
        )
    };
    (slower_than_ns != 0 || errors).then_some((slower_than_ns, errors))
}

/// Under tail capture, each open call's entry event, until its return says whether to send it.
#[map]
static HELD_ENTRIES: LruHashMap<OpenCall, CallEvent> =
    LruHashMap::with_max_entries(MAX_HELD_ENTRIES, 0);

/// Where an event is built before it is held or sent: a `CallEvent` does not fit the 512-byte
/// BPF stack.
#[map]
static TAIL_SCRATCH: PerCpuArray<CallEvent> = PerCpuArray::with_max_entries(1, 0);

/// Holds an entry's event; at the return, sends the held entry and the return only for a call
/// that was slow or failed. Not inlined, for the same reason as `emit`.
#[inline(never)]
fn capture_tail(hit: &Hit, observed: CallHit, took_ns: u64) -> Result<(), ()> {
    let (slower_than_ns, errors) = tail_capture().ok_or(())?;
    let Some(goid) = to_send(hit, observed) else {
        return Ok(());
    };
    let call = hit.call().ok_or(())?;
    let scratch = TAIL_SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: this CPU's slot, which nothing else uses while the program runs here.
    let e = unsafe { &mut *scratch };
    fill(e, hit, goid, took_ns);
    if hit.kind == EventKind::Entry {
        if observed == CallHit::Starts {
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "by value, the event would not fit the 512-byte BPF stack"
            )]
            let _ = HELD_ENTRIES.insert(call, &*e, 0);
        }
        return Ok(());
    }
    if observed != CallHit::Paired {
        return Ok(());
    }
    let took = took_ns;
    let slow = slower_than_ns != 0 && took >= slower_than_ns;
    // Every word read at its constant index, volatile so that the compiler cannot fold the
    // reads into one at a computed index, which the verifier could not bound.
    let mut itab = 0;
    for i in 0..INT_ARG_REGS {
        // SAFETY: i < INT_ARG_REGS, the array's length.
        let word = unsafe { core::ptr::read_volatile(&e.regs[i]) };
        if i + 1 == hit.config.error_word as usize {
            itab = word;
        }
    }
    let failed = errors && itab != 0;
    if slow || failed {
        // SAFETY: the value stays valid until removed below, by this program.
        if let Some(held) = unsafe { HELD_ENTRIES.get(call) }
            && EVENTS.output::<CallEvent>(held, wakeup_flags()).is_err()
        {
            count(COUNTER_DROPPED);
        }
        if EVENTS.output::<CallEvent>(&*e, wakeup_flags()).is_err() {
            count(COUNTER_DROPPED);
        }
    }
    let _ = HELD_ENTRIES.remove(call);
    Ok(())
}

/// 1 to send an event per entry and return; 0 to count and time calls in the kernel only
/// (`CALL_STATS`).
// SAFETY: no other symbol of the object has this name; the loader sets it by name.
#[unsafe(no_mangle)]
static SEND_CALLS: u32 = 1;

/// Per traced function, its calls counted and timed (per CPU, summed by userspace).
#[map]
static CALL_STATS: PerCpuArray<CallStats> = PerCpuArray::with_max_entries(MAX_TRACED_FUNCTIONS, 0);

/// The entry time of each call in flight that its goroutine's `INNERMOST_CALL` entry does not
/// hold (nested deeper, or no entry), to time it at its return.
#[map]
static CALL_STARTS: LruHashMap<OpenCall, CallStart> =
    LruHashMap::with_max_entries(MAX_DEEP_CALLS, 0);

/// Return addresses, link-time, whose call sites have a probe on the caller's side
/// (`COOKIE_AT_RETURN_SITE`): the calls made there are closed by that probe.
#[map]
static FAST_RETURNS: HashMap<u64, u8> = HashMap::with_max_entries(MAX_FAST_RETURNS, 0);

/// At a return site, puts each result word the caller has moved since the return back in its
/// register, as the callee left it (see `ProbeConfig::results`); false if a read failed.
fn restore_results(e: &mut CallEvent, regs: &pt_regs, config: &ProbeConfig) -> bool {
    let mut read = true;
    for i in 0..INT_ARG_REGS {
        let source = config.results[i];
        match source.kind {
            RESULT_IN_REGISTER => {
                if let Some(value) = register(regs, source.at) {
                    e.regs[i] = value;
                }
            }
            RESULT_ON_STACK => match read_u64(regs.rsp + source.at as u64) {
                Some(value) => e.regs[i] = value,
                None => read = false,
            },
            RESULT_DISCARDED => e.regs[i] = 0,
            _ => {}
        }
    }
    read
}

/// Non-zero while the `RET` probes are detached (`--returns sampled`, between windows): calls
/// from sites without a return site then go unobserved.
#[map]
static RETS_CLOSED: Array<u32> = Array::with_max_entries(1, 0);

/// Calls whose return a `RET` probe is to see, still open (summed over CPUs): the `RET`
/// probes of a sampling window are detached once these have returned.
#[map]
static OPEN_VIA_RET: PerCpuArray<i64> = PerCpuArray::with_max_entries(1, 0);

/// Non-zero once the session's end has detached the entry probes: a return then has an entry
/// unless it entered after they went, which is no call escapade saw.
#[map]
static ENTRIES_DETACHED: Array<u32> = Array::with_max_entries(1, 0);

fn entries_detached() -> bool {
    ENTRIES_DETACHED.get(0).is_some_and(|gone| *gone != 0)
}

fn rets_closed() -> bool {
    RETS_CLOSED.get(0).is_some_and(|closed| *closed != 0)
}

fn add_open_via_ret(n: i64) {
    if let Some(open) = OPEN_VIA_RET.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; nothing else writes it while the program runs here.
        unsafe { *open += n };
    }
}

/// What the kernel made of a probe hit on a traced function's entry or return.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CallHit {
    /// An entry or a return it counted (or an entry or return it does not time).
    Unpaired,
    /// An entry it counted, whose start is kept once the probe is done (its time then).
    Starts,
    /// An entry whose return no probe will see: the function's `RET`s are not probed and the
    /// call site has no return-site probe.
    Unobserved,
    /// A return it paired with its entry.
    Paired,
    /// A single-stepped entry's probe hit again for the same call (not counted again).
    Repeat,
    /// Not the return of the call this probe closes: another path through a return site, or
    /// a `RET` of a call a return site closes.
    NotThisCall,
}

/// Counts a call's entry and says whether to keep its start, and whether a return site will
/// close it. (Fieldless results: an enum's unused payload is uninitialized memory, which the
/// verifier refuses to see copied.)
fn entered(
    config: &ProbeConfig,
    call: OpenCall,
    return_addr: u64,
    offsets: &GoOffsets,
    may_repeat: bool,
    returns_at_sites: bool,
) -> (CallHit, bool) {
    if config.timed == 0 {
        count_entry(config.function, return_addr, false);
        return (CallHit::Unpaired, false);
    }
    let at_return_site = returns_at_sites || {
        let link_time = return_addr.wrapping_sub(offsets.code_bias);
        // SAFETY: lookup only tests presence.
        unsafe { FAST_RETURNS.get(link_time) }.is_some()
    };
    if !at_return_site && (config.ret_probed == 0 || rets_closed()) {
        count_entry(config.function, return_addr, true);
        return (CallHit::Unobserved, false);
    }
    // A restarted single-stepped entry hits again from the same return address: still the
    // same call. (A call at that depth left open by a panic looks the same; an emulated probe
    // never restarts, so it does not look.)
    let repeated = may_repeat && {
        // SAFETY: the value is read at once, not kept.
        let calls = unsafe { INNERMOST_CALL.get(call.goroutine()) };
        start_of(calls, call).is_some_and(|open| open.return_addr == return_addr)
    };
    if repeated {
        return (CallHit::Repeat, false);
    }
    count_entry(config.function, return_addr, false);
    if !at_return_site {
        add_open_via_ret(1);
    }
    (CallHit::Starts, at_return_site)
}

fn count_entry(function: u32, return_addr: u64, unobserved: bool) {
    if let Some(stats) = CALL_STATS.get_ptr_mut(function) {
        // SAFETY: this CPU's slot; nothing else writes it while the program runs here.
        unsafe {
            (*stats).entries += 1;
            (*stats).unobserved += u64::from(unobserved);
        }
    }
    count_caller(function, return_addr, 1, 0);
}

/// Non-zero to count calls per caller too (`CALLERS`): the agent's calls profile, with no
/// event per call.
// SAFETY: no other symbol of the object has this name; the loader sets it by name.
#[unsafe(no_mangle)]
static COUNT_CALLERS: u32 = 0;

/// Calls per (traced function, return address), and the time of those that returned (sized
/// by the loader).
#[map]
static CALLERS: PerCpuHashMap<CallerKey, CallerStats> =
    PerCpuHashMap::with_max_entries(1, SIZED_BY_USE);

fn count_caller(function: u32, return_addr: u64, calls: u64, ns: u64) {
    // SAFETY: a read of a constant the loader patched.
    if unsafe { core::ptr::read_volatile(&COUNT_CALLERS) } == 0 {
        return;
    }
    let key = CallerKey {
        function: u64::from(function),
        return_addr,
    };
    match CALLERS.get_ptr_mut(key) {
        // SAFETY: this CPU's value; nothing else writes it while the program runs here.
        Some(stats) => unsafe {
            (*stats).calls += calls;
            (*stats).total_ns += ns;
        },
        None => {
            let _ = CALLERS.insert(
                key,
                CallerStats {
                    calls,
                    total_ns: ns,
                },
                0,
            );
        }
    }
}

/// Pairs a return with its entry and times the call: what it was, and the call's duration.
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "by value, each key is a temporary of its own on the BPF stack: 32 bytes more"
)]
fn returned(
    config: &ProbeConfig,
    call: OpenCall,
    ktime_ns: u64,
    at_return_site: bool,
    code_bias: u64,
) -> (CallHit, u64) {
    if config.timed == 0 {
        return (CallHit::Unpaired, 0);
    }
    let goroutine = call.goroutine();
    // SAFETY: the goroutine's own value, which only its probes touch, one at a time.
    let calls = INNERMOST_CALL
        .get_ptr_mut(&goroutine)
        .map(|calls| unsafe { &mut *calls });
    let Some(start) = start_of(calls.as_deref(), call) else {
        // Already running at attach; or the restart of a single-stepped RET (the call just
        // returned there); or, once the session is ending, a call entered after the entry
        // probes went.
        // SAFETY: the value is copied.
        let restarted =
            unsafe { LAST_RET.get(&goroutine) }.is_some_and(|depth| *depth == call.depth());
        let hit = if at_return_site || restarted || entries_detached() {
            CallHit::NotThisCall
        } else {
            CallHit::Unpaired
        };
        return (hit, 0);
    };
    let closes = if at_return_site {
        start.at_return_site != 0 && start.return_addr == config.return_site + code_bias
    } else {
        start.at_return_site == 0
    };
    if !closes {
        return (CallHit::NotThisCall, 0);
    }
    close(calls, call, start.parent_depth);
    if !at_return_site {
        add_open_via_ret(-1);
        // A signal during the RET's single step makes the probe fire again: the next call at
        // this depth on this goroutine enters first, with a start of its own.
        let _ = LAST_RET.insert(&goroutine, call.depth(), 0);
    }
    let took = ktime_ns.saturating_sub(start.ktime_ns);
    count_caller(config.function, start.return_addr, 0, took);
    let Some(stats) = CALL_STATS.get_ptr_mut(config.function) else {
        return (CallHit::Paired, took);
    };
    let bucket = log2(took).min(LATENCY_BUCKETS - 1);
    // SAFETY: this CPU's slot; nothing else writes it while the program runs here.
    let stats = unsafe { &mut *stats };
    stats.returns += 1;
    stats.caller_returns += u64::from(at_return_site);
    stats.total_ns += took;
    if let Some(slot) = stats.latency.get_mut(bucket) {
        *slot += 1;
    }
    (CallHit::Paired, took)
}

/// floor(log2(n)), 0 for 0: without a count-leading-zeros instruction in BPF.
fn log2(mut n: u64) -> usize {
    let mut log = 0;
    for shift in [32, 16, 8, 4, 2, 1] {
        if n >> shift != 0 {
            n >>= shift;
            log += shift;
        }
    }
    log
}

/// Counts `goid` into a traced call on entry and out of it on return.
fn track_calls(goid: u64, kind: EventKind) {
    let goroutine = in_this_process(goid);
    // SAFETY: the value is copied out.
    let inside = unsafe { ACTIVE_CALLS.get(goroutine) }.copied().unwrap_or(0);
    match kind {
        EventKind::Entry => {
            let _ = ACTIVE_CALLS.insert(goroutine, inside + 1, 0);
        }
        EventKind::Return if inside > 1 => {
            let _ = ACTIVE_CALLS.insert(goroutine, inside - 1, 0);
        }
        EventKind::Return => {
            let _ = ACTIVE_CALLS.remove(goroutine);
        }
        _ => {}
    }
}
