//! escapade: trace a running Go process by PID with eBPF uprobes.
//!
//! Data flows one way, and each module is one stage of it:
//! `gobin` and `process` model the target before anything attaches (`amd64` decodes its code
//! for both this and probe placement); `placement` decides where each uprobe sits, entries and
//! the callers' return sites; `attach` loads the probes; `ringbuf` drains raw events; `decode` turns them
//! into typed values; `calls` pairs entries with returns; `model` makes each entry or return a
//! record that outlives the target; `params` follows each parameter's value (where it points,
//! whether the function moved it to the heap); `allocs` turns what the counting probes summed
//! in the kernel into allocation sites, goroutine and GC views; `report` prints them; `record`
//! writes them to a file and reads them back; `export` turns a read-back recording into other
//! tools' formats. `clock` converts the probes' monotonic timestamps to wall time. `cpu` samples
//! the target's CPU per user stack; `hot` joins those samples to the traced calls' parameter
//! lifetimes into scored paths. `launch` starts a program stopped until the probes are in
//! place, `memprofile` reads and sets the target's `runtime.MemProfileRate`, `status` keeps a
//! terminal's status line, and `agent` runs all of it as a daemon for many targets.

pub mod agent;
pub mod allocs;
pub mod amd64;
pub mod attach;
pub mod calls;
pub mod cli;
pub mod cpu;
pub mod decode;
pub mod export;
pub mod hints;
pub mod hot;
pub mod model;
pub mod params;
pub mod placement;
pub mod record;
pub mod report;
pub mod ringbuf;
pub mod session;
pub mod sink;
pub mod status;
pub mod target;
pub mod uprobe_multi;
