//! The kernels of the compatibility matrix and what boots them, installed idempotently:
//! Debian's QEMU and static busybox, virtme-ng from PyPI (in the cache), bookworm's 6.1 (with apt, as the machine's
//! own Debian ships it) and trixie's 6.12 (downloaded with a sources list kept in the cache, so
//! that the machine's own apt sources stay as they are).

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cmd, setup};

/// The virtme-ng release whose flags `vmtest` uses.
const VIRTME_NG_VERSION: &str = "1.42";

/// The kernel series of the matrix, as `--kernel` names them: Debian 12's and Debian 13's.
pub const SERIES: &[&str] = &["6.1", "6.12"];

/// Trixie's archive, for its 6.12 kernel: only apt-get download reads it.
const TRIXIE_SOURCES: &str = "deb http://deb.debian.org/debian trixie main\n";

/// A kernel to boot under QEMU.
pub struct Kernel {
    /// "6.1" or "6.12", as in [`SERIES`].
    pub series: &'static str,
    /// Its `uname -r`, e.g. "6.1.0-47-amd64".
    pub release: String,
    /// The bootable image.
    pub image: PathBuf,
}

/// What boots the kernels: virtme-ng's `vng`, with what it needs to run from the cache.
pub struct Vng {
    /// `<cache>/virtme-ng`: its `bin/` goes on PATH and the directory on PYTHONPATH.
    pub dir: PathBuf,
}

impl Vng {
    /// `vng` with PATH and PYTHONPATH set so that it runs from the cache.
    pub fn command(&self) -> Result<Command> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            std::iter::once(self.dir.join("bin")).chain(std::env::split_paths(&path)),
        )
        .context("a PATH entry contains ':'")?;
        let mut command = Command::new(self.dir.join("bin/vng"));
        command.env("PATH", path).env("PYTHONPATH", &self.dir);
        Ok(command)
    }
}

/// `apt-get update` of the machine's own sources, run at most once.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn update(&mut self) -> Result<()> {
        if !self.updated {
            say!("apt-get update");
            cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
            self.updated = true;
        }
        Ok(())
    }

    fn install(&mut self, packages: &[&str]) -> Result<()> {
        self.update()?;
        say!("installing {} with apt-get", packages.join(" "));
        // No recommends: QEMU's are its GUI and firmware for other machines, a kernel's are
        // firmware for real hardware.
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    }
}

/// Installs QEMU, virtme-ng and the kernels of `series` (every one of [`SERIES`] if `None`).
pub fn install(cache: &Path, series: Option<&str>) -> Result<(Vng, Vec<Kernel>)> {
    let mut apt = Apt::default();
    qemu(&mut apt)?;
    let vng = virtme_ng(cache)?;
    let mut kernels = Vec::new();
    for &wanted in SERIES {
        if series.is_some_and(|s| s != wanted) {
            continue;
        }
        kernels.push(match wanted {
            "6.1" => bookworm(&mut apt)?,
            _ => trixie(cache)?,
        });
    }
    Ok((vng, kernels))
}

/// QEMU, and the static busybox virtme-ng builds the guest's initramfs with (Debian's kernels
/// load the modules of the shared filesystem from it).
fn qemu(apt: &mut Apt) -> Result<()> {
    let mut missing = Vec::new();
    match cmd::probe(Command::new("qemu-system-x86_64").arg("--version")) {
        Some(version) => say!(
            "qemu: already installed ({})",
            version.lines().next().unwrap_or_default()
        ),
        None => missing.push("qemu-system-x86"),
    }
    let mut status = Command::new("dpkg-query");
    status.args(["--show", "--showformat=${Status}", "busybox-static"]);
    match cmd::probe(&mut status).as_deref() {
        Some("install ok installed") => say!("busybox-static: already installed"),
        _ => missing.push("busybox-static"),
    }
    if missing.is_empty() {
        return Ok(());
    }
    apt.install(&missing)
}

