//! `cargo xtask vmtest [--kernel 6.1]`: the kernel compatibility suite
//! (`tracer/tests/kernels.rs`) on the machine's own kernel, then on each kernel of the matrix
//! booted under QEMU by virtme-ng. The guest sees the machine's filesystem, so it runs the test
//! binary, escapade and the Go programs built here; the suite's run here builds the Go
//! programs first, which under QEMU's emulation would take minutes.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cmd, kernels, paths, setup, test};

/// A guest that has not finished by then is stuck (a boot takes about 20 s and the suite 20 to
/// 25 minutes under emulation), and is killed.
const GUEST_TIMEOUT: Duration = Duration::from_secs(35 * 60);

/// How many times longer the suite waits in a guest (`tests/common`'s `patience`): under
/// emulation escapade takes a minute or two to attach where it takes seconds here.
const GUEST_SLOWDOWN: &str = "10";

/// Enough for a guest that boots under KVM to run `true`; one that does not stops or hangs.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct Options {
    /// Run the suite on this kernel only: a series of the matrix, or "host" for the machine's
    /// own kernel.
    #[arg(long, value_parser = ["host", "6.1", "6.12"])]
    kernel: Option<String>,
}

/// One kernel's run of the suite.
struct Outcome {
    kernel: String,
    status: Result<ExitStatus>,
    took: Duration,
}

pub fn run(options: Options) -> Result<()> {
    if !test::is_root()? {
        bail!(
            "the suite loads eBPF programs and QEMU needs /dev/kvm or plenty of rights: run it \
             as root (try `sudo -E cargo xtask vmtest`)"
        );
    }
    let tools = setup::run()?;
    let only = options.kernel.as_deref();
    let (vng, kernels) = match only {
        Some("host") => (None, Vec::new()),
        series => {
            let (vng, kernels) = kernels::install(&tools.cache, series)?;
            (Some(vng), kernels)
        }
    };
    let suite = Suite::build(&tools)?;

    let mut outcomes = Vec::new();
    if only.is_none_or(|k| k == "host") {
        let release = cmd::output(Command::new("uname").arg("-r"))?;
        let kernel = format!("host {release}");
        say!("{kernel}: running the suite");
        let started = Instant::now();
        let status = cmd::status(&mut suite.command());
        outcomes.push(Outcome::report(kernel, status, started));
    }
    if let Some(vng) = vng {
        let kvm = kvm_boots(&vng, &kernels[0])?;
        for kernel in &kernels {
            let name = format!("{} ({})", kernel.series, kernel.release);
            say!(
                "{name}: booting under QEMU ({}) to run the suite",
                if kvm { "KVM" } else { "TCG: no KVM here" }
            );
            let started = Instant::now();
            let writable = suite.writable()?;
            let status = boot(&vng, kernel, kvm, &writable, &suite.guest_script());
            let status = status.and_then(|mut vm| {
                run_with_timeout(&mut vm, GUEST_TIMEOUT)?.with_context(|| {
                    format!("the guest did not finish in {GUEST_TIMEOUT:?} and was killed")
                })
            });
            outcomes.push(Outcome::report(name, status, started));
        }
    }

    say!("kernel matrix:");
    for outcome in &outcomes {
        let verdict = match &outcome.status {
            Ok(status) if status.success() => "passed".to_owned(),
            Ok(status) => format!("FAILED ({})", cmd::describe(*status)),
            Err(error) => format!("FAILED ({error:#})"),
        };
        say!(
            "  {:<32} {:>5.0} s  {verdict}",
            outcome.kernel,
            outcome.took.as_secs_f64()
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.status.as_ref().is_ok_and(ExitStatus::success))
        .map(|o| o.kernel.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "the compatibility suite failed on {} (its output is above)",
            failed.join(", ")
        );
    }
    Ok(())
}

impl Outcome {
    fn report(kernel: String, status: Result<ExitStatus>, started: Instant) -> Outcome {
        let took = started.elapsed();
        say!("{kernel}: done in {:.0} s", took.as_secs_f64());
        Outcome {
            kernel,
            status,
            took,
        }
    }
}

/// The compatibility suite's test binary, and what it needs to run.
struct Suite {
    exe: PathBuf,
    /// The newest Go of the matrix: the suite builds its programs with it.
    go: PathBuf,
    cache: PathBuf,
}

