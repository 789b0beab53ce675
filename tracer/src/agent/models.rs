//! The models of the binaries the agent's targets run. A file is read once however many
//! targets watch it, off the thread that drains every session (a big binary takes seconds),
//! and kept while a target may run it again.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use anyhow::Context as _;

use crate::tracee::gobin::GoBinary;

/// The file itself (device, inode, size, modification time) and the symbols file read with
/// it, so that a binary replaced at the same path is modelled afresh.
type FileKey = (u64, u64, u64, i64, i64, Option<PathBuf>);

fn file_key(exe: &Path, symbols: Option<&Path>) -> anyhow::Result<FileKey> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(exe).with_context(|| format!("reading {}", exe.display()))?;
    Ok((
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        symbols.map(Path::to_path_buf),
    ))
}

/// Every model some target holds, for the others to find: weak, so a model goes with the
/// last target that holds it.
#[derive(Clone, Default)]
pub struct AgentModels(Arc<Mutex<HashMap<FileKey, Weak<GoBinary>>>>);

impl AgentModels {
    fn find(&self, key: &FileKey) -> Option<Arc<GoBinary>> {
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.get(key).and_then(Weak::upgrade)
    }

    fn add(&self, key: FileKey, model: &Arc<GoBinary>) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|_, model| model.strong_count() > 0);
        known.insert(key, Arc::downgrade(model));
    }
}

/// The models of the binaries one target's processes ran, so that a restarted process is
/// attached to at once.
pub struct Models {
    /// Oldest first.
    known: VecDeque<(FileKey, Arc<GoBinary>)>,
    agent: AgentModels,
}

impl Models {
    /// Redeploys leave old builds behind: a few are kept, for rollbacks.
    const KEPT: usize = 4;

    pub fn new(agent: AgentModels) -> Models {
        Models {
            known: VecDeque::new(),
            agent,
        }
    }

    /// Reads the model of `exe` on a blocking thread, unless it is known: [`Models::get`]
    /// then finds it. An error is left for `get` to report.
    pub async fn load(&mut self, exe: &Path, symbols: Option<&Path>) {
        let Ok(key) = file_key(exe, symbols) else {
            return;
        };
        if self.known_as(&key).is_some() {
            return;
        }
        let (exe, symbols) = (exe.to_path_buf(), symbols.map(Path::to_path_buf));
        let read = tokio::task::spawn_blocking(move || GoBinary::open(&exe, symbols.as_deref()));
        if let Ok(Ok(model)) = read.await {
            self.keep(key, Arc::new(model));
        }
    }

    pub fn get(&mut self, exe: &Path, symbols: Option<&Path>) -> anyhow::Result<Arc<GoBinary>> {
        let key = file_key(exe, symbols)?;
        if let Some(model) = self.known_as(&key) {
            return Ok(model);
        }
        let model = Arc::new(GoBinary::open(exe, symbols)?);
        self.keep(key, model.clone());
        Ok(model)
    }

    fn known_as(&mut self, key: &FileKey) -> Option<Arc<GoBinary>> {
        if let Some((_, model)) = self.known.iter().find(|(k, _)| k == key) {
            return Some(model.clone());
        }
        let model = self.agent.find(key)?;
        self.keep(key.clone(), model.clone());
        Some(model)
    }

    fn keep(&mut self, key: FileKey, model: Arc<GoBinary>) {
        self.agent.add(key.clone(), &model);
        if self.known.len() == Self::KEPT {
            self.known.pop_front();
        }
        self.known.push_back((key, model));
    }
}