fn virtme_ng(cache: &Path) -> Result<Vng> {
    let dir = cache.join("virtme-ng");
    let vng = Vng { dir: dir.clone() };
    let installed = || cmd::probe(vng.command().ok()?.arg("--version"));
    if let Some(version) = installed().filter(|v| v.ends_with(VIRTME_NG_VERSION)) {
        say!("virtme-ng: already installed ({version})");
        return Ok(vng);
    }
    say!("virtme-ng: installing {VIRTME_NG_VERSION} from PyPI");
    // As for Go: install beside the final place and rename when complete, so that an
    // interrupted install is never taken for a finished one.
    let partial = cache.join(".virtme-ng.partial");
    remove_dir(&partial)?;
    remove_dir(&dir)?;
    cmd::run(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&partial)
            .arg(format!("virtme-ng=={VIRTME_NG_VERSION}"))
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("PIP_ROOT_USER_ACTION", "ignore"),
    )?;
    fs::rename(&partial, &dir)
        .with_context(|| format!("cannot move {} to {}", partial.display(), dir.display()))?;
    match installed() {
        Some(version) => say!("virtme-ng: installed ({version})"),
        None => bail!(
            "virtme-ng was installed in {}, but `vng --version` fails there",
            dir.display()
        ),
    }
    Ok(vng)
}

/// Bookworm's newest `linux-image-6.1.0-N-amd64`, installed with apt unless a 6.1 image and its
/// modules are there already.
fn bookworm(apt: &mut Apt) -> Result<Kernel> {
    let installed = |release: &str| {
        let image = PathBuf::from(format!("/boot/vmlinuz-{release}"));
        let modules = Path::new("/lib/modules").join(release);
        (image.is_file() && modules.is_dir()).then_some(image)
    };
    let newest_installed = fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            bookworm_abi(&release)?;
            installed(&release)?;
            Some(release)
        })
        .max_by_key(|release| bookworm_abi(release));
    if let Some(release) = newest_installed {
        say!("kernel 6.1: already installed ({release})");
        let image = PathBuf::from(format!("/boot/vmlinuz-{release}"));
        return Ok(Kernel {
            series: "6.1",
            release,
            image,
        });
    }
    apt.update()?;
    let names = cmd::output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        r"^linux-image-6\.1\.0-[0-9]+-amd64$",
    ]))?;
    let release = names
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.strip_prefix("linux-image-"))
        .filter(|release| bookworm_abi(release).is_some())
        .max_by_key(|release| bookworm_abi(release))
        .context(
            "apt-cache finds no linux-image-6.1.0-*-amd64: is bookworm (Debian 12) among the \
             machine's apt sources?",
        )?
        .to_owned();
    apt.install(&[&format!("linux-image-{release}")])?;
    let image = installed(&release).with_context(|| {
        format!("apt-get installed linux-image-{release}, but not /boot/vmlinuz-{release} and /lib/modules/{release}")
    })?;
    say!("kernel 6.1: installed ({release})");
    Ok(Kernel {
        series: "6.1",
        release,
        image,
    })
}

/// "6.1.0-47-amd64" -> 47.
fn bookworm_abi(release: &str) -> Option<u32> {
    release
        .strip_prefix("6.1.0-")?
        .strip_suffix("-amd64")?
        .parse()
        .ok()
}

/// Trixie's newest `linux-image-6.12.*+deb13-amd64`, downloaded with apt-get from a sources
/// list of its own and unpacked under `<cache>/kernels/trixie/<release>`; its modules are
/// copied into /lib/modules, where the guest (which sees the machine's filesystem) loads them.
fn trixie(cache: &Path) -> Result<Kernel> {
    let root = cache.join("kernels/trixie");
    let unpacked = |release: &str| root.join(release);
    let image_of = |release: &str| unpacked(release).join(format!("boot/vmlinuz-{release}"));
    let newest_unpacked = fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let release = entry.file_name().to_string_lossy().into_owned();
            let version = trixie_version(&release)?;
            image_of(&release).is_file().then_some((version, release))
        })
        .max();
    if let Some((_, release)) = newest_unpacked {
        modules(&unpacked(&release), &release)?;
        say!("kernel 6.12: already installed ({release})");
        let image = image_of(&release);
        return Ok(Kernel {
            series: "6.12",
            release,
            image,
        });
    }

    let apt = PrivateApt::new(&root)?;
    apt.update()?;
    let names = cmd::output(apt.command("apt-cache").args([
        "search",
        "--names-only",
        r"^linux-image-6\.12\.[0-9]+\+deb13-amd64$",
    ]))?;
    let release = names
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.strip_prefix("linux-image-"))
        .filter_map(|release| Some((trixie_version(release)?, release)))
        .max()
        .map(|(_, release)| release.to_owned())
        .context("trixie's package lists have no linux-image-6.12.*+deb13-amd64")?;
    let package = format!("linux-image-{release}");
    let downloads = root.join("downloads");
    remove_dir(&downloads)?;
    fs::create_dir_all(&downloads)
        .with_context(|| format!("cannot create {}", downloads.display()))?;
    say!("kernel 6.12: downloading {package} from trixie");
    cmd::run(
        apt.command("apt-get")
            .current_dir(&downloads)
            .args(["download", "-qq", &package]),
    )?;
    let deb = fs::read_dir(&downloads)?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", downloads.display()))?;
    let partial = root.join(format!(".{release}.partial"));
    remove_dir(&partial)?;
    cmd::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&partial))?;
    fs::rename(&partial, unpacked(&release))?;
    remove_dir(&downloads)?;
    let image = image_of(&release);
    if !image.is_file() {
        bail!("{package} has no boot/vmlinuz-{release}");
    }
    modules(&unpacked(&release), &release)?;
    say!("kernel 6.12: installed ({release})");
    Ok(Kernel {
        series: "6.12",
        release,
        image,
    })
}

