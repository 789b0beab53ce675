//! A model of a Go binary, built once before anything attaches and read-only after:
//! build info, every function (from `.gopclntab`, so stripped binaries work), each traced
//! function's parameters with their ABI locations (from DWARF), and runtime layouts.
//!
//! The binary stays open and is read where needed ([`source`]); DWARF, which a Go toolchain
//! compresses and which is several times bigger uncompressed, is read again when a function's
//! signature is first asked for rather than kept.

pub mod abi;
pub mod arginfo;
pub mod buildinfo;
pub mod debugfile;
pub mod dwarf;
pub mod layouts;
pub mod pclntab;
mod references;
pub mod runtime_vars;
pub mod source;
pub mod types;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use object::{
    Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _, ReadCache, ReadRef as _,
};

use self::abi::Location;
use self::buildinfo::BuildInfo;
use self::dwarf::{DwarfError, DwarfInfo, GLayout};
use self::pclntab::Pclntab;
use self::source::Source;
use self::types::{GoType, TypeKind};

/// An ELF file parsed as it is read, so only the parts looked at are ever in memory.
pub type Elf<'d> = object::File<'d, &'d ReadCache<std::fs::File>>;

/// Go 1.21 is the oldest release whose register ABI and runtime layouts escapade knows.
pub const MIN_GO: (u32, u32) = (1, 21);

#[derive(Debug, thiserror::Error)]
pub enum GoBinError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} has no bytes at address {addr:#x}")]
    NoBytesAt { path: PathBuf, addr: u64 },
    #[error("{path}: {len} bytes at offset {offset:#x} run past the end of the file")]
    NotInFile {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    #[error(
        "{path} was rewritten with another build after escapade read it, so its model no \
         longer describes it: trace a process started from the new file (run escapade again; \
         the agent re-reads it for the next process)"
    )]
    Changed { path: PathBuf },
    #[error("{path} is not an ELF executable")]
    NotElf {
        path: PathBuf,
        source: object::Error,
    },
    #[error("{path} is not a Go binary: {reason}")]
    NotGo { path: PathBuf, reason: String },
    #[error("{path} was built with {version}; escapade needs Go 1.21 or newer (register ABI)")]
    GoTooOld { path: PathBuf, version: String },
    #[error("{path}: unrecognised Go version {version:?}")]
    UnknownVersion { path: PathBuf, version: String },
    #[error("{0}")]
    Dwarf(#[from] dwarf::DwarfError),
    #[error(transparent)]
    Symbols(#[from] debugfile::SymbolsError),
    #[error("no function matches {pattern:?} in {path}")]
    NoMatch { pattern: String, path: PathBuf },
    #[error(
        "{name} is inlined at every call site in {path}, so it has no code to probe: \
         trace its caller, or rebuild with -gcflags=-l"
    )]
    Inlined { name: String, path: PathBuf },
    #[error(
        "{path} has no DWARF and Go {version} is not in escapade's table of runtime.g layouts: \
         rebuild without -ldflags=-w"
    )]
    NoGLayout { path: PathBuf, version: String },
}

/// One ELF section, for turning addresses into file offsets and naming where a pointer points.
#[derive(Clone, Debug)]
pub struct Section {
    pub name: String,
    pub addr: u64,
    pub size: u64,
    /// None for sections with no bytes in the file (`.bss`).
    pub file_offset: Option<u64>,
}

/// A parameter or result with its type and where the ABI puts it.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub ty: GoType,
    pub location: Location,
}

/// A function that can be probed.
#[derive(Clone, Debug)]
pub struct Function {
    pub name: String,
    pub entry: u64,
    pub end: u64,
    /// None when the binary has no DWARF: arguments cannot be named or decoded.
    pub signature: Option<Signature>,
    /// Without a signature: the argument words Go's traceback would print.
    pub traceback: Option<arginfo::ArgLayout>,
}

#[derive(Clone, Debug)]
pub struct Signature {
    pub params: Vec<Param>,
    pub results: Vec<Param>,
    /// Bytes of the caller's argument area (stack arguments and stack results).
    pub stack_bytes: u64,
    /// Parameters where DWARF's location at entry disagrees with the computed ABI assignment.
    pub abi_mismatches: Vec<String>,
}

