//! Keeps a target's recording directory within its bounds: files older than `keep_age` go,
//! then the oldest files until the rest fit in `keep_total`. Files still being written are
//! kept, so the directory exceeds `keep_total` by at most the file being written.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Recordings are `.esc` files and their rotated parts, `.esc.1`, `.esc.2`... Matched at the
/// end of the name: a target's name may hold `.esc` too (`billing.escrow`).
fn is_recording(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let base = match name.rsplit_once('.') {
        Some((base, part)) if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => &name,
    };
    base.ends_with(".esc")
}

/// Deletes what `dir` holds beyond the bounds, except `writing`; returns the deleted files.
pub fn prune(
    dir: &Path,
    keep_total: u64,
    keep_age: Duration,
    writing: &[PathBuf],
) -> std::io::Result<Vec<PathBuf>> {
    let now = SystemTime::now();
    let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(meta) = unless_gone(entry.metadata())? else {
            continue;
        };
        if meta.is_file() && is_recording(&path) {
            files.push((meta.modified()?, meta.len(), path));
        }
    }
    // Oldest first.
    files.sort();
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    let mut deleted = Vec::new();
    for (modified, len, path) in files {
        if writing.contains(&path) {
            continue;
        }
        let too_old = now.duration_since(modified).unwrap_or_default() > keep_age;
        if too_old || total > keep_total {
            if unless_gone(std::fs::remove_file(&path))?.is_some() {
                deleted.push(path);
            }
            total -= len;
        }
    }
    Ok(deleted)
}

/// None for a file that is gone, removed by hand since `dir` was listed: no reason to stop
/// the session that prunes.
fn unless_gone<T>(result: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match result {
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        result => result.map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_are_esc_files_and_their_parts() {
        assert!(is_recording(Path::new("/d/api-1.esc")));
        assert!(is_recording(Path::new("/d/api-1.esc.12")));
        assert!(!is_recording(Path::new("/d/api-1.esc.tmp")));
        assert!(!is_recording(Path::new("/d/notes.txt")));
        // A target named `billing.escrow` writes these.
        assert!(is_recording(Path::new("/d/billing.escrow-7.esc")));
        assert!(is_recording(Path::new("/d/billing.escrow-7.esc.3")));
        assert!(!is_recording(Path::new("/d/billing.escrow-7.txt")));
        assert!(!is_recording(Path::new("/d/api-1.esc.")));
    }

    #[test]
    fn a_file_removed_by_hand_is_no_error() {
        let gone = std::env::temp_dir().join(format!("escapade-gone-{}.esc", std::process::id()));
        assert!(unless_gone(std::fs::remove_file(&gone)).unwrap().is_none());
        assert!(unless_gone(std::fs::metadata(&gone)).unwrap().is_none());
        let denied = std::fs::remove_dir(std::env::temp_dir());
        assert!(unless_gone(denied).is_err(), "other errors still count");
    }

    #[test]
    fn the_oldest_go_first_and_files_being_written_stay() {
        let dir = std::env::temp_dir().join(format!("escapade-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, age_s: u64| {
            let path = dir.join(name);
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let when = SystemTime::now() - Duration::from_secs(age_s);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
            path
        };
        let oldest = write("a.esc", 50);
        let old = write("a.esc.1", 40);
        let newer = write("b.esc", 30);
        let writing = write("c.esc", 60);
        std::fs::write(dir.join("other.txt"), vec![0u8; 1000]).unwrap();
        // 400 bytes of recordings, 250 allowed: the two oldest not being written go.
        let deleted = prune(
            &dir,
            250,
            Duration::from_secs(3600),
            std::slice::from_ref(&writing),
        )
        .unwrap();
        assert_eq!(deleted, vec![oldest, old]);
        assert!(newer.exists() && writing.exists());
        // Age alone.
        let deleted = prune(
            &dir,
            u64::MAX,
            Duration::from_secs(10),
            std::slice::from_ref(&writing),
        )
        .unwrap();
        assert_eq!(deleted, vec![newer]);
        assert!(writing.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
