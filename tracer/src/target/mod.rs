//! The traced Go program, modelled before anything attaches and touched only through these
//! modules: its binary (`gobin`), the running process as `/proc/PID` shows it (`process`), the
//! probes' clock turned into wall time (`clock`), its `runtime.MemProfileRate` (`memprofile`),
//! and, in launch mode, the program started stopped until the probes are in place (`launch`).
//! Nothing here knows about probes or sessions.

pub mod clock;
pub mod gobin;
pub mod launch;
pub mod memprofile;
pub mod process;
