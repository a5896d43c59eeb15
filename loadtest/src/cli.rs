//! The command line of `telehealth-loadtest`: flags → [`Options`], and the exit status a script can rely on.

use crate::run::{self, Options};
use clap::Parser;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "telehealth-loadtest",
    version,
    about = "Drive a running telehealth-gateway with simulated participants (API + signaling, optionally media) and report \
             join latency, message rates, errors, media delivery and the server's own cost (from its /metrics)"
)]
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
    /// Threads driving the media peers (each peer has its own UDP socket; a thread drives hundreds).
    #[arg(long, default_value_t = 1)]
    pub media_threads: usize,
    /// Video bitrate per publisher with --media: bits per second, or with a k/M suffix (1.5M, 800k).
    #[arg(long, default_value = "1.5M", value_parser = parse_bitrate)]
    pub video_bitrate: u64,
    /// Keep-alive ping per participant (its round trip is reported).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,
    /// Churn (the soak): each participant, every this long on average (jittered ±50 %), either drops its socket
    /// and reconnects with the same JoinToken (expecting to resume, 2 times in 3) or leaves and joins again.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub churn: Option<Duration>,
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
    pub fn into_options(self) -> anyhow::Result<Options> {
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
        Ok(Options {
            url: self.url,
            api_key,
            meetings: self.meetings,
            participants_per_meeting: self.participants_per_meeting,
            rate: self.rate,
            duration: self.duration,
            media: self.media,
            media_threads: self.media_threads,
            video_bitrate_bps: self.video_bitrate,
            ping_interval: self.ping_interval,
            churn: self.churn,
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
    if let Some(k) = telehealth_gateway::config::api_keys_from_env().into_iter().next() {
        return Ok(k);
    }
    let path = telehealth_gateway::config::data_dir_from_env().join(telehealth_gateway::auth::API_KEY_FILE);
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

/// Runs the load test the flags describe and prints its table. A run with failures is a failed run for scripts
/// and CI, even though it produced a report.
pub async fn main(args: LoadtestArgs) -> anyhow::Result<()> {
    let report = run::run(args.into_options()?).await?;
    println!("{}", report.table());
    if report.error_count > 0 || report.participants.joined < report.participants.target {
        anyhow::bail!("the load test saw {} errors and {} failed joins", report.error_count, report.participants.failed);
    }
    Ok(())
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
        let args = LoadtestArgs::try_parse_from(["telehealth-loadtest", "--api-key", "-8Xk2", "--meetings", "3"]).unwrap();
        assert_eq!(args.api_key.as_deref(), Some("-8Xk2"));
        assert_eq!(args.meetings, 3);
    }
}
