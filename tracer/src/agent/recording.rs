//! A process's recording, written by its session and kept within its target's bounds.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use probe_common::CallEvent;

use super::config::RecordConfig;
use super::retention;
use crate::model::decode::Decoder;
use crate::model::records::{CallModel, FunctionInfo, Symbols};
use crate::probes::plan::Plan;
use crate::probes::snapshot::KernelCounts;
use crate::record::Header;
use crate::record::live::RecordSink;
use crate::record::writer::Writer;
use crate::session::Ended;
use crate::sink::EventSink;
use crate::views::Output;
use crate::views::trace::TraceView;

/// The recordings a target's sessions are writing now, which retention keeps.
pub(super) type Writing = Arc<Mutex<HashSet<PathBuf>>>;

/// A process's recording, kept within its target's bounds.
pub(super) struct Recording<'a> {
    sink: RecordSink<'a, TraceView<std::io::Sink>>,
    config: RecordConfig,
    current: BeingWritten,
}

/// The file a session writes now, registered in its target's `Writing` until dropped: a
/// session that ends in an error, before `Recording::finish`, must not leave its file kept
/// from retention forever.
struct BeingWritten {
    writing: Writing,
    path: PathBuf,
}

impl BeingWritten {
    fn register(writing: Writing, path: PathBuf) -> BeingWritten {
        lock(&writing).insert(path.clone());
        BeingWritten { writing, path }
    }

    /// The session went on in `path` (a recording rotated).
    fn moved_to(&mut self, path: PathBuf) {
        let mut writing = lock(&self.writing);
        writing.remove(&self.path);
        writing.insert(path.clone());
        self.path = path;
    }

    /// Every file being written, this one included.
    fn all(&self) -> Vec<PathBuf> {
        lock(&self.writing).iter().cloned().collect()
    }
}

impl Drop for BeingWritten {
    fn drop(&mut self) {
        lock(&self.writing).remove(&self.path);
    }
}

impl<'a> Recording<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        name: &str,
        config: &RecordConfig,
        header: Header,
        functions: Vec<FunctionInfo>,
        plan: &'a Plan,
        allocs: Option<Decoder<'a>>,
        decoder: impl Fn() -> Decoder<'a>,
        symbols: &Symbols,
        writing: Writing,
    ) -> anyhow::Result<Recording<'a>> {
        std::fs::create_dir_all(&config.dir).with_context(|| {
            format!("creating the recording directory {}", config.dir.display())
        })?;
        let path = config.dir.join(format!(
            "{name}-{}-{}.esc",
            header.pid,
            header.started_ns / 1_000_000_000
        ));
        let writer = Writer::create(&path, header, Some(config.rotate))?;
        let mut known = Symbols::default();
        for (pc, frames) in symbols.all() {
            known.insert(pc, frames);
        }
        let sink = RecordSink::new(
            (!plan.traced.is_empty()).then(|| CallModel::new(decoder(), plan, true)),
            TraceView::new(functions, Output::Discard, true),
            writer,
            allocs,
            None,
            None,
            known,
        );
        Ok(Recording {
            sink,
            config: config.clone(),
            current: BeingWritten::register(writing, path),
        })
    }

    pub(super) fn event(&mut self, event: &CallEvent) -> anyhow::Result<()> {
        self.sink.event(event)
    }

    /// Writes what the kernel counted so far; `now_and_then` says it is time to prune.
    pub(super) fn checkpoint(
        &mut self,
        counts: &KernelCounts,
        now_and_then: bool,
    ) -> anyhow::Result<()> {
        self.sink.checkpoint(counts)?;
        // At each new file, and now and then for the files that grow old.
        if now_and_then || self.sink.writing() != self.current.path {
            self.prune()?;
        }
        Ok(())
    }

    /// Deletes what the target's directory holds beyond its bounds.
    fn prune(&mut self) -> anyhow::Result<()> {
        let now = self.sink.writing();
        if now != self.current.path {
            self.current.moved_to(now.to_path_buf());
        }
        prune_dir(&self.config, &self.current.all())
    }

    pub(super) fn finish(
        self,
        counts: &KernelCounts,
        ended: Ended,
        malformed: u64,
    ) -> anyhow::Result<()> {
        let Recording {
            sink,
            config,
            current,
        } = self;
        sink.finish(counts, ended, malformed)?;
        // The last file is whole now: a candidate for retention like any other.
        let writing = current.writing.clone();
        drop(current);
        let writing: Vec<PathBuf> = lock(&writing).iter().cloned().collect();
        prune_dir(&config, &writing)
    }
}

fn prune_dir(config: &RecordConfig, writing: &[PathBuf]) -> anyhow::Result<()> {
    let deleted = retention::prune(&config.dir, config.keep_total, config.keep_age, writing)
        .with_context(|| format!("pruning {}", config.dir.display()))?;
    for gone in deleted {
        tracing::debug!("deleted {} (retention)", gone.display());
    }
    Ok(())
}

/// Poisoning would only mean a panic elsewhere mid-update; the set stays usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session that ends in an error drops its recording without `finish`: its file must
    /// not stay kept from retention.
    #[test]
    fn a_recording_dropped_unfinished_is_no_longer_being_written() {
        let writing = Writing::default();
        let mut current = BeingWritten::register(writing.clone(), "/d/api-1.esc".into());
        current.moved_to("/d/api-1.esc.1".into());
        assert_eq!(current.all(), vec![PathBuf::from("/d/api-1.esc.1")]);
        drop(current);
        assert!(lock(&writing).is_empty());
    }
}
