//! The command line: a thin shell that parses flags, reads `Config`, and runs a subcommand from the library.

use crate::config::Config;
use crate::server::Server;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "telehealth-gateway", version, about = "Self-hosted WebRTC gateway for telehealth video visits")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default when no subcommand is given). Configuration comes from the environment
    /// and `.env`; see README.md.
    Serve,
    /// Create or upgrade the database schema named by DATABASE_URL, then exit.
    Migrate,
}

/// The media stack (webrtc-rs and its `rtc*` crates) logs ICE candidates, i.e. participants' IP
/// addresses, even at warn level, so by default only our own crate, the HTTP layer and sqlx speak.
pub const DEFAULT_LOG_FILTER: &str = "telehealth_gateway=info,tower_http=info,sqlx=warn";

/// Logs go to stderr, filtered by `RUST_LOG` (default `DEFAULT_LOG_FILTER`). Only ids are ever logged, never patient data.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colour codes only for a terminal: log files and journald want plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = Config::from_env()?;
            let server = Server::build(config).await?;
            // The banner is for the operator's terminal (stdout), not the log: it may hold a new API key.
            println!("{}", server.banner());
            tracing::info!(http = %server.http_addr(), https = ?server.https_addr(), "listening");
            server.run().await
        }
        Command::Migrate => {
            let config = Config::from_env()?;
            crate::store::Store::connect(&config.database_url).await?;
            println!("database schema is up to date");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_is_the_default_and_migrate_is_a_subcommand() {
        assert!(Cli::try_parse_from(["telehealth-gateway"]).unwrap().command.is_none());
        assert!(matches!(Cli::try_parse_from(["telehealth-gateway", "migrate"]).unwrap().command, Some(Command::Migrate)));
        // The load generator is its own binary (telehealth-loadtest) now.
        assert!(Cli::try_parse_from(["telehealth-gateway", "loadtest"]).is_err());
    }
}
