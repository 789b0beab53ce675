//! The agent's exec watcher: the PID of every process that runs a new program, so the agent
//! attaches to a target's new process within milliseconds of its `exec` rather than at its next
//! scan of /proc. A separate object from the uprobes, since it watches the whole system once
//! while those are loaded per traced process.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, raw_tracepoint},
    maps::RingBuf,
    programs::RawTracePointContext,
};

/// PIDs (u32) that just exec'd; the agent reads them a few at a time, and if it falls behind
/// its scan of /proc finds the processes anyway.
#[map]
static EXECS: RingBuf = RingBuf::with_byte_size(64 << 10, 0);

// A raw tracepoint attaches by name, without tracefs mounted.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(_ctx: RawTracePointContext) -> i32 {
    // After exec the task is its process's leader: its thread id is the PID.
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let _ = EXECS.output::<u32>(&pid, 0);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// SAFETY: the section holds only this NUL-terminated string, which the kernel reads as the
// object's license; no other symbol has this name.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
