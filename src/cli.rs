//! The command line: a thin shell that parses flags, reads `Config`, and runs a subcommand from the library.

use crate::config::Config;
use crate::loadtest;
use crate::server::Server;
use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Drive a running gateway with simulated participants (API + signaling, optionally media) and report join
    /// latency, message rates, errors, media delivery and the server's own cost (from its /metrics).
    Loadtest(LoadtestArgs),
}

#[derive(Debug, Args)]
pub struct LoadtestArgs {
    /// Base URL of the gateway under test.
    #[arg(long, env = "LOADTEST_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer API key. Default: the first of TELEHEALTH_API_KEYS, else the key a local gateway generated in
    /// data/api-key. Generated keys are base64url and may begin with '-', hence allow_hyphen_values.
    #[arg(long, env = "TELEHEALTH_API_KEY", hide_env_values = true, allow_hyphen_values = true)]
    pub api_key: Option<String>,
    #[arg(long, default_value_t = 10)]
    pub meetings: usize,
    #[arg(long, default_value_t = 2)]
    pub participants_per_meeting: usize,
    /// Joins per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long everyone stays after the last join, e.g. 30s, 2m.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Participants also publish synthetic Opus + VP8 through real peer connections and subscribe to the others.
    #[arg(long)]
    pub media: bool,
    /// Video bitrate per publisher with --media: bits per second, or with a k/M suffix (1.5M, 800k).
    #[arg(long, default_value = "1.5M", value_parser = parse_bitrate)]
    pub video_bitrate: u64,
    /// Keep-alive ping per participant (its round trip is reported).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,
    /// API calls in flight while creating meetings and attendees.
    #[arg(long, default_value_t = 32)]
    pub api_concurrency: usize,
    /// Local IP(s) the media peers gather ICE candidates on. Default: 127.0.0.1 for a loopback --url, else all.
    #[arg(long = "rtc-bind-ip")]
    pub rtc_bind_ips: Vec<IpAddr>,
    /// Accept the gateway's self-signed development certificate on https:// URLs.
    #[arg(long)]
    pub insecure: bool,
    /// Only call create-meeting (--meetings times, --api-concurrency in flight, at most --rate/s), then delete:
    /// the API throughput benchmark.
    #[arg(long)]
    pub api_only: bool,
    /// Also write the report as JSON here, with latency histogram pictures (SVG) next to it.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `1500000`, `1500k`, `1.5M` → bits per second.
fn parse_bitrate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, scale) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1e3),
        Some((i, 'm' | 'M')) => (&s[..i], 1e6),
        _ => (s, 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("not a bitrate: {s:?} (try 1.5M or 800k)"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err("the bitrate must be positive".into());
    }
    Ok((v * scale).round() as u64)
}

impl LoadtestArgs {
    fn into_options(self) -> anyhow::Result<loadtest::Options> {
        let api_key = match self.api_key {
            Some(k) => k,
            None => default_api_key()?,
        };
        let rtc_bind_ips = if !self.rtc_bind_ips.is_empty() {
            self.rtc_bind_ips
        } else if url_is_loopback(&self.url) {
            vec![IpAddr::from([127, 0, 0, 1])]
        } else {
            vec![IpAddr::from([0, 0, 0, 0])]
        };
        Ok(loadtest::Options {
            url: self.url,
            api_key,
            meetings: self.meetings,
            participants_per_meeting: self.participants_per_meeting,
            rate: self.rate,
            duration: self.duration,
            media: self.media,
            video_bitrate_bps: self.video_bitrate,
            ping_interval: self.ping_interval,
            api_concurrency: self.api_concurrency,
            rtc_bind_ips,
            insecure: self.insecure,
            api_only: self.api_only,
            progress: !self.quiet,
            json: self.json,
        })
    }
}

fn default_api_key() -> anyhow::Result<String> {
    if let Some(k) = crate::config::api_keys_from_env().into_iter().next() {
        return Ok(k);
    }
    let path = crate::config::data_dir_from_env().join(crate::auth::API_KEY_FILE);
    std::fs::read_to_string(&path)
        .map(|k| k.trim().to_owned())
        .map_err(|_| anyhow::anyhow!("no API key: pass --api-key (or TELEHEALTH_API_KEY); {} does not exist", path.display()))
}

fn url_is_loopback(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or(url).split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { host });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
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
        Command::Loadtest(args) => {
            let report = loadtest::run(args.into_options()?).await?;
            println!("{}", report.table());
            // A run with failures is a failed run for scripts and CI, even though it produced a report.
            if report.error_count > 0 || report.participants.joined < report.participants.target {
                anyhow::bail!("the load test saw {} errors and {} failed joins", report.error_count, report.participants.failed);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates() {
        assert_eq!(parse_bitrate("1.5M"), Ok(1_500_000));
        assert_eq!(parse_bitrate("800k"), Ok(800_000));
        assert_eq!(parse_bitrate("64000"), Ok(64_000));
        assert!(parse_bitrate("fast").is_err());
        assert!(parse_bitrate("-1M").is_err());
    }

    #[test]
    fn loopback_urls() {
        assert!(url_is_loopback("http://127.0.0.1:8080"));
        assert!(url_is_loopback("https://localhost:8443/"));
        assert!(url_is_loopback("http://[::1]:8080"));
        assert!(!url_is_loopback("https://clinic.example:8443"));
        assert!(!url_is_loopback("http://10.0.0.5"));
    }

    #[test]
    fn an_api_key_may_begin_with_a_hyphen() {
        // One generated key in 64 starts with '-' (base64url); it must not be read as a flag.
        let cli = Cli::try_parse_from(["telehealth-gateway", "loadtest", "--api-key", "-8Xk2", "--meetings", "3"]).unwrap();
        let Some(Command::Loadtest(args)) = cli.command else { panic!("not the loadtest subcommand") };
        assert_eq!(args.api_key.as_deref(), Some("-8Xk2"));
        assert_eq!(args.meetings, 3);
    }
}
