//! The probes, from plan to counts: where each uprobe goes in the traced binary (`placement`,
//! which reads the code; `plan`, which lays every probe point with its owner), loading and
//! attaching them for one process (`attach`, through `uprobe_multi` links where the kernel has
//! them), and reading what they counted in the kernel (`snapshot`).

pub mod attach;
pub mod placement;
pub mod plan;
pub mod snapshot;
#[cfg(test)]
pub(crate) mod stack_budget;
pub mod uprobe_multi;
