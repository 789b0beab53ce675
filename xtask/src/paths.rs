//! Where things live: the workspace, cargo's target directory and the tool cache.

use std::{
    env,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> Result<PathBuf> {
    match env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => absolute(dir.into()),
        None => Ok(workspace_root().join("target")),
    }
}

/// The tool cache: `$ESCAPADE_CACHE` or `~/.cache/escapade`. It must be stable (not /tmp):
/// bpf-linker keeps an rpath into it.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("ESCAPADE_CACHE").filter(|dir| !dir.is_empty()) {
        return absolute(dir.into());
    }
    let home = env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .context("neither ESCAPADE_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/escapade"))
}

fn absolute(path: PathBuf) -> Result<PathBuf> {
    std::path::absolute(&path).with_context(|| format!("cannot make {} absolute", path.display()))
}
