//! The views, with one job: turn the model (call records, the params, allocation and hot-path
//! views, the CPU profile, a recording's last counts) into what the user reads. Each writes
//! through an [`Output`], which alone decides between text, JSON lines and nothing.
//!
//! `trace` prints a line per entry and return, then a summary, live or from a recording;
//! `params`, `allocs`, `cpu` and `hot` print their tables when a session ends; `summaries` ends
//! a recording with the same views as live; `text` is how values, frames and times read.

mod output;

pub mod allocs;
pub mod cpu;
pub mod hot;
pub mod params;
pub mod summaries;
pub mod text;
pub mod trace;

pub use output::Output;

/// On stderr, after the view it qualifies: events the ring buffer had no room for. `missed`
/// says what the view just written lacks for them: the params table's counts miss them, while
/// the trace summary's come from the kernel and miss nothing.
fn warn_lost_events(dropped: u64, missed: &str) {
    if dropped > 0 {
        eprintln!(
            "escapade: warning: {dropped} events were lost because the ring buffer was full; \
             {missed}trace fewer functions"
        );
    }
}
