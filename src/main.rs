use clap::Parser;
use telehealth_gateway::cli::{self, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli::init_tracing();
    cli::run(cli).await
}
