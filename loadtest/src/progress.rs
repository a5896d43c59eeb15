//! What the operator sees while a run is going: a progress bar with connected participants, join rate and
//! errors. The same ticker samples the server's `/metrics` once a second, for the report's peaks.

use crate::media::MediaStats;
use crate::participant::Shared;
use crate::scrape::{self, Sample};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// Hidden unless `enabled` (and indicatif hides it anyway when stderr is not a terminal).
    pub fn new(enabled: bool, total: u64) -> Self {
        let bar = if enabled { ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()) } else { ProgressBar::hidden() };
        let style = ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {prefix} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix("starting");
        Self { bar }
    }

    pub fn set_phase(&self, phase: &str) {
        self.bar.set_prefix(phase.to_owned());
    }

    pub fn inc(&self) {
        self.bar.inc(1);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Refreshes the bar every 250 ms and samples `/metrics` every second until `Ticker::finish`.
    pub fn spawn_ticker(&self, shared: Arc<Shared>, media: Option<Arc<MediaStats>>, http: reqwest::Client, url: String) -> Ticker {
        let bar = self.bar.clone();
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut refresh = tokio::time::interval(Duration::from_millis(250));
            let mut last_scrape: Option<Instant> = None;
            let started = Instant::now();
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = refresh.tick() => {}
                }
                let joined = shared.joined.load(Ordering::Relaxed);
                bar.set_position(shared.settled.load(Ordering::Relaxed));
                let rate = joined as f64 / started.elapsed().as_secs_f64().max(0.001);
                let mut msg = format!(
                    "| connected {} | {:.0} joins/s | errors {}",
                    shared.connected.load(Ordering::Relaxed),
                    rate,
                    shared.error_total()
                );
                if let Some(m) = &media {
                    let s = m.snapshot();
                    msg.push_str(&format!(" | tracks {} | pkts rx {}", s.tracks_received, s.packets_received));
                }
                bar.set_message(msg);
                if last_scrape.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    last_scrape = Some(Instant::now());
                    if let Some(s) = scrape::scrape(&http, &url).await {
                        samples.push(s);
                    }
                }
            }
            samples
        });
        Ticker { stop: Some(stop_tx), task }
    }
}

pub struct Ticker {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Ticker {
    /// Stops the ticker and returns the `/metrics` samples it took.
    pub async fn finish(mut self) -> Vec<Sample> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap_or_default()
    }
}
