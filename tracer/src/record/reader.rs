//! Reads a recording back, tolerating damage: everything up to the first bad chunk is
//! delivered, and the error says where reading stopped and what was read before it.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use probe_common::CallStats;

use super::writer::part_path;
use super::{FORMAT_VERSION, Header, MAGIC, MAX_FRAME_BYTES, OLDEST_FORMAT_VERSION, Record};
use crate::cpu::CpuProfile;
use crate::model::allocs::AllocReport;
use crate::model::params::ParamsView;
use crate::model::records::{CallRecord, Symbols, TraceTotals};

/// Why a file cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "the file is empty: not an escapade recording (was `escapade record` stopped before it began?)"
    )]
    Empty,
    #[error("not an escapade recording (it does not start with \"ESCAPADE\")")]
    NotRecording,
    #[error(
        "recorded in format version {found}, and this escapade {} reads versions \
         {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION} only: report it with the escapade version \
         that recorded it",
        env!("CARGO_PKG_VERSION")
    )]
    Version { found: u32 },
    #[error("the header is {0}: nothing in the file can be read")]
    Header(FrameError),
    #[error("the header is not valid: {0}")]
    HeaderJson(#[source] serde_json::Error),
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
}

/// What is wrong with one frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("cut short (the file is truncated)")]
    Truncated,
    #[error("corrupt (its length, {0} bytes, is implausible)")]
    Length(u32),
    #[error("corrupt (checksum mismatch)")]
    Checksum,
    #[error("corrupt (it does not decode: {0})")]
    Undecodable(String),
    #[error("unreadable ({0})")]
    Io(#[from] std::io::Error),
}

/// A chunk that could not be read, after `chunks` good ones.
#[derive(Debug, thiserror::Error)]
#[error("chunk {} at byte {offset} is {error}", chunks + 1)]
pub struct ChunkError {
    pub chunks: u64,
    pub offset: u64,
    pub error: FrameError,
}

/// A recording's header, then its chunks one by one.
pub struct Reader<R> {
    input: R,
    /// Bytes consumed so far.
    offset: u64,
    /// Good chunks read so far.
    pub chunks: u64,
    pub header: Header,
}

impl<R: Read> Reader<R> {
    pub fn new(mut input: R) -> Result<Reader<R>, OpenError> {
        let mut preamble = [0u8; 12];
        match read_full(&mut input, &mut preamble)? {
            0 => return Err(OpenError::Empty),
            n if n < MAGIC.len() || preamble[..MAGIC.len()] != MAGIC[..] => {
                return Err(OpenError::NotRecording);
            }
            n if n < preamble.len() => return Err(OpenError::Header(FrameError::Truncated)),
            _ => {}
        }
        let found = u32::from_le_bytes(preamble[8..].try_into().expect("4 bytes"));
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&found) {
            return Err(OpenError::Version { found });
        }
        let json = match read_frame(&mut input) {
            Ok(Some(json)) => json,
            Ok(None) => return Err(OpenError::Header(FrameError::Truncated)),
            Err(e) => return Err(OpenError::Header(e)),
        };
        let header = serde_json::from_slice(&json).map_err(OpenError::HeaderJson)?;
        Ok(Reader {
            offset: (preamble.len() + 8 + json.len()) as u64,
            input,
            chunks: 0,
            header,
        })
    }

    /// The next chunk's records; None at the end of the file.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<Record>>, ChunkError> {
        let fail = |this: &Self, error| ChunkError {
            chunks: this.chunks,
            offset: this.offset,
            error,
        };
        let compressed = match read_frame(&mut self.input) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(e) => return Err(fail(self, e)),
        };
        // LZ4 expands at most 255 times: a larger stated size is damage, not worth allocating.
        let stated = compressed.get(..4).map_or(0, |b| {
            u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize
        });
        if stated > 255 * compressed.len() + 16 {
            let reason = format!("a stated size of {stated} bytes");
            return Err(fail(self, FrameError::Undecodable(reason)));
        }
        let records = lz4_flex::decompress_size_prepended(&compressed)
            .map_err(|e| e.to_string())
            .and_then(|plain| postcard::from_bytes(&plain).map_err(|e| e.to_string()))
            .map_err(|e| fail(self, FrameError::Undecodable(e)))?;
        self.offset += 8 + compressed.len() as u64;
        self.chunks += 1;
        Ok(Some(records))
    }
}

