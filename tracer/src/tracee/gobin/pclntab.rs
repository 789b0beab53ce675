//! The Go function table (`.gopclntab`).
//!
//! The runtime needs it for stack traces and garbage collection, so it survives
//! `-ldflags=-s -w`, which drops the ELF symbol table and DWARF. It is a `runtime.pcHeader`
//! followed by the tables the header points at, in this order: function names, compilation
//! unit file indexes, file names, pc-value tables, then the function table proper (a sorted
//! array of (entry offset, `_func` offset) pairs, one extra pair holding the end pc, followed by
//! the `_func` records). See runtime/symtab.go, `_func` in runtime/runtime2.go and
//! cmd/link/internal/ld/pcln.go. Only the Go 1.20+ layout on amd64 is supported.
//!
//! Inlining is recorded per function: pc-value table `PCDATA_InlTreeIndex` says which inlined
//! call a pc is in, an index into the function's inline tree, `FUNCDATA_InlTree`. Funcdata lives
//! outside the pclntab, at offsets from `runtime.moduledata.gofunc` (the `go:func.*` symbol),
//! which is found through the moduledata. See runtime/symtabinl.go.

use std::ops::Range;

use object::elf::{SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE};
use object::{Architecture, Object, ObjectSection, ReadRef, SectionFlags};

const MAGIC: u32 = 0xffff_fff1;
const OLD_MAGICS: [(u32, &str); 3] = [
    (0xffff_fff0, "1.18 or 1.19"),
    (0xffff_fffa, "1.16 or 1.17"),
    (0xffff_fffb, "1.2 to 1.15"),
];
/// What follows the magic on amd64: two pad bytes, instruction size quantum 1, pointer size 8.
const AMD64_HEADER_TAIL: [u8; 4] = [0, 0, 1, 8];
const HEADER_SIZE: usize = 8 + 8 * 8;
/// Field offsets in `runtime.pcHeader`.
const HDR_NFUNC: usize = 8;
const HDR_TEXT_START: usize = 24;
const HDR_FUNCNAME: usize = 32;
/// Field offsets in `runtime._func`.
const FUNC_NAME_OFF: usize = 4;
const FUNC_PCFILE: usize = 20;
const FUNC_PCLN: usize = 24;
const FUNC_NPCDATA: usize = 28;
const FUNC_CU_OFFSET: usize = 32;
const FUNC_NFUNCDATA: usize = 43;
/// The fixed part of `_func`; `npcdata` u32 pc-value table offsets follow, then `nfuncdata` u32
/// funcdata offsets.
const FUNC_SIZE: usize = 44;
/// `abi.PCDATA_InlTreeIndex`, `abi.FUNCDATA_InlTree` and `abi.FUNCDATA_ArgInfo`.
const PCDATA_INL_TREE_INDEX: usize = 2;
const FUNCDATA_INL_TREE: usize = 3;
pub const FUNCDATA_ARG_INFO: usize = 5;
/// `runtime.inlinedCall`: funcID u8, 3 pad bytes, nameOff i32, parentPc i32, startLine i32.
const INLINED_CALL_SIZE: usize = 16;
const INL_NAME_OFF: usize = 4;
const INL_PARENT_PC: usize = 8;
/// Deeper inlining than this is taken for a malformed (cyclic) tree.
const MAX_INLINE_DEPTH: usize = 1000;
/// Field offsets in `runtime.moduledata`, unchanged from Go 1.16 to 1.26.
const MD_FUNCNAMETAB: usize = 8;
const MD_MINPC: usize = 160;
const MD_TEXT: usize = 176;
const MD_TYPES: usize = 296;
const MD_GOFUNC: usize = 320;
/// Go 1.27 put `typedesclen` after `types`, and `itaboffset` and `itabsize` before `rodata`.
const MD_GOFUNC_SINCE_1_27: usize = 344;

