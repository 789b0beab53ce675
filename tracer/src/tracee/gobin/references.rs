//! Where a function's address is taken, read from the binary file.
//!
//! A return-site probe sits after a direct `CALL f` in one of f's callers, an instruction the
//! kernel emulates, instead of on f's `RET`, which it single-steps (~10 us a hit). It sees only
//! the returns of calls made by such instructions. A call through a func value, a closure, an
//! itab (static or built by `runtime.getitab` from a type's method table), a method value or
//! reflect returns where no probe waits, and so does a call that reached f by a tail call
//! (`JMP f`), whose return goes to the caller of the function that jumped. All of these need
//! f's address somewhere other than in a `CALL rel32`, so a function whose address appears
//! nowhere else is entered only by direct calls and can drop its RET probes; the others keep
//! them. A miss here loses returns, while a function kept needlessly only keeps the slower
//! probe, so every doubt answers "kept".
//!
//! The binary is usually stripped, so neither symbols nor DWARF say where addresses are; the
//! whole file is searched instead, a section at a time, for the forms Go's toolchain writes.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use iced_x86::{FlowControl, Instruction, Mnemonic, OpKind};
use object::elf::{SHF_ALLOC, SHF_EXECINSTR, SHT_NOBITS};
use object::read::elf::{FileHeader as _, SectionHeader as _};

use super::GoBinary;
use crate::amd64::Linear;

/// The subset of `entries` (link-time function entries) whose functions may be entered other
/// than by a direct `CALL`.
pub(super) fn called_indirectly(bin: &GoBinary, entries: &[u64]) -> anyhow::Result<HashSet<u64>> {
    let targets = Targets::new(bin, entries);
    let text = bin.pclntab.text_start();
    let no_types = || {
        format!(
            "{}: no section holds the type descriptors, so their method tables cannot be \
             searched",
            bin.path.display()
        )
    };
    // `runtime.types`, which type and name offsets are relative to.
    let types = bin.types_base.with_context(no_types)?;
    let mut types_searched = false;
    // -1 stands for a method the linker found unreachable.
    let method_text = |off: u32| {
        let pc = text + u64::from(off);
        off == u32::MAX || bin.pclntab.func_for_pc(pc).is_some_and(|f| f.entry == pc)
    };
    let mut found = HashSet::new();
    for section in loaded_sections(bin)? {
        // The function table holds offsets and line tables, never an address to call.
        if section.name.ends_with(".gopclntab") {
            continue;
        }
        // By file offset: a TLS section (`.tbss`) can share its address with another.
        let bytes = bin
            .file
            .read(section.offset, section.size)
            .with_context(|| {
                format!(
                    "reading {} of {} for taken function addresses",
                    section.name,
                    bin.path.display()
                )
            })?;
        if section.code {
            targets.in_code(&bytes, section.addr, &mut found);
        } else {
            targets.in_data(&bytes, section.addr, &mut found);
            let end = section.addr.saturating_add(section.size);
            if (section.addr..end).contains(&types) {
                // Type and name offsets are less.
                let types_len = u32::try_from(end - types).unwrap_or(u32::MAX);
                targets.in_method_tables(&bytes, section.addr, types_len, method_text, &mut found);
                types_searched = true;
            }
        }
    }
    anyhow::ensure!(types_searched, no_types());
    Ok(found)
}

/// A section the loader maps with bytes from the file.
struct Loaded {
    name: String,
    addr: u64,
    offset: u64,
    size: u64,
    code: bool,
}

/// Every section with bytes the process sees, from the ELF section headers (the model's own
/// section list does not say which hold code).
fn loaded_sections(bin: &GoBinary) -> anyhow::Result<Vec<Loaded>> {
    let context = || format!("reading the section headers of {}", bin.path.display());
    let cache = bin.file.cache();
    let header =
        object::elf::FileHeader64::<object::Endianness>::parse(&cache).with_context(context)?;
    let endian = header.endian().with_context(context)?;
    let table = header.sections(endian, &cache).with_context(context)?;
    let mut loaded = Vec::new();
    for s in table.iter() {
        let flags = s.sh_flags(endian);
        if flags & u64::from(SHF_ALLOC) == 0
            || s.sh_type(endian) == SHT_NOBITS
            || s.sh_size(endian) == 0
        {
            continue;
        }
        let name = table.section_name(endian, s).with_context(context)?;
        loaded.push(Loaded {
            name: String::from_utf8_lossy(name).into_owned(),
            addr: s.sh_addr(endian),
            offset: s.sh_offset(endian),
            size: s.sh_size(endian),
            code: flags & u64::from(SHF_EXECINSTR) != 0,
        });
    }
    bin.file.check()?;
    Ok(loaded)
}

/// The functions asked about, in the forms their address takes.
struct Targets {
    /// Entry to end, so that a function's jump back to its own entry (the retry after
    /// `morestack`) is not taken for a tail call.
    ends: HashMap<u64, u64>,
    /// Offset from `runtime.text` to entry, as method tables hold it.
    text_offs: HashMap<u32, u64>,
}

