//! The agent under test: its config, its HTTP endpoints, and the programs it watches.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Go, Target, build, patience};

/// A free loopback port (the listener is closed before the caller binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GETs `url`. An agent that stops answering fails the test instead of hanging it (ureq has no
/// timeout by default).
pub fn get(url: &str) -> Result<String, ureq::Error> {
    let request = ureq::get(url).config();
    let request = request.timeout_global(Some(patience(30))).build();
    request.call()?.body_mut().read_to_string()
}

/// Polls `check` every 100 ms until it returns Some, for at most `limit`.
pub fn wait_until<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running agent, killed when dropped.
pub struct Agent {
    pub child: Child,
    pub port: u16,
}

impl Agent {
    /// Starts `escapade agent --config <config>` with `listen` set to a free port; waits until
    /// it answers.
    pub fn start(dir: &Path, targets: &str) -> Agent {
        Agent::start_with_env(dir, targets, &[])
    }

    /// [`Agent::start`] with variables added to the agent's environment.
    pub fn start_with_env(dir: &Path, targets: &str, env: &[(&str, &str)]) -> Agent {
        Agent::spawn(dir, targets, env, Stdio::inherit())
    }

    /// [`Agent::start_with_env`], the agent's stderr kept in `dir/agent.log`.
    pub fn start_logged(dir: &Path, targets: &str, env: &[(&str, &str)]) -> Agent {
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        Agent::spawn(dir, targets, env, log.into())
    }

    fn spawn(dir: &Path, targets: &str, env: &[(&str, &str)], stderr: Stdio) -> Agent {
        let port = free_port();
        let config = dir.join("agent.toml");
        std::fs::write(&config, format!("listen = \"127.0.0.1:{port}\"\n{targets}")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_escapade"))
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let agent = Agent { child, port };
        wait_until(patience(10), "the agent's /healthz", || {
            get(&agent.url("/healthz")).ok()
        });
        agent
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn targets(&self) -> serde_json::Value {
        serde_json::from_str(&get(&self.url("/targets")).unwrap()).unwrap()
    }

    /// Waits until the agent is attached to `pid` under `target`, and returns how long that
    /// took.
    pub fn wait_attached(&self, target: &str, pid: u32) -> Duration {
        let started = Instant::now();
        wait_until(patience(20), "the agent to attach", || {
            let targets = self.targets();
            let processes = targets[target]["processes"].as_array()?.clone();
            processes
                .iter()
                .any(|p| p["pid"] == pid)
                .then(|| started.elapsed())
        })
    }

    /// The value of the series `name{labels}` on /metrics.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = get(&self.url("/metrics")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// The kernel memory the agent's BPF maps lock, in bytes: the sum of the `memlock:` lines
    /// of its map fds' fdinfo, as `bpftool map show` reports them (by use for the maps that
    /// grow by use, from 6.4 on).
    pub fn map_memory(&self) -> u64 {
        let fds = std::fs::read_dir(format!("/proc/{}/fdinfo", self.child.id())).unwrap();
        fds.flatten()
            .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
            .filter(|info| info.contains("\nmap_type:") || info.starts_with("map_type:"))
            .filter_map(|info| {
                let line = info.lines().find(|l| l.starts_with("memlock:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .sum()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The test program built by `go` with `flags`, copied into `dir` as `name`: agents select
/// processes by executable, and tests running at the same time must not see each other's.
pub fn install(dir: &Path, name: &str, go: &Go, flags: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(build(go, "agent", flags), &path).unwrap();
    path
}

/// What the test program said it did.
pub struct Ran {
    pub calls: u64,
    pub mallocs: u64,
    pub goroutines: u64,
    /// GC cycles over the program's life.
    pub gcs: u64,
}

/// One `[[target]]` tracing `main.work` in the program at `exe`, with `rest` added to it.
pub fn target_config(name: &str, exe: &Path, rest: &str) -> String {
    format!(
        "[[target]]\nname = \"{name}\"\nexe = \"{}\"\nfunctions = [\"main.work\"]\n{rest}",
        exe.display()
    )
}

/// Starts the test program at `bin`, waits until the agent attached to it under `target`, lets
/// it make `n` calls, waits until the agent let it go (and so counted what its probes saw
/// last), and returns what it printed and how long attaching took.
pub fn run_traced(agent: &Agent, target: &str, bin: &Path, n: u64) -> (Ran, Duration) {
    let mut program = Target::start(bin, &[&n.to_string()]);
    let attach = agent.wait_attached(target, program.pid);
    program.go();
    let ran = Ran {
        calls: program.read_count("calls"),
        mallocs: program.read_count("mallocs"),
        goroutines: program.read_count("goroutines"),
        gcs: program.read_count("gcs"),
    };
    let pid = program.pid;
    program.finish();
    wait_until(patience(20), "the agent to let the process go", || {
        let status = agent.targets();
        let processes = status[target]["processes"].as_array()?.clone();
        (!processes.iter().any(|p| p["pid"] == pid)).then_some(())
    });
    (ran, attach)
}