/// A code address resolved to function and source line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// Runtime variables and fields whose layout escapade reads from DWARF, or without DWARF from the
/// per-version table; None where neither describes them.
#[derive(Clone, Debug, Default)]
pub struct RuntimeVars {
    /// Link-time addresses of the fields a GC cycle's record holds, indexed by
    /// `probe_common::GC_*`.
    pub gc_fields: Option<[u64; probe_common::GC_FIELDS]>,
    /// `runtime.startingStackSize`.
    pub starting_stack_size: Option<u64>,
    /// Offsets in `runtime.g` of `gopc` and `startpc`.
    pub g_gopc: Option<u64>,
    pub g_startpc: Option<u64>,
}

impl RuntimeVars {
    /// `field_offset(type, field)` is where a field sits in a runtime type; `symbol` where a
    /// runtime variable is.
    fn find(
        field_offset: impl Fn(&str, &str) -> Result<Option<u64>, DwarfError>,
        symbol: impl Fn(&str) -> Option<u64>,
    ) -> Result<RuntimeVars, DwarfError> {
        use probe_common::{
            GC_FIELDS, GC_HEAP_GOAL, GC_HEAP_MARK_END, GC_HEAP_MARKED, GC_HEAP_START, GC_NUMGC,
            GC_PAUSE_NS, GC_T_END, GC_T_MARK, GC_T_MARK_TERM, GC_T_SWEEP_TERM,
        };
        // (variable, its type) for each field.
        let memstats = ("runtime.memstats", "runtime.mstats");
        let work = ("runtime.work", "runtime.workType");
        let controller = ("runtime.gcController", "runtime.gcControllerState");
        let fields = [
            (GC_NUMGC, memstats, "numgc"),
            (GC_T_SWEEP_TERM, work, "tSweepTerm"),
            (GC_T_MARK, work, "tMark"),
            (GC_T_MARK_TERM, work, "tMarkTerm"),
            (GC_T_END, work, "tEnd"),
            (GC_PAUSE_NS, work, "pauseNS"),
            (GC_HEAP_START, work, "heap0"),
            (GC_HEAP_MARK_END, work, "heap1"),
            (GC_HEAP_MARKED, work, "heap2"),
            (GC_HEAP_GOAL, controller, "lastHeapGoal"),
        ];
        let mut gc_fields = Some([0; GC_FIELDS]);
        for (index, (var, ty), field) in fields {
            match (symbol(var), field_offset(ty, field)?, &mut gc_fields) {
                (Some(base), Some(offset), Some(addrs)) => addrs[index] = base + offset,
                _ => gc_fields = None,
            }
        }
        Ok(RuntimeVars {
            gc_fields,
            starting_stack_size: symbol("runtime.startingStackSize"),
            g_gopc: field_offset("runtime.g", "gopc")?,
            g_startpc: field_offset("runtime.g", "startpc")?,
        })
    }
}

pub struct GoBinary {
    pub path: PathBuf,
    pub build: BuildInfo,
    pub version: (u32, u32, u32),
    /// True for position-independent executables, which the kernel loads at a random base.
    pub is_pie: bool,
    /// Lowest address of a loadable segment, as linked: the anchor for the load bias.
    pub first_load_vaddr: u64,
    pub sections: Vec<Section>,
    pub g_layout: GLayout,
    /// Where `g_layout` came from: "DWARF" or the built-in table.
    pub g_layout_source: &'static str,
    /// Link-time address the runtime's type names are relative to (`runtime.types`).
    pub types_base: Option<u64>,
    /// Link-time addresses of the runtime variables escapade reads or sets, from the symbol
    /// table or, without one, from the runtime's machine code.
    pub mem_profile_rate: Option<u64>,
    pub disable_memory_profiling: Option<u64>,
    /// What GC cycles and goroutine stacks are read from: link-time addresses and `runtime.g`
    /// offsets, known from DWARF and the symbol table, or from the per-version layouts and
    /// the runtime's machine code.
    pub runtime_vars: RuntimeVars,
    /// The file DWARF and the symbol table came from when not the binary itself, as
    /// [`debugfile::SymbolsFile`] names it.
    pub symbols: Option<String>,
    pclntab: Pclntab,
    has_dwarf: bool,
    file: Source,
    /// Where DWARF is when not in the binary itself.
    symbols_file: Option<Source>,
    /// What DWARF was read for, so that it is not read again for the same question (the
    /// agent resolves the same patterns for every process): signatures by function name, and
    /// whether a name that matched no function is one DWARF knows only inlined.
    signatures: Mutex<HashMap<String, Option<Signature>>>,
    inlined_only: Mutex<HashMap<String, bool>>,
}