/// Reads one frame: None at a clean end of input.
fn read_frame(input: &mut impl Read) -> Result<Option<Vec<u8>>, FrameError> {
    let mut head = [0u8; 8];
    match read_full(input, &mut head)? {
        0 => return Ok(None),
        8 => {}
        _ => return Err(FrameError::Truncated),
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::Length(len));
    }
    let mut payload = Vec::new();
    input.take(len as u64).read_to_end(&mut payload)?;
    if payload.len() < len as usize {
        return Err(FrameError::Truncated);
    }
    if crc32fast::hash(&payload) != crc {
        return Err(FrameError::Checksum);
    }
    Ok(Some(payload))
}

/// Fills `buf` as far as the input goes; returns how many bytes it got.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// What consumes a replayed recording.
pub trait Visitor {
    fn call(&mut self, record: &CallRecord, symbols: &Symbols) -> std::io::Result<()>;
    /// An allocation view, taken `elapsed_ns` after the session started.
    fn allocs(
        &mut self,
        _elapsed_ns: u64,
        _report: &AllocReport,
        _symbols: &Symbols,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

/// A recording replayed: calls go to a callback as they are read, while symbols and the latest
/// totals, views and kernel counts are kept.
pub struct Replay<R> {
    pub reader: Reader<R>,
    pub symbols: Symbols,
    /// The last totals and the time since the start they were taken at.
    pub totals: Option<(u64, TraceTotals)>,
    pub allocs: Option<AllocReport>,
    pub params: Option<ParamsView>,
    pub cpu: Option<CpuProfile>,
    /// The last of the kernel's counts of each traced function's calls.
    pub calls_counted: Option<Vec<CallStats>>,
    /// Calls read.
    pub calls: u64,
}

impl<R: Read> Replay<R> {
    pub fn new(input: R) -> Result<Replay<R>, OpenError> {
        Ok(Replay {
            reader: Reader::new(input)?,
            symbols: Symbols::default(),
            totals: None,
            allocs: None,
            params: None,
            cpu: None,
            calls_counted: None,
            calls: 0,
        })
    }

    /// Reads every chunk, handing calls and allocation views to `visitor`; stops at the first
    /// bad chunk, whose error comes back after everything before it was delivered.
    pub fn run(&mut self, visitor: &mut impl Visitor) -> anyhow::Result<Option<ChunkError>> {
        loop {
            let records = match self.reader.next_chunk() {
                Ok(Some(records)) => records,
                Ok(None) => return Ok(None),
                Err(e) => return Ok(Some(e)),
            };
            for record in records {
                match record {
                    Record::Symbols(known) => {
                        for (pc, frames) in known {
                            self.symbols.insert(pc, frames);
                        }
                    }
                    Record::Call(call) => {
                        self.calls += 1;
                        visitor.call(&call, &self.symbols)?;
                    }
                    Record::Allocs { elapsed_ns, report } => {
                        visitor.allocs(elapsed_ns, &report, &self.symbols)?;
                        self.allocs = Some(report);
                    }
                    Record::Params(view) => self.params = Some(view),
                    Record::Cpu(profile) => self.cpu = Some(profile),
                    Record::Totals { elapsed_ns, totals } => {
                        self.totals = Some((elapsed_ns, totals))
                    }
                    Record::Calls(calls) => self.calls_counted = Some(calls),
                }
            }
        }
    }

    /// What was read, for a message about a damaged file.
    pub fn readable(&self) -> String {
        let seconds = self.totals.map_or(0.0, |(ns, _)| ns as f64 / 1e9);
        format!(
            "the report covers the {} chunks before it ({} calls, the first {seconds:.1}s)",
            self.reader.chunks, self.calls
        )
    }

    /// The file the recording goes on in after `path`, the file read, when that one reached
    /// `--max-size`: the next part of the same session, not one left from an earlier
    /// recording.
    pub fn continued_in(&self, path: &Path) -> Option<PathBuf> {
        let header = &self.reader.header;
        let first = match header.part {
            0 => path.to_path_buf(),
            n => PathBuf::from(path.to_str()?.strip_suffix(&format!(".{n}"))?),
        };
        let next = part_path(&first, header.part + 1);
        let next_header = File::open(&next)
            .ok()
            .and_then(|f| Reader::new(BufReader::new(f)).ok())?
            .header;
        (next_header.part == header.part + 1
            && next_header.started_ns == header.started_ns
            && next_header.pid == header.pid)
            .then_some(next)
    }
}

impl Replay<BufReader<File>> {
    /// The recording in the file at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = match File::open(path) {
            // Not a matter of privileges for the probes, which the generic hint would suggest.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
                "{} is readable by its owner only (recordings are created mode 0600, since they \
                 can hold argument values): `sudo chown $USER {}`, or run escapade as its owner",
                path.display(),
                path.display()
            ),
            opened => {
                opened.with_context(|| format!("opening the recording {}", path.display()))?
            }
        };
        Replay::new(BufReader::new(file)).with_context(|| path.display().to_string())
    }
}
