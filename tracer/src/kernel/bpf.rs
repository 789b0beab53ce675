//! The few `bpf(2)` calls aya 0.14 does not make for escapade: loading a program for a given
//! attach type, `uprobe_multi` links, and raw tracepoints by name; and what the verifier's
//! refusal of a program says.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};

use aya_obj::generated::{
    BPF_ALU64, BPF_EXIT, BPF_JMP, BPF_K, BPF_MOV, bpf_attach_type,
    bpf_attach_type::BPF_TRACE_UPROBE_MULTI, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_type,
};

/// The verifier refused one of escapade's programs: the message names the program, the kernel
/// and the verifier's reason, not its whole log (`-v` prints that).
#[derive(Debug, thiserror::Error)]
#[error("the kernel ({release}) refused program {program}: {reason}")]
pub struct Refused {
    pub program: String,
    pub release: String,
    /// The line of the verifier's log that says why.
    pub reason: String,
}

impl Refused {
    pub fn new(program: &str, log: &str) -> Refused {
        // The kernel ends the log with a NUL; what follows is left over from a log that
        // wrapped around the buffer.
        let log = log.split('\0').next().unwrap_or_default();
        tracing::debug!("the verifier's log for {program}:\n{log}");
        Refused {
            program: program.to_string(),
            release: super::release(),
            reason: reason(log),
        }
    }
}

/// The error of aya loading `program`: [`Refused`] when the verifier had its say, else aya's
/// own (an EPERM comes before the verifier, with an empty log).
pub fn aya_load_error(program: &str, e: aya::programs::ProgramError) -> anyhow::Error {
    if let aya::programs::ProgramError::LoadError { verifier_log, .. } = &e {
        let log = verifier_log.to_string();
        if !log.trim().is_empty() {
            return Refused::new(program, &log).into();
        }
    }
    anyhow::Error::new(e).context(format!("loading program {program}"))
}

/// The line of a verifier log that says why it refused the program: the last one, past the
/// statistics the kernel appends whatever the outcome.
fn reason(log: &str) -> String {
    let statistics = [
        "processed ",
        "verification time",
        "stack depth",
        "max_states_per_insn",
    ];
    log.lines()
        .map(str::trim)
        .rev()
        .find(|line| !line.is_empty() && !statistics.iter().any(|s| line.starts_with(s)))
        .unwrap_or("no reason in the verifier's log")
        .to_string()
}

/// Why loading a program failed: [`Refused`], or the system call's error.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("loading program {program}: {error}")]
    Io {
        program: String,
        #[source]
        error: io::Error,
    },
}

/// Loads program `name` of type `prog_type`; `attach` is the attach type its links will ask
/// for, where they need it said at load time (`uprobe_multi`).
pub fn load_program(
    name: &str,
    prog_type: bpf_prog_type,
    attach: Option<bpf_attach_type>,
    insns: &[bpf_insn],
    license: &CStr,
) -> Result<OwnedFd, LoadError> {
    let load = |log: &mut [u8]| {
        // SAFETY: an all-zero bpf_attr is the kernel's "unset" for every field.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing plain integers and pointers to buffers that outlive the call into
        // the union's prog-load member, the one BPF_PROG_LOAD reads.
        unsafe {
            let prog = &mut attr.__bindgen_anon_3;
            prog.prog_type = prog_type as u32;
            if let Some(attach) = attach {
                prog.expected_attach_type = attach as u32;
            }
            prog.insns = insns.as_ptr() as u64;
            prog.insn_cnt = insns.len() as u32;
            prog.license = license.as_ptr() as u64;
            for (dst, src) in prog.prog_name.iter_mut().zip(name.bytes().take(15)) {
                *dst = src as _;
            }
            if !log.is_empty() {
                prog.log_level = 1;
                prog.log_buf = log.as_mut_ptr() as u64;
                prog.log_size = log.len() as u32;
            }
        }
        bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
    };
    load(&mut []).or_else(|_| {
        // Again with the verifier's log, to say why.
        let mut log = vec![0u8; 1 << 20];
        load(&mut log).map_err(|error| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            if text.trim().is_empty() {
                LoadError::Io {
                    program: name.to_string(),
                    error,
                }
            } else {
                Refused::new(name, &text).into()
            }
        })
    })
}

/// A program that does nothing, to try a program type or an attach point with.
pub fn trivial_program(
    name: &str,
    prog_type: bpf_prog_type,
    attach: Option<bpf_attach_type>,
) -> Result<OwnedFd, LoadError> {
    let insn = |code: u32| bpf_insn {
        code: code as u8,
        _bitfield_align_1: [],
        _bitfield_1: bpf_insn::new_bitfield_1(0, 0),
        off: 0,
        imm: 0,
    };
    // r0 = 0; exit
    let insns = [insn(BPF_ALU64 | BPF_MOV | BPF_K), insn(BPF_JMP | BPF_EXIT)];
    load_program(name, prog_type, attach, &insns, c"GPL")
}

/// A `uprobe_multi` link of program `prog` (loaded for one) at each of `offsets` in the file
/// at `path`, each probe with its cookie; in process `pid` only (0: in every process that runs
/// the file).
pub fn uprobe_multi_link(
    prog: BorrowedFd<'_>,
    path: &CStr,
    pid: u32,
    offsets: &[u64],
    cookies: &[u64],
) -> io::Result<OwnedFd> {
    assert_eq!(offsets.len(), cookies.len(), "a cookie per offset");
    // SAFETY: an all-zero bpf_attr is the kernel's "unset" for every field.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing plain integers into the union's link_create member, the one
    // BPF_LINK_CREATE reads.
    unsafe {
        let link = &mut attr.link_create;
        link.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
        link.attach_type = BPF_TRACE_UPROBE_MULTI as u32;
        let multi = &mut link.__bindgen_anon_3.uprobe_multi;
        multi.path = path.as_ptr() as u64;
        multi.offsets = offsets.as_ptr() as u64;
        multi.cookies = cookies.as_ptr() as u64;
        multi.cnt = offsets.len() as u32;
        multi.pid = pid;
    }
    bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr)
}

/// Attaches raw-tracepoint program `prog` to the tracepoint `name`; closing the fd detaches.
pub fn raw_tracepoint_open(prog: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero bpf_attr is the kernel's "unset" for every field.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // The union's raw_tracepoint member, the one BPF_RAW_TRACEPOINT_OPEN reads.
    attr.raw_tracepoint.name = name.as_ptr() as u64;
    attr.raw_tracepoint.prog_fd = prog.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr)
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid bpf_attr of the size passed, and every pointer in it points
    // to memory the caller keeps alive for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_last_line_before_the_statistics() {
        let log = "0: R1=ctx() R10=fp0\n\
                   combined stack size of 3 calls is 608. Too large\n\
                   verification time 1234 usec\n\
                   stack depth 8+304+296\n\
                   processed 120 insns (limit 1000000) max_states_per_insn 0 total_states 9\n";
        assert_eq!(
            reason(log),
            "combined stack size of 3 calls is 608. Too large"
        );
        assert_eq!(reason(""), "no reason in the verifier's log");
        let wrapped = "R1 invalid mem access 'scalar'\nprocessed 9 insns\n\0ld over from before\n";
        assert_eq!(
            Refused::new("go_entry", wrapped).reason,
            "R1 invalid mem access 'scalar'"
        );
    }
}