impl GoBinary {
    /// The binary at `path`, described by the DWARF and symbol table of `symbols` when given
    /// (`--symbols`), else of its own or an installed debug file ([`debugfile::find`]).
    pub fn open(path: &Path, symbols: Option<&Path>) -> Result<GoBinary, GoBinError> {
        let opened = std::fs::File::open(path).map_err(|source| GoBinError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cache = ReadCache::new(opened);
        let file = object::File::parse(&cache).map_err(|source| GoBinError::NotElf {
            path: path.to_path_buf(),
            source,
        })?;
        let not_go = |reason: String| GoBinError::NotGo {
            path: path.to_path_buf(),
            reason,
        };
        let build =
            buildinfo::read(&file).map_err(|e| not_go(format!("{:#}", anyhow::Error::new(e))))?;
        let version = buildinfo::parse_go_version(&build.go_version).ok_or_else(|| {
            GoBinError::UnknownVersion {
                path: path.to_path_buf(),
                version: build.go_version.clone(),
            }
        })?;
        if (version.0, version.1) < MIN_GO {
            return Err(GoBinError::GoTooOld {
                path: path.to_path_buf(),
                version: build.go_version.clone(),
            });
        }
        let pclntab = Pclntab::from_object(&file)
            .map_err(|e| not_go(format!("{:#}", anyhow::Error::new(e))))?;
        let symbols_file = debugfile::find(&file, symbols)?;
        let symbols_object = symbols_file
            .as_ref()
            .map(debugfile::SymbolsFile::parse)
            .transpose()?;
        // Where DWARF and the symbol table come from.
        let described = symbols_object.as_ref().unwrap_or(&file);
        let dwarf = DwarfInfo::load(described)?;
        let dwarf_g_layout = match &dwarf {
            Some(d) => d.g_layout()?,
            None => None,
        };
        let (g_layout, g_layout_source) = match dwarf_g_layout {
            Some(layout) => (layout, "DWARF"),
            None => (
                layouts::g_layout(version).ok_or_else(|| GoBinError::NoGLayout {
                    path: path.to_path_buf(),
                    version: build.go_version.clone(),
                })?,
                "built-in table",
            ),
        };
        let sections = file
            .sections()
            .filter(|s| s.address() != 0)
            .map(|s| Section {
                name: s.name().unwrap_or("").to_string(),
                addr: s.address(),
                size: s.size(),
                file_offset: s.file_range().map(|(offset, _)| offset),
            })
            .collect::<Vec<_>>();
        // Without a symbol table (`-ldflags=-s`), the runtime's own code says where its
        // variables are.
        let has_dwarf = dwarf.is_some();
        let in_code = if file.symbols().next().is_none() {
            let bytes_at = |addr: u64, len: u64| {
                (&cache)
                    .read_bytes_at(file_offset_in(&sections, addr)?, len)
                    .ok()
            };
            runtime_vars::CodeVars::find(
                &pclntab,
                |f| bytes_at(f.entry, f.end - f.entry),
                |addr| Some(u64::from_le_bytes(bytes_at(addr, 8)?.try_into().ok()?)),
                |pc| pclntab.frames(pc).into_iter().next().map(|(f, _)| f),
            )
        } else {
            runtime_vars::CodeVars::default()
        };
        let symbol = |name: &str| {
            described
                .symbols()
                .find(|s| s.name() == Ok(name))
                .map(|s| s.address())
                .or_else(|| in_code.address(name))
        };
        let types_base =
            symbol("runtime.types").or_else(|| layouts::types_section(&sections).map(|s| s.addr));
        let mem_profile_rate = symbol("runtime.MemProfileRate");
        let disable_memory_profiling = symbol("runtime.disableMemoryProfiling");
        let runtime_vars = match &dwarf {
            Some(d) => RuntimeVars::find(|ty, field| d.field_offset(ty, &[field]), symbol)?,
            None => RuntimeVars::find(
                |ty, field| Ok(layouts::field_offset(version, ty, field)),
                symbol,
            )?,
        };
        let is_pie = matches!(file.kind(), object::ObjectKind::Dynamic);
        let first_load_vaddr = file
            .segments()
            .map(|s| s.address())
            .min()
            .ok_or_else(|| not_go("it has no loadable segments".into()))?;
        let build_id_at = buildinfo::build_id_range(&file);
        drop(dwarf);
        drop(symbols_object);
        drop(file);
        Ok(GoBinary {
            file: Source::new(path, cache.into_inner(), build_id_at)?,
            symbols: symbols_file.as_ref().map(|s| s.to_string()),
            symbols_file: symbols_file
                .map(debugfile::SymbolsFile::into_source)
                .transpose()?,
            signatures: Mutex::default(),
            inlined_only: Mutex::default(),
            path: path.to_path_buf(),
            build,
            version,
            is_pie,
            first_load_vaddr,
            sections,
            g_layout,
            g_layout_source,
            types_base,
            mem_profile_rate,
            disable_memory_profiling,
            runtime_vars,
            pclntab,
            has_dwarf,
        })
    }

    /// What the probes need to know about the runtime's layout, in a process loaded at `bias`.
    pub fn go_offsets(&self, bias: u64) -> probe_common::GoOffsets {
        let vars = &self.runtime_vars;
        let at = |addr: u64| if addr == 0 { 0 } else { addr + bias };
        let mallocgc = self.pclntab.func_named("runtime.mallocgc");
        // Versions without a profile layout have no table entry yet; zeros there make the
        // heap-profile probes read nothing useful.
        let profile = layouts::profile_layout(self.version);
        probe_common::GoOffsets {
            g_goid: self.g_layout.goid,
            g_stack_lo: self.g_layout.stack_lo,
            g_stack_hi: self.g_layout.stack_hi,
            mprof_malloc_addr_reg: profile.map_or(0, |p| p.mprof_malloc_addr_reg),
            mprof_malloc_size_reg: profile.map_or(0, |p| p.mprof_malloc_size_reg),
            special_kind_offset: profile.map_or(0, |p| p.special_kind_offset),
            special_kind_profile: profile.map_or(0, |p| p.special_kind_profile),
            g_gopc: vars.g_gopc.unwrap_or(0),
            g_startpc: vars.g_startpc.unwrap_or(0),
            starting_stack_size: vars.starting_stack_size.map_or(0, at),
            gc_fields: vars.gc_fields.unwrap_or_default().map(at),
            mallocgc_start: mallocgc.map_or(0, |f| f.entry + bias),
            mallocgc_end: mallocgc.map_or(0, |f| f.end + bias),
            code_bias: bias,
        }
    }

    pub fn has_dwarf(&self) -> bool {
        self.has_dwarf
    }

    /// Names of the functions that match `pattern` (`*` and `?` wildcards), perhaps none.
    pub fn functions_named(&self, pattern: &str) -> Vec<String> {
        let matcher = wildmatch::WildMatch::new(pattern);
        self.pclntab
            .funcs()
            .filter(|f| matcher.matches(f.name))
            .map(|f| f.name.to_string())
            .collect()
    }

    /// Every function whose name matches one of `patterns` (`*` and `?` wildcards), or an error
    /// naming the first pattern that matches nothing.
    pub fn resolve(&self, patterns: &[String]) -> Result<Vec<Function>, GoBinError> {
        let mut out: Vec<Function> = Vec::new();
        // Read once for the whole call, when a signature not known yet is asked for.
        let mut dwarf = None;
        for pattern in patterns {
            let matcher = wildmatch::WildMatch::new(pattern);
            let matched: Vec<pclntab::Func> = self
                .pclntab
                .funcs()
                .filter(|f| matcher.matches(f.name))
                .collect();
            if matched.is_empty() {
                let inlined =
                    self.pclntab.has_name(pattern) || self.is_inlined_only(pattern, &mut dwarf)?;
                return Err(if inlined {
                    GoBinError::Inlined {
                        name: pattern.clone(),
                        path: self.path.clone(),
                    }
                } else {
                    GoBinError::NoMatch {
                        pattern: pattern.clone(),
                        path: self.path.clone(),
                    }
                });
            }
            for f in matched {
                if out.iter().any(|o| o.entry == f.entry) {
                    continue;
                }
                let signature = self.signature(f.name, &mut dwarf)?;
                let mut function = Function {
                    name: f.name.to_string(),
                    entry: f.entry,
                    end: f.end,
                    signature,
                    traceback: None,
                };
                if function.signature.is_none() {
                    function.traceback = self
                        .pclntab
                        .funcdata(f.entry, pclntab::FUNCDATA_ARG_INFO)
                        .zip(self.code(&function).ok())
                        .and_then(|(info, code)| arginfo::ArgLayout::new(info, &code, f.entry));
                }
                out.push(function);
            }
        }
        Ok(out)
    }

    /// The binary's DWARF, read into `loaded` unless it already was; None without DWARF.
    fn dwarf<'a>(
        &self,
        loaded: &'a mut Option<DwarfInfo>,
    ) -> Result<Option<&'a DwarfInfo>, GoBinError> {
        if !self.has_dwarf {
            return Ok(None);
        }
        if loaded.is_none() {
            let source = self.symbols_file.as_ref().unwrap_or(&self.file);
            let cache = source.cache();
            let file = object::File::parse(&cache).map_err(|e| GoBinError::NotElf {
                path: source.path.clone(),
                source: e,
            })?;
            let dwarf = DwarfInfo::load(&file)?;
            source.check()?;
            *loaded = dwarf;
        }
        Ok(loaded.as_ref())
    }

    /// Parameters and results with their ABI locations, cross-checked against DWARF; read from
    /// DWARF (into `dwarf`) the first time `name` is asked for.
    fn signature(
        &self,
        name: &str,
        dwarf: &mut Option<DwarfInfo>,
    ) -> Result<Option<Signature>, GoBinError> {
        remembered(&self.signatures, name, || match self.dwarf(dwarf)? {
            Some(d) => signature_from(d, name),
            None => Ok(None),
        })
    }

    /// Whether DWARF knows `name` only as inlined; read from DWARF (into `dwarf`) the first
    /// time `name` is asked for.
    fn is_inlined_only(
        &self,
        name: &str,
        dwarf: &mut Option<DwarfInfo>,
    ) -> Result<bool, GoBinError> {
        remembered(&self.inlined_only, name, || {
            Ok(self.dwarf(dwarf)?.is_some_and(|d| d.is_inlined_only(name)))
        })
    }

    /// The machine code of `f`, as in the file.
    pub fn code(&self, f: &Function) -> Result<Vec<u8>, GoBinError> {
        self.read(f.entry, f.end - f.entry)
    }

    /// The whole `.text` section and its address, for finding call sites.
    pub fn text(&self) -> Result<(Vec<u8>, u64), GoBinError> {
        let text = self
            .sections
            .iter()
            .find(|s| s.name == ".text")
            .ok_or_else(|| GoBinError::NotGo {
                path: self.path.clone(),
                reason: "it has no .text section".into(),
            })?;
        Ok((self.read(text.addr, text.size)?, text.addr))
    }

    /// `len` bytes of the file from link-time address `addr`, if the file is still the one
    /// modelled.
    fn read(&self, addr: u64, len: u64) -> Result<Vec<u8>, GoBinError> {
        let offset = self
            .file_offset(addr)
            .ok_or_else(|| GoBinError::NoBytesAt {
                path: self.path.clone(),
                addr,
            })?;
        self.file.read(offset, len)
    }

    /// File offset of a link-time address, as uprobes want it.
    pub fn file_offset(&self, addr: u64) -> Option<u64> {
        file_offset_in(&self.sections, addr)
    }

    pub fn section_at(&self, addr: u64) -> Option<&Section> {
        section_in(&self.sections, addr)
    }

    /// Function and source line of a code address (link-time): the innermost frame of
    /// [`GoBinary::symbolize_inlined`], so a pc in an inlined call names the inlined function.
    pub fn symbolize(&self, pc: u64) -> Option<Frame> {
        self.symbolize_inlined(pc).into_iter().next()
    }

    /// The frames at a code address (link-time), innermost first: the functions inlined at
    /// `pc`, then the physical function holding it. Empty when no Go function holds `pc`.
    pub fn symbolize_inlined(&self, pc: u64) -> Vec<Frame> {
        self.pclntab
            .frames(pc)
            .into_iter()
            .map(|(function, position)| {
                let (file, line) = position.unzip();
                Frame {
                    function,
                    file,
                    line,
                }
            })
            .collect()
    }

    /// The subset of `entries` (link-time function entries) whose functions may be entered
    /// other than by a direct `CALL rel32`, so that a return-site probe would miss their
    /// returns: their address is taken in data, a method table or code, or they are jumped to.
    /// Reads the file a section at a time.
    pub fn called_indirectly(&self, entries: &[u64]) -> anyhow::Result<HashSet<u64>> {
        references::called_indirectly(self, entries)
    }

    /// Bytes of the file at a link-time address, for data the runtime never changes.
    pub fn bytes_at(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.read(addr, len as u64).ok()
    }
}