#[derive(Debug, thiserror::Error)]
pub enum PclntabError {
    #[error("no .gopclntab section and no pclntab magic found")]
    NotGo,
    #[error("Go binary is too old: its pclntab is from Go {0}; escapade needs Go 1.21+")]
    TooOld(&'static str),
    #[error("unsupported architecture {0:?}: escapade traces linux/amd64 Go binaries only")]
    UnsupportedArch(Architecture),
    #[error("malformed Go pclntab: {0}")]
    Malformed(&'static str),
    #[error(
        "cannot find where Go code starts: the pclntab header has no text address and no runtime moduledata points at the pclntab"
    )]
    NoTextStart,
    #[error("cannot read section {section}")]
    Read {
        section: String,
        #[source]
        source: object::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Func<'t> {
    /// As the runtime prints it in stack traces, e.g. "main.(*T).M" or "main.Max[go.shape.int]".
    pub name: &'t str,
    pub entry: u64,
    pub end: u64,
}

/// A copy of the function table; addresses are link-time virtual addresses. Functions are
/// looked up in place, as the runtime does, so a big binary costs its table and nothing per
/// function.
pub struct Pclntab {
    /// From the header to the end of its section.
    data: Vec<u8>,
    /// The address function entry offsets are relative to (`runtime.text`).
    text_start: u64,
    nfunc: usize,
    funcnametab: Range<usize>,
    cutab: Range<usize>,
    filetab: Range<usize>,
    pctab: Range<usize>,
    /// The function table proper: `nfunc + 1` (entry offset, `_func` offset) pairs, then the
    /// `_func` records the second halves point at.
    pclntable: Range<usize>,
    /// The funcdata area, from `moduledata.gofunc` to the end of its section; empty when the
    /// moduledata was not found, and then inlined calls are not expanded.
    gofunc: Vec<u8>,
}

impl Pclntab {
    pub fn from_object<'d, R: ReadRef<'d>>(
        file: &object::File<'d, R>,
    ) -> Result<Pclntab, PclntabError> {
        if file.architecture() != Architecture::X86_64 {
            return Err(PclntabError::UnsupportedArch(file.architecture()));
        }
        let (addr, mut table) = locate(file)?;
        let moduledata = find_moduledata(file, addr, &table);
        table.text_start = match read_u64(&table.data, HDR_TEXT_START) {
            Some(text) if text != 0 => text,
            // Go 1.26 stopped writing it (the runtime reads moduledata.text instead). The
            // address of .text is no substitute: external linking puts C code before
            // runtime.text.
            _ => moduledata.ok_or(PclntabError::NoTextStart)?.0,
        };
        if let Some((_, gofunc)) = moduledata {
            table.gofunc = section_bytes_from(file, gofunc).unwrap_or_default();
        }
        // Entries are text_start plus a u32 offset; this keeps that sum from overflowing.
        if table.text_start.checked_add(u64::from(u32::MAX)).is_none() {
            return Err(PclntabError::Malformed("text address out of range"));
        }
        Ok(table)
    }

    /// `runtime.text`: what function entries, and the text offsets of methods in type
    /// descriptors, are relative to.
    pub fn text_start(&self) -> u64 {
        self.text_start
    }

    /// Every function, sorted by entry.
    pub fn funcs(&self) -> impl Iterator<Item = Func<'_>> {
        (0..self.nfunc).filter_map(|i| self.func(i))
    }

