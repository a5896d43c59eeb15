//! What a run is asked to do; the CLI fills it from flags, the run and its report read it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a run needs; the CLI fills it from flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of the gateway, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub api_key: String,
    pub meetings: usize,
    pub participants_per_meeting: usize,
    /// Joins per second.
    pub rate: f64,
    /// How long everyone stays once the ramp is over.
    pub duration: Duration,
    /// Publish and subscribe synthetic media through real peer connections.
    pub media: bool,
    /// Threads driving the media peers.
    pub media_threads: usize,
    pub video_bitrate_bps: u64,
    pub ping_interval: Duration,
    /// Reconnect or rejoin every this long on average (`--churn`).
    pub churn: Option<Duration>,
    /// API calls in flight while provisioning (and in `api_only` runs).
    pub api_concurrency: usize,
    /// Local addresses the media peers gather ICE candidates on.
    pub rtc_bind_ips: Vec<IpAddr>,
    /// Accept the gateway's self-signed development certificate.
    pub insecure: bool,
    /// Only exercise `create-meeting` (and clean up): the API throughput benchmark.
    pub api_only: bool,
    pub progress: bool,
    pub json: Option<PathBuf>,
}

impl Options {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.url.starts_with("http://") || self.url.starts_with("https://"), "--url must be http:// or https://");
        anyhow::ensure!(self.meetings >= 1, "--meetings must be at least 1");
        anyhow::ensure!(
            (1..=telehealth_gateway::room::MAX_PARTICIPANTS).contains(&self.participants_per_meeting),
            "--participants-per-meeting must be 1–{}",
            telehealth_gateway::room::MAX_PARTICIPANTS
        );
        anyhow::ensure!(self.rate.is_finite() && self.rate > 0.0, "--rate must be a positive number of joins per second");
        anyhow::ensure!(self.media_threads >= 1, "--media-threads must be at least 1");
        anyhow::ensure!(self.api_concurrency >= 1, "--api-concurrency must be at least 1");
        anyhow::ensure!(!self.api_key.is_empty(), "an API key is needed (--api-key or TELEHEALTH_API_KEY)");
        anyhow::ensure!(!self.ping_interval.is_zero(), "--ping-interval must be positive");
        Ok(())
    }

    pub(crate) fn total_participants(&self) -> usize {
        self.meetings * self.participants_per_meeting
    }

    pub(crate) fn ws_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        let base = base.strip_prefix("https://").map(|r| format!("wss://{r}")).unwrap_or_else(|| base.replacen("http://", "ws://", 1));
        format!("{base}/ws")
    }
}