/// The answer `known` holds for `name`, else `answer()`, then remembered.
fn remembered<T: Clone>(
    known: &Mutex<HashMap<String, T>>,
    name: &str,
    answer: impl FnOnce() -> Result<T, GoBinError>,
) -> Result<T, GoBinError> {
    let lock = || known.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(value) = lock().get(name) {
        return Ok(value.clone());
    }
    let value = answer()?;
    lock().insert(name.to_string(), value.clone());
    Ok(value)
}

/// `name`'s parameters and results with their ABI locations, cross-checked against DWARF.
fn signature_from(dwarf: &DwarfInfo, name: &str) -> Result<Option<Signature>, GoBinError> {
    let Some(all) = dwarf.params(name)? else {
        return Ok(None);
    };
    let (mut results, mut params): (Vec<_>, Vec<_>) = all.into_iter().partition(|p| p.is_result);
    // The compiler lists a result twice in functions with a defer; a result name is unique.
    let mut seen = std::collections::HashSet::new();
    results.retain(|r| seen.insert(r.name.clone()));
    // A shaped generic instantiation takes its dictionary first; DWARF leaves it out
    // before Go 1.27.
    if name.contains("[go.shape.") && !params.iter().any(|p| p.name == ".dict") {
        // A method's receiver comes before the dictionary: `pkg.(*T[go.shape.int]).M`.
        let method = name
            .rsplit_once(']')
            .is_some_and(|(_, rest)| !rest.is_empty());
        params.insert(
            usize::from(method && !params.is_empty()),
            dwarf::DwarfParam {
                name: ".dict".into(),
                ty: GoType::word("*uint8", TypeKind::Pointer),
                is_result: false,
                entry_location: None,
            },
        );
    }
    let assignment = abi::assign(
        &params.iter().map(|p| &p.ty).collect::<Vec<_>>(),
        &results.iter().map(|p| &p.ty).collect::<Vec<_>>(),
    );
    let mut abi_mismatches = Vec::new();
    for (p, loc) in params.iter().zip(&assignment.params) {
        if let Some(dwarf_loc) = &p.entry_location
            && *dwarf_loc != loc.to_string()
        {
            abi_mismatches.push(format!(
                "{}: DWARF says {dwarf_loc}, ABI says {loc}",
                p.name
            ));
        }
    }
    let zip = |ps: Vec<dwarf::DwarfParam>, locs: Vec<Location>| -> Vec<Param> {
        ps.into_iter()
            .zip(locs)
            .map(|(p, location)| Param {
                name: p.name,
                ty: p.ty,
                location,
            })
            .collect()
    };
    Ok(Some(Signature {
        params: zip(params, assignment.params),
        results: zip(results, assignment.results),
        stack_bytes: assignment.stack_bytes,
        abi_mismatches,
    }))
}

fn section_in(sections: &[Section], addr: u64) -> Option<&Section> {
    sections
        .iter()
        .find(|s| s.addr <= addr && addr < s.addr + s.size)
}

fn file_offset_in(sections: &[Section], addr: u64) -> Option<u64> {
    let s = section_in(sections, addr)?;
    Some(s.file_offset? + (addr - s.addr))
}