impl Targets {
    fn new(bin: &GoBinary, entries: &[u64]) -> Targets {
        let text = bin.pclntab.text_start();
        let end = |entry: u64| {
            bin.pclntab
                .func_for_pc(entry)
                .filter(|f| f.entry == entry)
                .map_or(entry, |f| f.end)
        };
        Targets {
            ends: entries.iter().map(|&e| (e, end(e))).collect(),
            text_offs: entries
                .iter()
                .filter_map(|&e| Some((u32::try_from(e.checked_sub(text)?).ok()?, e)))
                .collect(),
        }
    }

    /// Pointer-sized words holding an entry: static funcvals (`f·f`), itabs' method words and
    /// type descriptors' `equal` functions wherever the linker put them, and, in a
    /// position-independent binary, the addends of the `R_X86_64_RELATIVE` relocations (in
    /// `.rela` or `.rela.dyn`, themselves loaded data) that set such words at load time, since
    /// the words themselves may then hold 0. Go aligns pointers.
    fn in_data(&self, bytes: &[u8], addr: u64, found: &mut HashSet<u64>) {
        for word in aligned::<8>(bytes, addr) {
            let value = u64::from_le_bytes(word);
            if self.ends.contains_key(&value) {
                found.insert(value);
            }
        }
    }

    /// The `ifn` and `tfn` text offsets of type descriptors' method entries, from which
    /// `runtime.getitab` builds itabs at run time and reflect calls methods. The linker writes
    /// the offset of every reachable method, even one only ever called directly, so this keeps
    /// more than it needs: every method of a type with a descriptor whose function type is in
    /// the binary for any reason.
    ///
    /// The section also holds strings and function metadata, whose 4-byte words would match
    /// the offsets of many functions, so a match counts only as part of what could be a method
    /// entry (`internal/abi.Method`): `{name, mtyp, ifn, tfn}`, a name offset and a type offset
    /// in `1..types_len` (0 is no name or type) and two text offsets that are each a function's
    /// entry or -1 (`method_text`). A method whose type the linker left out (-1) is one no
    /// interface or reflect call uses: `itab.init` matches methods by name and type, and
    /// reflect calls only methods whose type it can read.
    fn in_method_tables(
        &self,
        bytes: &[u8],
        addr: u64,
        types_len: u32,
        method_text: impl Fn(u32) -> bool,
        found: &mut HashSet<u64>,
    ) {
        let words: Vec<u32> = aligned::<4>(bytes, addr).map(u32::from_le_bytes).collect();
        // Whether a method entry could start at word `start`.
        let method_at = |start: usize| match words.get(start..start + 4) {
            Some(&[name, mtyp, ifn, tfn]) => {
                (1..types_len).contains(&name)
                    && (1..types_len).contains(&mtyp)
                    && method_text(ifn)
                    && method_text(tfn)
            }
            _ => false,
        };
        for (i, word) in words.iter().enumerate() {
            let Some(&entry) = self.text_offs.get(word) else {
                continue;
            };
            // As `ifn`, or as `tfn`.
            if [2, 3]
                .into_iter()
                .any(|back| i.checked_sub(back).is_some_and(method_at))
            {
                found.insert(entry);
            }
        }
    }

    /// Instructions that take an entry's address: `LEAQ f(SB)` (how Go code makes a closure or
    /// a method value or passes a function to `newproc`, and what Go's assembler makes of
    /// `MOVQ $f(SB), R`), an immediate (how the C code of a cgo binary not built as PIE can
    /// pass one), and a jump from outside the function (a wrapper's tail call, or a C-style
    /// `Jcc`). A direct `CALL` is what return sites see, so it is no reference.
    fn in_code(&self, code: &[u8], addr: u64, found: &mut HashSet<u64>) {
        let mut insns = Linear::new(code, addr);
        for insn in insns.by_ref() {
            if matches!(
                insn.flow_control(),
                FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch
            ) {
                let target = insn.near_branch_target();
                if self
                    .ends
                    .get(&target)
                    .is_some_and(|&end| !(target..end).contains(&insn.ip()))
                {
                    found.insert(target);
                }
            }
            if insn.mnemonic() == Mnemonic::Lea && insn.is_ip_rel_memory_operand() {
                self.check(insn.ip_rel_memory_address(), found);
            }
            for op in 0..insn.op_count() {
                if let Some(value) = address_immediate(&insn, op) {
                    self.check(value, found);
                }
            }
        }
        insns.log_skipped("called_indirectly");
    }

    fn check(&self, addr: u64, found: &mut HashSet<u64>) {
        if self.ends.contains_key(&addr) {
            found.insert(addr);
        }
    }
}

/// Operand `op` of `insn` if it is an immediate wide enough to be a code address.
fn address_immediate(insn: &Instruction, op: u32) -> Option<u64> {
    matches!(
        insn.op_kind(op),
        OpKind::Immediate32 | OpKind::Immediate32to64 | OpKind::Immediate64
    )
    .then(|| insn.immediate(op))
}