    /// The function called `name`; the table is sorted by address, so this is a scan.
    pub fn func_named(&self, name: &str) -> Option<Func<'_>> {
        self.funcs().find(|f| f.name == name)
    }

    pub fn func_for_pc(&self, pc: u64) -> Option<Func<'_>> {
        self.func(self.index_for_pc(pc)?)
    }

    /// The source position of the instruction at `pc` (not a return address: callers looking
    /// up a call site pass the return address minus one).
    pub fn file_line(&self, pc: u64) -> Option<(String, u32)> {
        self.file_line_in(self.index_for_pc(pc)?, pc)
    }

    /// The frames at `pc`, innermost (the inlined callee) first, outermost (the physical
    /// function) last; each with function name, file and line. For a pc not inside any inlined
    /// call: one frame, same as [`Pclntab::func_for_pc`] + [`Pclntab::file_line`]. Like
    /// `file_line`, `pc` is an instruction's address, not a return address. Empty when no
    /// function holds `pc`.
    pub fn frames(&self, pc: u64) -> Vec<(String, Option<(String, u32)>)> {
        let Some(i) = self.index_for_pc(pc) else {
            return Vec::new();
        };
        let Some(func) = self.func(i) else {
            return Vec::new();
        };
        let tree = self.inline_tree(i);
        let mut frames = Vec::new();
        let mut pc = pc;
        // As the runtime's inlineUnwinder: the inline tree index at pc names the inlined call
        // pc is in; its parentPc is a pc in the caller whose own index and position give the
        // next frame out, until index -1, the physical function.
        while let Some(tree) = tree {
            let index = self.pcdata(i, PCDATA_INL_TREE_INDEX, pc).unwrap_or(-1);
            let Ok(index) = usize::try_from(index) else {
                break;
            };
            let Some(call) = index
                .checked_mul(INLINED_CALL_SIZE)
                .and_then(|off| tree.get(off..off.checked_add(INLINED_CALL_SIZE)?))
            else {
                break;
            };
            if frames.len() >= MAX_INLINE_DEPTH {
                break;
            }
            let name = read_u32(call, INL_NAME_OFF)
                .and_then(|off| self.name_at(off))
                .unwrap_or("?");
            frames.push((name.to_string(), self.file_line_in(i, pc)));
            let parent_pc = read_u32(call, INL_PARENT_PC).expect("record length checked");
            pc = func.entry + u64::from(parent_pc);
        }
        let position = self.file_line_in(i, pc);
        frames.push((func.name.to_string(), position));
        frames
    }

    /// The position at `pc` in function `i`.
    fn file_line_in(&self, i: usize, pc: u64) -> Option<(String, u32)> {
        let f = self.func_record(i)?;
        let entry = self.text_start + u64::from(self.entry_off(i));
        let file_index = u32::try_from(self.pcvalue(read_u32(f, FUNC_PCFILE)?, entry, pc)?).ok()?;
        let line = u32::try_from(self.pcvalue(read_u32(f, FUNC_PCLN)?, entry, pc)?).ok()?;
        // The function's file indexes are relative to its compilation unit's slice of cutab.
        let cu_entry = read_u32(f, FUNC_CU_OFFSET)?.checked_add(file_index)? as usize;
        let file_off = read_u32(&self.data[self.cutab.clone()], cu_entry.checked_mul(4)?)?;
        let file = c_string(self.data[self.filetab.clone()].get(file_off as usize..)?)?;
        Some((file.to_string(), line))
    }

    /// Whether `name` is the name of a function or of a function inlined somewhere: the name
    /// table keeps both, so a name with no [`Func`] but present here was inlined at every call
    /// site.
    pub fn has_name(&self, name: &str) -> bool {
        self.data[self.funcnametab.clone()]
            .split(|&b| b == 0)
            .any(|n| n == name.as_bytes())
    }

    fn entry_off(&self, i: usize) -> u32 {
        read_u32(&self.data, self.pclntable.start + 8 * i).expect("ftab bounds checked in parse")
    }

    fn func_record(&self, i: usize) -> Option<&[u8]> {
        let off = read_u32(&self.data, self.pclntable.start + 8 * i + 4)? as usize;
        self.data[self.pclntable.clone()].get(off..off.checked_add(FUNC_SIZE)?)
    }

    /// The `_func` record of function `i` with the pcdata and funcdata offsets that follow it.
    fn func_record_full(&self, i: usize) -> Option<&[u8]> {
        let f = self.func_record(i)?;
        let npcdata = read_u32(f, FUNC_NPCDATA)? as usize;
        let nfuncdata = usize::from(f[FUNC_NFUNCDATA]);
        let len = FUNC_SIZE + 4 * npcdata.checked_add(nfuncdata)?;
        let off = read_u32(&self.data, self.pclntable.start + 8 * i + 4)? as usize;
        self.data[self.pclntable.clone()].get(off..off.checked_add(len)?)
    }

    /// The value of pc-value table `table` of function `i` at `pc`, as `pcdatavalue`.
    fn pcdata(&self, i: usize, table: usize, pc: u64) -> Option<i32> {
        let f = self.func_record_full(i)?;
        if table >= read_u32(f, FUNC_NPCDATA)? as usize {
            return None;
        }
        let off = read_u32(f, FUNC_SIZE + 4 * table)?;
        let entry = self.text_start + u64::from(self.entry_off(i));
        self.pcvalue(off, entry, pc)
    }

    /// Function `i`'s inline tree, running to the end of the funcdata area (its length is not
    /// recorded), as `funcdata(f, FUNCDATA_InlTree)`.
    fn inline_tree(&self, i: usize) -> Option<&[u8]> {
        self.funcdata_of(i, FUNCDATA_INL_TREE)
    }

    /// The funcdata `index` (`abi.FUNCDATA_*`) of the function holding `pc`, running to the end
    /// of the funcdata area; None when the function has none or the area was not found.
    pub fn funcdata(&self, pc: u64, index: usize) -> Option<&[u8]> {
        self.funcdata_of(self.index_for_pc(pc)?, index)
    }

    fn funcdata_of(&self, i: usize, index: usize) -> Option<&[u8]> {
        let f = self.func_record_full(i)?;
        let npcdata = read_u32(f, FUNC_NPCDATA)? as usize;
        if index >= usize::from(f[FUNC_NFUNCDATA]) {
            return None;
        }
        let off = read_u32(f, FUNC_SIZE + 4 * (npcdata + index))?;
        if off == u32::MAX {
            return None;
        }
        self.gofunc.get(off as usize..)
    }

    fn name_at(&self, off: u32) -> Option<&str> {
        c_string(self.data[self.funcnametab.clone()].get(off as usize..)?)
    }

    fn func(&self, i: usize) -> Option<Func<'_>> {
        let name = self.name_at(read_u32(self.func_record(i)?, FUNC_NAME_OFF)?)?;
        Some(Func {
            name,
            entry: self.text_start + u64::from(self.entry_off(i)),
            end: self.text_start + u64::from(self.entry_off(i + 1)),
        })
    }

    fn index_for_pc(&self, pc: u64) -> Option<usize> {
        let off = u32::try_from(pc.checked_sub(self.text_start)?).ok()?;
        // Binary search for the number of functions starting at or before `off`.
        let (mut lo, mut hi) = (0, self.nfunc);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry_off(mid) <= off {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let i = lo.checked_sub(1)?;
        (off < self.entry_off(i + 1)).then_some(i)
    }

    /// Decodes the pc-value table at `table` in pctab for the function starting at `entry`: a
    /// sequence of (value delta, pc delta) varint pairs, the value delta zig-zag encoded, each
    /// pair giving the value for pcs up to the new pc. The pc quantum is 1 on amd64.
    fn pcvalue(&self, table: u32, entry: u64, target: u64) -> Option<i32> {
        if table == 0 {
            return None;
        }
        let mut p = self.data[self.pctab.clone()].get(table as usize..)?;
        let (mut value, mut pc) = (-1i32, entry);
        let mut first = true;
        loop {
            let value_delta = read_varint(&mut p)?;
            if value_delta == 0 && !first {
                return None;
            }
            value = value.wrapping_add(((value_delta >> 1) as i32) ^ -((value_delta & 1) as i32));
            pc += u64::from(read_varint(&mut p)?);
            if target < pc {
                return Some(value);
            }
            first = false;
        }
    }
}