/// "6.12.57+deb13-amd64" -> [6, 12, 57].
fn trixie_version(release: &str) -> Option<Vec<u32>> {
    let version = release.strip_suffix("+deb13-amd64")?;
    version
        .starts_with("6.12.")
        .then(|| setup::version_key(version))
}

/// Copies the unpacked package's `usr/lib/modules/<release>` to /lib/modules, unless there.
fn modules(unpacked: &Path, release: &str) -> Result<()> {
    let target = Path::new("/lib/modules").join(release);
    if target.join("modules.dep").is_file() {
        return Ok(());
    }
    let source = unpacked.join("usr/lib/modules").join(release);
    say!("copying {} to /lib/modules", source.display());
    let partial = Path::new("/lib/modules").join(format!(".{release}.partial"));
    remove_dir(&partial)?;
    cmd::run(Command::new("cp").arg("-a").arg(&source).arg(&partial))?;
    remove_dir(&target)?;
    fs::rename(&partial, &target)
        .with_context(|| format!("cannot move {} to {}", partial.display(), target.display()))
}

/// apt-get and apt-cache reading only trixie's lists, all kept under one cache directory.
struct PrivateApt {
    sources: PathBuf,
    lists: PathBuf,
    cache: PathBuf,
}

impl PrivateApt {
    fn new(root: &Path) -> Result<PrivateApt> {
        let apt = PrivateApt {
            sources: root.join("sources.list"),
            lists: root.join("lists"),
            cache: root.join("apt-cache"),
        };
        for dir in [
            apt.lists.join("partial"),
            apt.cache.join("archives/partial"),
        ] {
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        fs::write(&apt.sources, TRIXIE_SOURCES)
            .with_context(|| format!("cannot write {}", apt.sources.display()))?;
        Ok(apt)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let option = |name: &str, value: &Path| format!("{name}={}", value.display());
        command
            .arg("-o")
            .arg(option("Dir::Etc::sourcelist", &self.sources))
            .args(["-o", "Dir::Etc::sourceparts=/nonexistent"])
            .arg("-o")
            .arg(option("Dir::State::lists", &self.lists))
            .arg("-o")
            .arg(option("Dir::Cache", &self.cache));
        command
    }

    fn update(&self) -> Result<()> {
        say!(
            "apt-get update (trixie's lists, in {})",
            self.lists.display()
        );
        cmd::run(self.command("apt-get").args(["update", "-qq"]))
    }
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_of_the_matrix() {
        assert_eq!(bookworm_abi("6.1.0-47-amd64"), Some(47));
        assert_eq!(bookworm_abi("6.1.0-47-cloud-amd64"), None);
        assert_eq!(bookworm_abi("6.12.57+deb13-amd64"), None);
        assert_eq!(trixie_version("6.12.57+deb13-amd64"), Some(vec![6, 12, 57]));
        assert_eq!(trixie_version("6.12.57+deb13-cloud-amd64"), None);
        assert!(trixie_version("6.12.9+deb13-amd64") < trixie_version("6.12.10+deb13-amd64"));
    }
}
