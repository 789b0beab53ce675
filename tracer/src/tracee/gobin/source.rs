//! A file a model was built from, kept open to read from later (a function's code, a word of
//! data, DWARF again) instead of held in memory, so that a model costs about its function table
//! however big the binary.
//!
//! Reads use `pread`, not a mapping: a binary truncated under a mapping would kill the agent
//! with SIGBUS, where a read fails. And bytes read after the file was rewritten in place with
//! another build are refused, so that a model is never applied to another build.

use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use object::ReadCache;

use super::GoBinError;

/// What says a file was rewritten in place with another build: its size, and its Go build ID
/// (a hash of what the build was made from). Not the modification time: `touch` and the Go
/// build cache change that on a file that stays the same.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    size: u64,
    build_id: Vec<u8>,
}

impl Stamp {
    fn of(file: &File, build_id_at: Option<(u64, u64)>) -> std::io::Result<Stamp> {
        let size = file.metadata()?.size();
        let mut build_id = Vec::new();
        if let Some((offset, len)) = build_id_at {
            build_id.resize(usize::try_from(len).unwrap_or(0), 0);
            file.read_exact_at(&mut build_id, offset)?;
        }
        Ok(Stamp { size, build_id })
    }
}

pub struct Source {
    pub path: PathBuf,
    file: File,
    /// Where the file's `.note.go.buildid` is: offset and length.
    build_id_at: Option<(u64, u64)>,
    /// As when the model was built from it.
    stamp: Stamp,
}

impl Source {
    /// `file`, opened at `path` and modelled, with its Go build ID note at `build_id_at`.
    pub fn new(
        path: &Path,
        file: File,
        build_id_at: Option<(u64, u64)>,
    ) -> Result<Source, GoBinError> {
        let stamp = Stamp::of(&file, build_id_at).map_err(|source| GoBinError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Source {
            path: path.to_path_buf(),
            file,
            build_id_at,
            stamp,
        })
    }

    /// `len` bytes at file offset `offset`.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, GoBinError> {
        let past_end = || GoBinError::NotInFile {
            path: self.path.clone(),
            offset,
            len,
        };
        // A malformed length must not become an allocation bigger than the file.
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.stamp.size)
        {
            return Err(past_end());
        }
        let mut bytes = vec![0; usize::try_from(len).map_err(|_| past_end())?];
        let read = self.file.read_exact_at(&mut bytes, offset);
        // Checked after the read: a change before it or during it shows in the stamp now.
        self.check()?;
        read.map_err(|source| GoBinError::Read {
            path: self.path.clone(),
            source,
        })?;
        Ok(bytes)
    }

    /// The file to parse again; what is parsed from it holds only while [`Source::check`]
    /// passes afterwards.
    pub fn cache(&self) -> ReadCache<&File> {
        ReadCache::new(&self.file)
    }

    /// An error if the file is no longer as it was when modelled.
    pub fn check(&self) -> Result<(), GoBinError> {
        match Stamp::of(&self.file, self.build_id_at) {
            Ok(stamp) if stamp == self.stamp => Ok(()),
            _ => Err(GoBinError::Changed {
                path: self.path.clone(),
            }),
        }
    }
}
