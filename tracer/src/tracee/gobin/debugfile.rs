//! DWARF and the symbol table of a stripped binary, from the file it was made from: the binary
//! before `strip` or `objcopy --strip-all`, or the debug file `objcopy --only-keep-debug`
//! writes. (A build with `-ldflags=-s -w` has no such file: other link flags make another
//! build, with another build ID.) Given with `--symbols FILE`, or found where Linux
//! distributions' debug packages put them, `/usr/lib/debug/.build-id/xx/rest.debug` by the ELF
//! GNU build ID (which Go writes only when linked with `-B gobuildid` or `-B 0x...`).
//!
//! Only descriptions come from that file: code, the function table and every address the
//! probes use stay the running binary's, so a debug file whose code sections are empty
//! (`NOBITS`) serves as well as the whole binary. The Go build ID, which both keep in
//! `.note.go.buildid`, must be the target's: DWARF from another build would name the wrong
//! registers.

use std::path::{Path, PathBuf};

use object::{Object as _, ReadCache, ReadRef};

use super::Elf;
use super::source::Source;

/// Where distributions install debug files, by GNU build ID.
const BUILD_ID_DIR: &str = "/usr/lib/debug/.build-id";

#[derive(Debug, thiserror::Error)]
pub enum SymbolsError {
    #[error("--symbols {path}: cannot read it")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--symbols {path}: not an ELF file")]
    NotElf {
        path: PathBuf,
        source: object::Error,
    },
    #[error(
        "--symbols {path} is from another build: its Go build ID is {found}, the target's \
         {expected}"
    )]
    Mismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "--symbols {path}: cannot check that it is from the target's build: {which} no Go build ID"
    )]
    NoBuildId { path: PathBuf, which: &'static str },
    #[error("--symbols {path} has neither DWARF nor a symbol table: it adds nothing")]
    Empty { path: PathBuf },
}

/// How the symbols file was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// `--symbols FILE`.
    Given,
    /// Under `/usr/lib/debug/.build-id`, by the target's GNU build ID.
    BuildIdDir,
}

/// A file whose DWARF and symbol table stand in for the target's.
pub struct SymbolsFile {
    pub path: PathBuf,
    pub found: Found,
    /// Read as parsing asks, not whole: only the sections used are ever in memory.
    file: ReadCache<std::fs::File>,
    build_id_at: Option<(u64, u64)>,
}

impl SymbolsFile {
    pub fn parse(&self) -> Result<Elf<'_>, SymbolsError> {
        parse(&self.path, &self.file)
    }

    /// The file, to read DWARF from again.
    pub fn into_source(self) -> Result<Source, super::GoBinError> {
        Source::new(&self.path, self.file.into_inner(), self.build_id_at)
    }
}

impl std::fmt::Display for SymbolsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.found {
            Found::Given => write!(f, "{} (--symbols)", self.path.display()),
            Found::BuildIdDir => write!(f, "{} (by GNU build ID)", self.path.display()),
        }
    }
}

/// The symbols file for the target binary `file`: `given`, checked; else, when
/// the target lacks DWARF or a symbol table, the one its GNU build ID names, if installed and
/// of the same Go build (one from another build is skipped with a warning).
pub fn find<'d, R: ReadRef<'d>>(
    file: &object::File<'d, R>,
    given: Option<&Path>,
) -> Result<Option<SymbolsFile>, SymbolsError> {
    if let Some(path) = given {
        return open(file, path, Found::Given).map(Some);
    }
    let stripped = file.section_by_name(".debug_info").is_none() || file.symbols().next().is_none();
    let Some(path) = stripped.then(|| build_id_path(file)).flatten() else {
        return Ok(None);
    };
    if !path.exists() {
        return Ok(None);
    }
    match open(file, &path, Found::BuildIdDir) {
        Ok(symbols) => Ok(Some(symbols)),
        Err(e) => {
            tracing::warn!("ignoring {}: {e}", path.display());
            Ok(None)
        }
    }
}

/// `/usr/lib/debug/.build-id/xx/rest.debug` for the GNU build ID `xxrest...`, if there is one.
fn build_id_path<'d, R: ReadRef<'d>>(file: &object::File<'d, R>) -> Option<PathBuf> {
    let id = file.build_id().ok().flatten().filter(|id| id.len() >= 2)?;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    Some(
        Path::new(BUILD_ID_DIR)
            .join(&hex[..2])
            .join(format!("{}.debug", &hex[2..])),
    )
}

fn open<'d, R: ReadRef<'d>>(
    file: &object::File<'d, R>,
    path: &Path,
    found: Found,
) -> Result<SymbolsFile, SymbolsError> {
    let opened = std::fs::File::open(path).map_err(|source| SymbolsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let cache = ReadCache::new(opened);
    let symbols = parse(path, &cache)?;
    let no_id = |which| SymbolsError::NoBuildId {
        path: path.to_path_buf(),
        which,
    };
    let expected = super::buildinfo::build_id(file).ok_or(no_id("the target has"))?;
    let found_id = super::buildinfo::build_id(&symbols).ok_or(no_id("it has"))?;
    if found_id != expected {
        return Err(SymbolsError::Mismatch {
            path: path.to_path_buf(),
            found: found_id,
            expected,
        });
    }
    if symbols.section_by_name(".debug_info").is_none() && symbols.symbols().next().is_none() {
        return Err(SymbolsError::Empty {
            path: path.to_path_buf(),
        });
    }
    let build_id_at = super::buildinfo::build_id_range(&symbols);
    drop(symbols);
    Ok(SymbolsFile {
        path: path.to_path_buf(),
        found,
        file: cache,
        build_id_at,
    })
}

fn parse<'d>(path: &Path, file: &'d ReadCache<std::fs::File>) -> Result<Elf<'d>, SymbolsError> {
    object::File::parse(file).map_err(|source| SymbolsError::NotElf {
        path: path.to_path_buf(),
        source,
    })
}
