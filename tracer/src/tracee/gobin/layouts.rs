//! Runtime layouts for binaries without DWARF, per Go version. Each entry was read from the
//! DWARF of a binary built by that release; `tests/stripped.rs` checks the table against DWARF for
//! every installed toolchain.

use super::Section;
use super::dwarf::GLayout;

/// `runtime.g`: `stack` is its first field (lo, hi), `goid` follows the scheduling state.
pub fn g_layout((major, minor, _): (u32, u32, u32)) -> Option<GLayout> {
    // Read from the DWARF of 1.21.13, 1.22.10, 1.23.9, 1.24.11, 1.25.5, 1.26.6 and 1.27.3:
    // 1.23 and 1.24 have one more word ahead of `goid`.
    let goid = match (major, minor) {
        (1, 21 | 22 | 25..=27) => 152,
        (1, 23 | 24) => 160,
        _ => return None,
    };
    Some(GLayout {
        goid,
        stack_lo: 0,
        stack_hi: 8,
    })
}

/// Without a symbol table, `runtime.types` is the start of the section the linker puts type
/// descriptors in: `.rodata`, or `.data.rel.ro` in position-independent builds; Go 1.27 gives
/// them a section of their own (`.go.type`, `.data.rel.ro.go.type`).
pub fn types_section(sections: &[Section]) -> Option<&Section> {
    [
        ".go.type",
        ".data.rel.ro.go.type",
        ".data.rel.ro",
        ".rodata",
    ]
    .iter()
    .find_map(|name| sections.iter().find(|s| s.name == *name))
}

/// Where the heap profiler's hooks keep what escapade reads, per Go version (from the runtime
/// sources: `mProf_Malloc` in mprof.go, `special` and `_KindSpecialProfile` in mheap.go).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfileLayout {
    /// Argument registers (0 = RAX, 1 = RBX, ...) of `mProf_Malloc`'s address and size:
    /// Go 1.23 added an `mp *m` first.
    pub mprof_malloc_addr_reg: u64,
    pub mprof_malloc_size_reg: u64,
    /// `special.offset` became a uintptr in Go 1.24, moving `kind`.
    pub special_kind_offset: u64,
    /// New special kinds were numbered ahead of the profile's in 1.23 and 1.25.
    pub special_kind_profile: u64,
}

pub fn profile_layout((major, minor, _): (u32, u32, u32)) -> Option<ProfileLayout> {
    let (regs, offset, kind) = match (major, minor) {
        (1, 21 | 22) => ((0, 1), 10, 2),
        (1, 23) => ((1, 2), 10, 3),
        (1, 24) => ((1, 2), 16, 3),
        (1, 25..=27) => ((1, 2), 16, 4),
        _ => return None,
    };
    Some(ProfileLayout {
        mprof_malloc_addr_reg: regs.0,
        mprof_malloc_size_reg: regs.1,
        special_kind_offset: offset,
        special_kind_profile: kind,
    })
}

/// The runtime fields escapade reads without DWARF: the runtime's record of a GC cycle
/// (`runtime.work`, `runtime.memstats`, `runtime.gcController`) and where a goroutine keeps its
/// `go` statement and function (`runtime.g`). As (type, field).
pub const RUNTIME_FIELDS: [(&str, &str); 12] = [
    ("runtime.mstats", "numgc"),
    ("runtime.workType", "tSweepTerm"),
    ("runtime.workType", "tMark"),
    ("runtime.workType", "tMarkTerm"),
    ("runtime.workType", "tEnd"),
    ("runtime.workType", "pauseNS"),
    ("runtime.workType", "heap0"),
    ("runtime.workType", "heap1"),
    ("runtime.workType", "heap2"),
    ("runtime.gcControllerState", "lastHeapGoal"),
    ("runtime.g", "gopc"),
    ("runtime.g", "startpc"),
];

/// The offset of one of [`RUNTIME_FIELDS`] in its type, read from the DWARF of 1.21.13,
/// 1.22.10, 1.23.9, 1.24.11, 1.25.5, 1.26.6 and 1.27.3.
pub fn field_offset(
    (major, minor, _): (u32, u32, u32),
    structure: &str,
    field: &str,
) -> Option<u64> {
    let index = RUNTIME_FIELDS
        .iter()
        .position(|&f| f == (structure, field))?;
    // In the order of RUNTIME_FIELDS.
    let offsets: [u64; RUNTIME_FIELDS.len()] = match (major, minor) {
        (1, 21) => [7704, 416, 424, 432, 440, 448, 464, 472, 480, 96, 280, 296],
        (1, 22) => [7704, 416, 424, 432, 440, 448, 456, 464, 472, 96, 280, 296],
        (1, 23 | 24) => [7704, 440, 448, 456, 464, 472, 480, 488, 496, 96, 288, 304],
        (1, 25) => [7680, 528, 536, 544, 552, 560, 568, 576, 584, 96, 280, 296],
        (1, 26 | 27) => [7680, 664, 672, 680, 688, 696, 704, 712, 720, 96, 288, 304],
        _ => return None,
    };
    Some(offsets[index])
}
