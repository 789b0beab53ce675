//! Keeps a target's recording directory within its bounds: files older than `keep_age` go,
//! then the oldest files until the rest fit in `keep_total`. Files still being written are
//! kept, so the directory exceeds `keep_total` by at most the file being written.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Recordings are `.esc` files and their rotated parts, `.esc.1`, `.esc.2`...
fn is_recording(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    match name.split_once(".esc") {
        Some((_, "")) => true,
        Some((_, rest)) => rest
            .strip_prefix('.')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
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
        let meta = entry.metadata()?;
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
            std::fs::remove_file(&path)?;
            total -= len;
            deleted.push(path);
        }
    }
    Ok(deleted)
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