/// Finds the pclntab: by section name, else by scanning for its header, which is how it is
/// found when an external linker merges `.data.rel.ro.gopclntab` into `.data.rel.ro`.
fn locate<'d, R: ReadRef<'d>>(file: &object::File<'d, R>) -> Result<(u64, Pclntab), PclntabError> {
    // Internal-linked PIE builds before Go 1.26 keep it writable for the textStart relocation.
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(section) = file.section_by_name(name) {
            return Ok((section.address(), parse(section_data(&section)?)?));
        }
    }
    let mut too_old = None;
    for section in file.sections() {
        let SectionFlags::Elf { sh_flags } = section.flags() else {
            continue;
        };
        if sh_flags & u64::from(SHF_ALLOC) == 0 || sh_flags & u64::from(SHF_EXECINSTR) != 0 {
            continue;
        }
        let data = section_data(&section)?;
        // The header is pointer-aligned.
        let skip = (8 - section.address() % 8) % 8;
        for off in (skip as usize..data.len().saturating_sub(HEADER_SIZE)).step_by(8) {
            if data[off + 4..off + 8] != AMD64_HEADER_TAIL {
                continue;
            }
            match parse(&data[off..]) {
                Ok(table) => return Ok((section.address() + off as u64, table)),
                Err(PclntabError::TooOld(version)) => too_old = Some(version),
                Err(_) => {}
            }
        }
    }
    Err(too_old.map_or(PclntabError::NotGo, PclntabError::TooOld))
}

