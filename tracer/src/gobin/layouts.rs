//! Runtime layouts for binaries without DWARF, per Go version. Each entry was read from the
//! DWARF of a binary built by that release; `tests/gobin.rs` checks the table against DWARF for
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
/// descriptors in: `.rodata`, or `.data.rel.ro` in position-independent builds.
pub fn types_section(sections: &[Section]) -> Option<&Section> {
    [".data.rel.ro", ".rodata"]
        .iter()
        .find_map(|name| sections.iter().find(|s| s.name == *name))
}
