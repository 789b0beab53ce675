//! One job: turn what the probes saw into typed values and records that outlive the target, so
//! that live views, recordings read back and the agent all show the same values. `decode` reads
//! an event's words as Go values, `calls` pairs entries with returns, `records` makes each a call
//! record, `params` follows each parameter's value, `allocs` makes the kernel's counts allocation
//! sites, goroutine and GC views, and `hot` joins CPU samples to parameter lifetimes.

pub mod allocs;
pub mod calls;
pub mod decode;
pub mod hot;
pub mod params;
pub mod records;
