//! escapade: trace a running Go process by PID with eBPF uprobes.
//!
//! Data flows one way, and each module is one stage of it: `tracee` models the traced program
//! before anything attaches (`gobin`, its binary; `process`, `/proc/PID`; `clock`, the probes'
//! clock as wall time; `memprofile`, its `runtime.MemProfileRate`; `launch`, a program started
//! stopped until the probes are in place; `Target`, a running process with its binary's model),
//! and `amd64` decodes its code for both that model and probe placement; `probes` decides where
//! each uprobe sits (`placement`, entries and the callers' return sites; `plan`, every probe
//! point and whose it is), loads and attaches them (`attach`, `uprobe_multi`) and reads what they
//! counted in the kernel (`snapshot`); `session` pumps their events, `ringbuf` draining them raw
//! into an `EventSink` (`sink`); `cpu` samples the target's CPU per user stack. `model` turns
//! what they saw into typed values and records that outlive the target: `decode` turns events
//! into typed values; `calls` pairs entries with returns; `records` makes each entry or return a
//! call record; `params` follows each parameter's value (where it points, whether the function
//! moved it to the heap); `allocs` turns what the counting probes summed in the kernel into
//! allocation sites, goroutine and GC views; `hot` joins the CPU samples to the traced calls'
//! parameter lifetimes into scored paths. `record` is the recording file's format: it writes all
//! of these to a file and reads them back. `views` turns them, live or read back, into what the
//! user reads, each view writing through one `Output` (text, JSON lines, or nothing); `export`
//! turns a read-back recording into other tools' formats. `status` keeps a terminal's status
//! line, and `agent` runs all of it as a daemon for many targets. `kernel` says what the running
//! kernel offers, each feature tried rather than read off the version, with what escapade does
//! without it, and makes the few `bpf(2)` calls aya does not; `doctor` puts it together with
//! every program loaded (not attached) as the commands load it, into a verdict per command.
//! The binary's `commands/` (one file per subcommand) drive these for the CLI.

pub mod agent;
pub mod amd64;
pub mod cli;
pub mod cpu;
pub mod doctor;
pub mod export;
pub mod hints;
pub mod kernel;
pub mod model;
pub mod probes;
pub mod record;
pub mod ringbuf;
pub mod session;
pub mod sink;
pub mod status;
pub mod tracee;
pub mod views;