/// Checks the header and table bounds, leaving `text_start` to the caller.
fn parse(data: &[u8]) -> Result<Pclntab, PclntabError> {
    let magic = read_u32(data, 0).ok_or(PclntabError::Malformed("truncated header"))?;
    if let Some(&(_, version)) = OLD_MAGICS.iter().find(|(m, _)| *m == magic) {
        return Err(PclntabError::TooOld(version));
    }
    if magic != MAGIC {
        return Err(PclntabError::Malformed("unknown magic"));
    }
    if data.get(4..8) != Some(&AMD64_HEADER_TAIL[..]) {
        return Err(PclntabError::Malformed("header is not for amd64"));
    }
    let word = |off| {
        read_u64(data, off)
            .and_then(|w| usize::try_from(w).ok())
            .ok_or(PclntabError::Malformed("truncated header"))
    };
    let nfunc = word(HDR_NFUNC)?;
    // funcnametab, cutab, filetab, pctab and the function table follow the header in order.
    let mut bounds = (0..5)
        .map(|i| word(HDR_FUNCNAME + 8 * i))
        .collect::<Result<Vec<_>, _>>()?;
    bounds.push(data.len());
    if bounds[0] < HEADER_SIZE || bounds.windows(2).any(|w| w[0] > w[1]) {
        return Err(PclntabError::Malformed(
            "table offsets out of order or past the section end",
        ));
    }
    let range = |i: usize| bounds[i]..bounds[i + 1];
    let ftab_size = nfunc
        .checked_add(1)
        .and_then(|n| n.checked_mul(8))
        .ok_or(PclntabError::Malformed("function count overflows"))?;
    if nfunc == 0 || range(4).len() < ftab_size {
        return Err(PclntabError::Malformed(
            "function table is empty or truncated",
        ));
    }
    Ok(Pclntab {
        text_start: 0,
        nfunc,
        funcnametab: range(0),
        cutab: range(1),
        filetab: range(2),
        pctab: range(3),
        pclntable: range(4),
        data: data.to_vec(),
        gofunc: Vec::new(),
    })
}

/// `runtime.text` and `gofunc` as recorded in the runtime's moduledata, found by scanning
/// writable data for the moduledata whose first fields point at the pclntab header and its
/// function name table.
fn find_moduledata<'d, R: ReadRef<'d>>(
    file: &object::File<'d, R>,
    pclntab_addr: u64,
    table: &Pclntab,
) -> Option<(u64, u64)> {
    let funcnametab_addr = pclntab_addr + table.funcnametab.start as u64;
    let first_entry_off = u64::from(table.entry_off(0));
    for section in file.sections() {
        let SectionFlags::Elf { sh_flags } = section.flags() else {
            continue;
        };
        if sh_flags & u64::from(SHF_WRITE) == 0 {
            continue;
        }
        let Ok(data) = section.data() else { continue };
        let skip = ((8 - section.address() % 8) % 8) as usize;
        for off in (skip..data.len()).step_by(8) {
            let md = &data[off..];
            if read_u64(md, 0) != Some(pclntab_addr)
                || read_u64(md, MD_FUNCNAMETAB) != Some(funcnametab_addr)
            {
                continue;
            }
            // Where 1.27 has typedesclen, a length, older releases have etypes, an address
            // past types.
            let (Some(types), Some(after_types)) =
                (read_u64(md, MD_TYPES), read_u64(md, MD_TYPES + 8))
            else {
                continue;
            };
            let gofunc_at = if after_types < types {
                MD_GOFUNC_SINCE_1_27
            } else {
                MD_GOFUNC
            };
            let (Some(text), Some(minpc), Some(gofunc)) = (
                read_u64(md, MD_TEXT),
                read_u64(md, MD_MINPC),
                read_u64(md, gofunc_at),
            ) else {
                continue;
            };
            // minpc is the first function's entry: a cheap check that this is moduledata.
            if text.checked_add(first_entry_off) == Some(minpc) {
                return Some((text, gofunc));
            }
        }
    }
    None
}

/// The bytes of the loaded, file-backed section holding `addr`, from `addr` to its end.
fn section_bytes_from<'d, R: ReadRef<'d>>(
    file: &object::File<'d, R>,
    addr: u64,
) -> Option<Vec<u8>> {
    let section = file.sections().find(|s| {
        let alloc = matches!(s.flags(), SectionFlags::Elf { sh_flags } if sh_flags & u64::from(SHF_ALLOC) != 0);
        alloc && s.address() <= addr && addr < s.address() + s.size()
    })?;
    let data = section.data().ok()?;
    Some(
        data.get(usize::try_from(addr - section.address()).ok()?..)?
            .to_vec(),
    )
}

fn section_data<'d, R: ReadRef<'d>>(
    section: &object::Section<'d, '_, R>,
) -> Result<&'d [u8], PclntabError> {
    section.data().map_err(|source| PclntabError::Read {
        section: section.name().unwrap_or("?").to_string(),
        source,
    })
}

fn read_u32(data: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        data.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn read_u64(data: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        data.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn read_varint(p: &mut &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for (i, &b) in p.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *p = &p[i + 1..];
            return Some(value);
        }
    }
    None
}

fn c_string(data: &[u8]) -> Option<&str> {
    let len = data.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&data[..len]).ok()
}
