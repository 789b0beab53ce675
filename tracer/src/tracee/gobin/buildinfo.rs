//! The Go build info (`.go.buildinfo`): Go version and main module.
//!
//! The linker writes a 32-byte header (`"\xff Go buildinf:"`, pointer size, flags, two unused
//! pointers) followed by two varint-length-prefixed strings: the Go version and the module info
//! that `go version -m` prints. See debug/buildinfo/buildinfo.go.

use object::{Object, ObjectSection, ReadRef};

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_SIZE: usize = 32;
const FLAGS_OFFSET: usize = 15;
/// Set when the strings follow the header inline (Go 1.18+) rather than behind pointers.
const FLAG_INLINE_STRINGS: u8 = 0x2;
/// cmd/go frames the module info with 16 bytes of sentinel on each side.
const MODINFO_SENTINEL_LEN: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// As the toolchain reports it, e.g. "go1.26.6"; see [`parse_go_version`].
    pub go_version: String,
    /// The main package's path: "command-line-arguments" for `go build file.go`.
    pub main_module: Option<String>,
    /// The main module's version, e.g. "(devel)" for a build inside its own checkout.
    pub main_module_version: Option<String>,
    /// The toolchain's build ID (`go tool buildid`), from the `.note.go.buildid` note; it names
    /// the exact binary a recording came from.
    pub build_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildInfoError {
    #[error("no .go.buildinfo section")]
    NotGo,
    #[error("Go binary is too old: its build info predates Go 1.18; escapade needs Go 1.21+")]
    TooOld,
    #[error("malformed Go build info: {0}")]
    Malformed(&'static str),
    #[error("cannot read the .go.buildinfo section: {0}")]
    Read(#[source] object::Error),
}

pub fn read<'d, R: ReadRef<'d>>(file: &object::File<'d, R>) -> Result<BuildInfo, BuildInfoError> {
    let section = file
        .section_by_name(".go.buildinfo")
        .ok_or(BuildInfoError::NotGo)?;
    let data = section.data().map_err(BuildInfoError::Read)?;
    if !data.starts_with(MAGIC) || data.len() < HEADER_SIZE {
        return Err(BuildInfoError::Malformed(
            "missing the \"\\xff Go buildinf:\" header",
        ));
    }
    if data[FLAGS_OFFSET] & FLAG_INLINE_STRINGS == 0 {
        return Err(BuildInfoError::TooOld);
    }
    let (version, rest) = length_prefixed(&data[HEADER_SIZE..])
        .ok_or(BuildInfoError::Malformed("truncated Go version string"))?;
    let (modinfo, _) =
        length_prefixed(rest).ok_or(BuildInfoError::Malformed("truncated module info"))?;
    let go_version = String::from_utf8_lossy(version).into_owned();
    if go_version.is_empty() {
        return Err(BuildInfoError::Malformed("empty Go version"));
    }

    let modinfo = unframe_modinfo(modinfo);
    let field = |key: &str, index: usize| {
        let line = modinfo
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('\t'))?;
        line.split('\t').nth(index).map(str::to_string)
    };
    let main_module = field("path", 0);
    // "mod\t<path>\t<version>\t<sum>"
    let main_module_version = field("mod", 1);
    Ok(BuildInfo {
        go_version,
        main_module,
        main_module_version,
        build_id: build_id(file),
    })
}

/// Where the file holds `.note.go.buildid`: offset and length.
pub fn build_id_range<'d, R: ReadRef<'d>>(file: &object::File<'d, R>) -> Option<(u64, u64)> {
    file.section_by_name(".note.go.buildid")?.file_range()
}

/// The ELF note `.note.go.buildid`: name size, descriptor size, type (4), name "Go\0\0",
/// then the ID.
pub fn build_id<'d, R: ReadRef<'d>>(file: &object::File<'d, R>) -> Option<String> {
    let data = file.section_by_name(".note.go.buildid")?.data().ok()?;
    let word = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
    let (name_size, desc_size) = (word(0)? as usize, word(4)? as usize);
    let desc = 12 + name_size.div_ceil(4) * 4;
    let id = data.get(desc..desc.checked_add(desc_size)?)?;
    Some(String::from_utf8_lossy(id).into_owned())
}

/// "go1.22.10" -> (1, 22, 10); "go1.26rc1" -> (1, 26, 0); suffixes such as " X:nodwarf5" or
/// "-bigcorp" are ignored; development builds ("devel ...") give None.
pub fn parse_go_version(s: &str) -> Option<(u32, u32, u32)> {
    let numeric = s.strip_prefix("go")?;
    let numeric = &numeric[..numeric
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(numeric.len())];
    let mut parts = numeric.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = match parts.next() {
        Some(p) => p?,
        None => 0,
    };
    parts.next().is_none().then_some((major, minor, patch))
}

fn length_prefixed(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len: u64 = 0;
    for (i, &b) in data.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let rest = &data[i + 1..];
            let len = usize::try_from(len).ok().filter(|&l| l <= rest.len())?;
            return Some(rest.split_at(len));
        }
    }
    None
}

/// Module info without its sentinels; empty when the binary was built without module support.
fn unframe_modinfo(modinfo: &[u8]) -> std::borrow::Cow<'_, str> {
    let framed = modinfo.len() > 2 * MODINFO_SENTINEL_LEN
        && modinfo[modinfo.len() - MODINFO_SENTINEL_LEN - 1] == b'\n';
    if framed {
        String::from_utf8_lossy(
            &modinfo[MODINFO_SENTINEL_LEN..modinfo.len() - MODINFO_SENTINEL_LEN],
        )
    } else {
        "".into()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_go_version;

    #[test]
    fn go_versions() {
        assert_eq!(parse_go_version("go1.22.10"), Some((1, 22, 10)));
        assert_eq!(parse_go_version("go1.26rc1"), Some((1, 26, 0)));
        assert_eq!(parse_go_version("go1.21"), Some((1, 21, 0)));
        assert_eq!(
            parse_go_version("go1.23.4 X:boringcrypto"),
            Some((1, 23, 4))
        );
        assert_eq!(parse_go_version("go1.24.1-bigcorp"), Some((1, 24, 1)));
        assert_eq!(parse_go_version("devel go1.27-abcdef Mon Jan 1"), None);
        assert_eq!(parse_go_version("go"), None);
        assert_eq!(parse_go_version("go1"), None);
    }
}