/// The `N`-byte words of `bytes` (loaded at `addr`) at addresses that are multiples of `N`.
fn aligned<const N: usize>(bytes: &[u8], addr: u64) -> impl Iterator<Item = [u8; N]> + '_ {
    // The distance from `addr` up to the next multiple of N; N is a small power of two.
    let skip = (addr.wrapping_neg() % N as u64) as usize;
    bytes
        .get(skip..)
        .unwrap_or_default()
        .chunks_exact(N)
        .map(|w| w.try_into().expect("chunks_exact yields N bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function at 0x1000..0x1040, 0x40 bytes past `runtime.text` at 0xfc0.
    const F: u64 = 0x1000;

    fn targets() -> Targets {
        Targets {
            ends: HashMap::from([(F, F + 0x40)]),
            text_offs: HashMap::from([(0x40, F)]),
        }
    }

    /// `opcode` with a 32-bit operand relative to the next instruction, which targets `target`
    /// when the instruction sits at `at`.
    fn rel32(opcode: &[u8], at: u64, target: u64) -> Vec<u8> {
        let next = at + opcode.len() as u64 + 4;
        let rel = i32::try_from(target.wrapping_sub(next) as i64).unwrap();
        [opcode, &rel.to_le_bytes()].concat()
    }

    fn in_code(code: &[u8], at: u64) -> HashSet<u64> {
        let mut found = HashSet::new();
        targets().in_code(code, at, &mut found);
        found
    }

    #[test]
    fn direct_calls_and_a_functions_own_retry_jump_take_no_address() {
        assert!(
            in_code(&rel32(&[0xe8], 0x2000, F), 0x2000).is_empty(),
            "CALL"
        );
        // The jump back to the entry after `runtime.morestack`.
        assert!(in_code(&rel32(&[0xe9], F + 0x30, F), F + 0x30).is_empty());
        assert!(in_code(&[0xeb, 0x100u16.wrapping_sub(0x12) as u8], F + 0x10).is_empty());
    }

    #[test]
    fn jumps_from_elsewhere_and_loaded_addresses_are_references() {
        let cases = [
            ("JMP rel32", rel32(&[0xe9], 0x2000, F)),
            ("JBE rel32", rel32(&[0x0f, 0x86], 0x2000, F)),
            ("LEA RAX, [RIP+f]", rel32(&[0x48, 0x8d, 0x05], 0x2000, F)),
            (
                "MOV EAX, imm32",
                [&[0xb8][..], &(F as u32).to_le_bytes()].concat(),
            ),
            (
                "MOV RAX, imm32",
                [&[0x48, 0xc7, 0xc0][..], &(F as u32).to_le_bytes()].concat(),
            ),
        ];
        for (what, code) in cases {
            assert_eq!(in_code(&code, 0x2000), HashSet::from([F]), "{what}");
        }
    }

    #[test]
    fn pointer_words_count_only_when_aligned() {
        let mut data = vec![0u8; 32];
        data[4..12].copy_from_slice(&F.to_le_bytes());
        let mut found = HashSet::new();
        targets().in_data(&data, 0x8000, &mut found);
        assert!(found.is_empty(), "misaligned");
        targets().in_data(&data, 0x8004, &mut found);
        assert_eq!(found, HashSet::from([F]));
    }

    /// A method entry `{name, mtyp, ifn, tfn}` holds the offset among other offsets; the same
    /// value amid other data does not count.
    #[test]
    fn method_offsets_count_inside_what_could_be_a_method_entry() {
        let is_entry = |off: u32| off == u32::MAX || [0x40, 0x80].contains(&off);
        let scan = |words: &[u32]| {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let mut found = HashSet::new();
            targets().in_method_tables(&bytes, 0x9000, 0x1000, is_entry, &mut found);
            found
        };
        let f = HashSet::from([F]);
        let unreachable = u32::MAX;
        assert_eq!(
            scan(&[7, 0x123, 0x456, 0x40, 0x40, 9]),
            f,
            "pointer receiver"
        );
        assert_eq!(scan(&[0x123, 0x456, 0x80, 0x40]), f, "value receiver's tfn");
        assert_eq!(scan(&[0x123, 0x456, 0x40, 0x80]), f, "value receiver's ifn");
        assert_eq!(scan(&[0x123, 0x456, 0x40, unreachable]), f, "ifn only");
        assert!(
            scan(&[0x123, unreachable, 0x40, 0x40]).is_empty(),
            "type left out"
        );
        assert!(scan(&[0x123, 0, 0x40, 0x40]).is_empty(), "no type");
        assert!(scan(&[0x123, 0x456, 0x40, 0x789]).is_empty(), "no tfn");
        assert!(
            scan(&[0x123, 0x4560, 0x40, 0x40]).is_empty(),
            "type out of range"
        );
        assert!(
            scan(&[0x1230, 0x456, 0x80, 0x40]).is_empty(),
            "name out of range"
        );
        assert!(scan(&[0, 0x456, 0x80, 0x40]).is_empty(), "no name");
        assert!(scan(&[0x456, 0x40, 0x40]).is_empty(), "cut short");
    }
}