impl Suite {
    /// Builds the suite as `cargo xtask test` builds the workspace's tests, so that after it
    /// nothing is built again.
    fn build(tools: &setup::Tools) -> Result<Suite> {
        say!("building the compatibility suite (tracer/tests/kernels.rs)");
        let messages = cmd::output(
            Command::new("cargo")
                .current_dir(paths::workspace_root())
                .args(["test", "--workspace", "--exclude", "probe-ebpf"])
                .args(["--test", "kernels", "--no-run"])
                .arg("--message-format=json-render-diagnostics"),
        )?;
        let exe = messages
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "kernels")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .context("cargo built no executable for the `kernels` test")?;
        Ok(Suite {
            exe,
            go: tools.newest_go().to_owned(),
            cache: tools.cache.clone(),
        })
    }

    /// The test binary with its environment, run where `cargo test` runs it.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.exe);
        command
            .current_dir(paths::workspace_root().join("tracer"))
            .env("ESCAPADE_GO", &self.go)
            .env("ESCAPADE_CACHE", &self.cache);
        command
    }

    /// The directories the suite writes to: its scratch directory (cargo's
    /// `CARGO_TARGET_TMPDIR`), Go's build cache, and /tmp.
    fn writable(&self) -> Result<Vec<PathBuf>> {
        Ok(vec![
            paths::target_dir()?.join("tmp"),
            self.cache.join("gocache"),
            PathBuf::from("/tmp"),
        ])
    }

    /// The shell script the guest runs: tracefs where the agent's exec tracepoint is looked up,
    /// then the suite, two tests at a time (one a vCPU), its timeouts stretched for emulation.
    fn guest_script(&self) -> String {
        let mut suite = self.command();
        suite
            .env("ESCAPADE_TEST_SLOWDOWN", GUEST_SLOWDOWN)
            .arg("--test-threads=2");
        let suite = cmd::display(&suite);
        let tracer = paths::workspace_root().join("tracer");
        format!(
            "set -e; echo \"guest kernel: $(uname -r)\"; \
             [ -e /sys/kernel/tracing/uprobe_events ] || mount -t tracefs nodev /sys/kernel/tracing; \
             cd '{}'; {suite}",
            tracer.display()
        )
    }
}

/// Starts `vng` booting `kernel` to run `script`, in its own process group so that a stuck
/// guest can be killed with QEMU under it.
fn boot(
    vng: &kernels::Vng,
    kernel: &kernels::Kernel,
    kvm: bool,
    writable: &[PathBuf],
    script: &str,
) -> Result<Child> {
    let mut command = vng.command()?;
    command.arg("--run").arg(&kernel.image);
    if !kvm {
        command.arg("--disable-kvm");
    }
    command.args(["--user", "root", "--memory", "4G", "--cpus", "2"]);
    // The guest sees this machine's filesystem read-only. Where the suite writes (its scratch
    // files, Go's build cache, /tmp) it gets overlays, so that its writes stay in the guest.
    for dir in writable {
        command.arg(format!("--overlay-rwdir={}", dir.display()));
    }
    command.args(["--", script]).process_group(0);
    say!("`{}`", cmd::display(&command));
    let child = command
        .spawn()
        .with_context(|| format!("cannot run `{}`", cmd::display(&command)))?;
    Ok(Child(child))
}

/// Whether a guest boots with KVM: nested KVM stops some guests at boot ("KVM internal
/// error"), when QEMU's emulation (TCG) is the way.
fn kvm_boots(vng: &kernels::Vng, kernel: &kernels::Kernel) -> Result<bool> {
    if !Path::new("/dev/kvm").exists() {
        return Ok(false);
    }
    say!("trying a boot with KVM");
    let mut vm = boot(vng, kernel, true, &[], "true")?;
    let booted = run_with_timeout(&mut vm, KVM_PROBE_TIMEOUT)?.is_some_and(|s| s.success());
    say!(
        "{}",
        if booted {
            "KVM works: the guests run under it"
        } else {
            "the guest does not boot with KVM here: the guests run under QEMU's emulation (TCG)"
        }
    );
    Ok(booted)
}

/// A process leading its own process group.
struct Child(std::process::Child);

/// Waits for `child` for at most `limit`; past it kills its process group and returns None.
fn run_with_timeout(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let group = child.0.id() as libc::pid_t;
            // SAFETY: kill has no memory-safety preconditions; the group is the child's own.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            child.0.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
