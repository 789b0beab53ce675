//! Writes a recording: the header, then a chunk at least every [`FLUSH_INTERVAL`], each with
//! one `write` so that a killed escapade leaves whole chunks; files are created mode 0600
//! (arguments can hold secrets) and rotate at `--max-size`.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{FORMAT_VERSION, Header, MAGIC, Record};
use crate::model::records::Symbols;

/// The most a crash of escapade loses.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Chunks are written sooner when this much is waiting, to bound memory and chunk size.
const CHUNK_BYTES: usize = 4 << 20;

pub struct Writer {
    /// The first file's path; later parts add `.1`, `.2`, ...
    path: PathBuf,
    header: Header,
    file: std::fs::File,
    /// Bytes written to the current file.
    size: u64,
    /// Bytes written to every file.
    written: u64,
    max_size: Option<u64>,
    /// Whether the current file has no chunk yet, so its first one carries every symbol.
    fresh: bool,
    pending: Vec<Record>,
    /// A rough size of `pending`, to cut chunks before they grow large.
    pending_bytes: usize,
    last_chunk: Instant,
    /// Every file written, in order.
    files: Vec<PathBuf>,
}

impl Writer {
    /// Creates `path` (replacing it) and writes the header.
    pub fn create(path: &Path, header: Header, max_size: Option<u64>) -> anyhow::Result<Writer> {
        let file = create_private(path)?;
        let mut writer = Writer {
            path: path.to_path_buf(),
            header,
            file,
            size: 0,
            written: 0,
            max_size,
            fresh: true,
            pending: Vec::new(),
            pending_bytes: 0,
            last_chunk: Instant::now(),
            files: vec![path.to_path_buf()],
        };
        writer.write_header()?;
        Ok(writer)
    }

    fn write_header(&mut self) -> anyhow::Result<()> {
        let json = serde_json::to_vec(&self.header).context("encoding the recording header")?;
        let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + 8 + json.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        frame(&mut bytes, &json);
        self.write(&bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.file
            .write_all(bytes)
            .with_context(|| format!("writing {}", self.current().display()))?;
        self.size += bytes.len() as u64;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// The header of the file being written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes written so far, over every file.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The file being written now.
    pub fn current(&self) -> &Path {
        self.files.last().expect("the first file is always there")
    }

    /// Queues a record for the next chunk.
    pub fn push(&mut self, record: Record) {
        self.pending_bytes += match &record {
            Record::Call(_) => 64,
            _ => 4096,
        };
        self.pending.push(record);
    }

    /// Whether a chunk should be written now.
    pub fn due(&self) -> bool {
        // With a size limit, chunks stay well under it, so that a file passes it by little.
        let limit = self
            .max_size
            .map_or(CHUNK_BYTES, |max| CHUNK_BYTES.min(max as usize));
        self.last_chunk.elapsed() >= FLUSH_INTERVAL || self.pending_bytes >= limit
    }

    /// Writes what is queued as one chunk, preceded by the symbols it is the first to use; in
    /// a new file when this one reached the size limit.
    pub fn write_chunk(&mut self, symbols: &mut Symbols) -> anyhow::Result<()> {
        self.last_chunk = Instant::now();
        let learned = symbols.take_pending();
        if self.pending.is_empty() && learned.is_empty() {
            return Ok(());
        }
        if self.rotates() {
            self.rotate()?;
        }
        let known = if self.fresh { symbols.all() } else { learned };
        let mut records = Vec::with_capacity(self.pending.len() + 1);
        if !known.is_empty() {
            records.push(Record::Symbols(known));
        }
        records.append(&mut self.pending);
        self.pending_bytes = 0;
        let encoded = postcard::to_allocvec(&records).context("encoding a recording chunk")?;
        let compressed = lz4_flex::compress_prepend_size(&encoded);
        let mut bytes = Vec::with_capacity(compressed.len() + 8);
        frame(&mut bytes, &compressed);
        self.write(&bytes)?;
        self.fresh = false;
        Ok(())
    }

    /// Whether the next chunk starts a new file, this one having reached the size limit.
    fn rotates(&self) -> bool {
        !self.fresh && self.max_size.is_some_and(|max| self.size >= max)
    }

    /// The part (`Header::part`) of the file the next chunk goes to.
    pub fn next_part(&self) -> u32 {
        self.header.part + u32::from(self.rotates())
    }

    fn rotate(&mut self) -> anyhow::Result<()> {
        self.header.part += 1;
        let path = part_path(&self.path, self.header.part);
        self.file = create_private(&path)?;
        self.files.push(path);
        self.size = 0;
        self.fresh = true;
        self.write_header()
    }

    /// Writes what is left; returns the files written, in order.
    pub fn finish(mut self, symbols: &mut Symbols) -> anyhow::Result<Vec<PathBuf>> {
        self.write_chunk(symbols)?;
        Ok(self.files)
    }
}

/// The file of part `part` of a recording whose first file is `first`: `FILE`, `FILE.1`, ...
pub fn part_path(first: &Path, part: u32) -> PathBuf {
    let mut name = first.as_os_str().to_os_string();
    if part > 0 {
        name.push(format!(".{part}"));
    }
    PathBuf::from(name)
}

/// Appends one frame: length, CRC-32, payload.
fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Creates (or truncates) `path` readable and writable by its owner only.
fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating the recording {} (-o)", path.display()))?;
    // An existing file keeps its mode through `open`; a device (`-o /dev/null`) is not ours
    // to change.
    let regular = file.metadata().is_ok_and(|m| m.is_file());
    if regular {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private (mode 0600)", path.display()))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_keeps_its_mode() {
        let null = Path::new("/dev/null");
        let before = std::fs::metadata(null).unwrap().permissions();
        create_private(null).unwrap();
        let after = std::fs::metadata(null).unwrap().permissions();
        // Put it back before failing: the machine needs its /dev/null.
        std::fs::set_permissions(null, before.clone()).unwrap();
        assert_eq!(after.mode(), before.mode());
    }
}
