//! The traced Go program, modelled before anything attaches and touched only through these
//! modules: its binary (`gobin`), the running process as `/proc/PID` shows it (`process`), the
//! probes' clock turned into wall time (`clock`), its `runtime.MemProfileRate` (`memprofile`),
//! and, in launch mode, the program started stopped until the probes are in place (`launch`);
//! [`Target`] holds a running process with the model of its binary. Nothing here knows about
//! probes or sessions.

pub mod clock;
pub mod gobin;
pub mod launch;
pub mod memprofile;
pub mod process;

use anyhow::Context as _;

use gobin::GoBinary;
use process::Process;

/// A running Go process and the model of its binary.
pub struct Target {
    pub process: Process,
    /// Shared by the processes of one build (the agent keeps it per file).
    pub binary: std::sync::Arc<GoBinary>,
    /// Runtime address minus link-time address (non-zero for PIE).
    pub bias: u64,
}

impl Target {
    /// The process `pid`, its binary described by `symbols` when given (`--symbols`).
    pub fn open(pid: u32, symbols: Option<&std::path::Path>) -> anyhow::Result<Target> {
        Target::open_with(pid, |exe| {
            Ok(std::sync::Arc::new(GoBinary::open(exe, symbols)?))
        })
    }

    /// The process `pid`, its binary modelled by `model` from the path of its executable.
    pub fn open_with(
        pid: u32,
        model: impl FnOnce(&std::path::Path) -> anyhow::Result<std::sync::Arc<GoBinary>>,
    ) -> anyhow::Result<Target> {
        let process = Process::open(pid)?;
        let binary = model(&process.exe)
            .with_context(|| format!("PID {pid} runs {}", process.exe_target.display()))?;
        let bias = process.load_bias(binary.is_pie, binary.first_load_vaddr)?;
        Ok(Target {
            process,
            binary,
            bias,
        })
    }
}
