use clap::Parser;
use loadtest::cli::{self, LoadtestArgs};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = LoadtestArgs::parse();
    // Only warnings from the media stack: webrtc-rs logs ICE candidates (addresses) at lower levels.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    cli::main(args).await
}
