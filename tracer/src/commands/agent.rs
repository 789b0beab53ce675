//! `escapade agent`: the daemon, which the library's `agent` module runs whole.

use escapade::cli::AgentArgs;

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    escapade::agent::run(args.into_source()).await
}
