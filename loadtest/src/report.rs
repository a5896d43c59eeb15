//! The run's result: one serde struct written as JSON, rendered as a table for the terminal.
//! Client-side figures come from the participants; server-side figures from `/metrics` scrapes taken
//! before, around the hold window, and after.

use crate::options::Options;
use crate::api::{ACTIONS, Api};
use crate::media::MediaSnapshot;
use crate::participant::Shared;
use crate::scrape::{self, Sample};
use crate::stats::LatencySummary;
use comfy_table::{Cell, Table, presets::UTF8_FULL_CONDENSED};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub provision_s: f64,
    pub ramp_s: f64,
    pub hold_s: f64,
    /// First join to the last participant gone.
    pub active_s: f64,
    pub total_s: f64,
}

impl Timing {
    pub fn new(provision: Duration, ramp: Duration, hold: Duration, active: Duration, total: Duration) -> Self {
        let s = |d: Duration| round(d.as_secs_f64(), 3);
        Self { provision_s: s(provision), ramp_s: s(ramp), hold_s: s(hold), active_s: s(active), total_s: s(total) }
    }
}

/// `/metrics` scrapes; the window is the hold (or, for an API-only run, the create phase).
pub struct ServerSamples {
    pub before: Option<Sample>,
    pub window_start: Option<Sample>,
    pub window_end: Option<Sample>,
    pub after: Option<Sample>,
    /// Once a second during the run, for peaks.
    pub during: Vec<Sample>,
}

/// Media counters at the start and end of the hold and once everyone has left.
pub struct MediaSnapshots {
    pub hold_start: MediaSnapshot,
    pub hold_end: MediaSnapshot,
    pub run_end: MediaSnapshot,
    /// Tracks that should have arrived: in each meeting, every joined participant × 2 per other participant.
    pub tracks_expected: u64,
}

pub struct Inputs<'a> {
    pub options: &'a Options,
    pub shared: &'a Shared,
    pub api: &'a Api,
    pub timing: Timing,
    pub media: Option<MediaSnapshots>,
    pub server: ServerSamples,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    pub url: String,
    pub meetings: usize,
    pub participants_per_meeting: usize,
    pub rate: f64,
    pub duration_s: f64,
    pub media: bool,
    pub video_bitrate_bps: u64,
    pub ping_interval_s: f64,
    pub api_only: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Participants {
    pub target: u64,
    pub joined: u64,
    pub failed: u64,
    pub peak_connected: i64,
    /// Churn (`--churn`): reconnects the server resumed, and leaves followed by a fresh join.
    pub resumed: u64,
    pub rejoined: u64,
    /// Joins completed per second of ramp.
    pub join_rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Signaling {
    pub messages_sent: u64,
    pub messages_received: u64,
    /// Both directions, over the time participants were active.
    pub messages_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiAction {
    pub count: u64,
    pub per_second: f64,
    pub latency_ms: LatencySummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct MediaReport {
    pub tracks_expected: u64,
    pub tracks_received: u64,
    pub tracks_published: u64,
    /// The rest is measured over the hold window.
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_expected: u64,
    pub packets_lost: u64,
    pub loss_ratio: f64,
    pub sent_bitrate_bps: f64,
    pub received_bitrate_bps: f64,
    /// Received bitrate per received track.
    pub received_bitrate_per_track_bps: f64,
    pub keyframe_requests_received: u64,
    /// Whole run (not just the hold): packets the publishers sent and the subscribers received.
    pub run_packets_sent: u64,
    pub run_packets_received: u64,
    /// Publisher's send time (inside the payload) to the subscriber's receive time, whole run.
    pub forwarding_delay_ms: LatencySummary,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerReport {
    pub participants_peak: Option<f64>,
    pub meetings_peak: Option<f64>,
    pub peer_connections_peak: Option<f64>,
    pub window_s: Option<f64>,
    pub cpu_seconds_window: Option<f64>,
    pub cpu_seconds_total: Option<f64>,
    /// CPU seconds per wall second in the window: how many cores the server kept busy.
    pub cpu_cores_window: Option<f64>,
    pub rss_before_bytes: Option<f64>,
    pub rss_window_end_bytes: Option<f64>,
    pub rss_peak_bytes: Option<f64>,
    /// (RSS at the end of the window − RSS before the run) / participants joined.
    pub memory_per_participant_bytes: Option<f64>,
    pub packets_received_window: Option<f64>,
    pub packets_forwarded_window: Option<f64>,
    pub packets_forwarded_total: Option<f64>,
    pub packets_forwarded_per_second: Option<f64>,
    /// Packets forwarded per second of server CPU time, i.e. per fully used core.
    pub packets_forwarded_per_cpu_second: Option<f64>,
    pub signaling_messages_total: Option<f64>,
    /// Server-side join handling (join frame in → joined out), mean over the run.
    pub join_duration_mean_ms: Option<f64>,
    /// The SFU's own forwarding delay over the window (kernel receive timestamp → copies handed to the kernel),
    /// from its histogram: what the server adds, without the load generator's own scheduling.
    pub forwarding_delay_p50_ms: Option<f64>,
    pub forwarding_delay_p99_ms: Option<f64>,
}

#[derive(Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub finished_at: String,
    pub config: RunConfig,
    pub timing: Timing,
    pub participants: Participants,
    /// WebSocket open → `joined`.
    pub join_latency_ms: LatencySummary,
    /// TCP connect + WebSocket upgrade.
    pub connect_latency_ms: LatencySummary,
    pub ping_rtt_ms: LatencySummary,
    pub signaling: Signaling,
    pub api: BTreeMap<String, ApiAction>,
    pub errors: BTreeMap<String, u64>,
    pub error_count: u64,
    pub media: Option<MediaReport>,
    pub server: Option<ServerReport>,
    #[serde(skip)]
    pictures: Vec<(&'static str, String, Histogram<u64>)>,
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

impl Report {
    pub fn build(inputs: Inputs<'_>) -> Self {
        let Inputs { options, shared, api, timing, media, server } = inputs;
        let joined = shared.joined.load(Ordering::Relaxed);
        let sent = shared.messages_sent.load(Ordering::Relaxed);
        let received = shared.messages_received.load(Ordering::Relaxed);
        let api_actions: BTreeMap<String, ApiAction> = ACTIONS
            .iter()
            .filter_map(|a| api.action(a).map(|s| (a, s)))
            .filter(|(_, s)| s.latency.count() > 0)
            .map(|(a, s)| {
                ((*a).to_owned(), ApiAction { count: s.latency.count(), per_second: round(s.per_second(), 1), latency_ms: s.latency.summary_ms() })
            })
            .collect();
        let errors = shared.errors();
        let mut pictures = Vec::new();
        if options.api_only {
            if let Some(s) = api.action("create-meeting") {
                pictures.push(("create-meeting-latency", "create-meeting latency".to_owned(), s.latency.histogram()));
            }
        } else {
            pictures.push(("join-latency", "join latency (ws open → joined)".to_owned(), shared.join_latency.histogram()));
        }
        Self {
            tool: "telehealth-gateway loadtest",
            version: env!("CARGO_PKG_VERSION"),
            finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            config: RunConfig {
                url: options.url.clone(),
                meetings: options.meetings,
                participants_per_meeting: options.participants_per_meeting,
                rate: options.rate,
                duration_s: options.duration.as_secs_f64(),
                media: options.media,
                video_bitrate_bps: options.video_bitrate_bps,
                ping_interval_s: options.ping_interval.as_secs_f64(),
                api_only: options.api_only,
            },
            participants: Participants {
                target: if options.api_only { 0 } else { (options.meetings * options.participants_per_meeting) as u64 },
                joined,
                failed: shared.failed.load(Ordering::Relaxed),
                peak_connected: shared.peak_connected.load(Ordering::Relaxed),
                resumed: shared.resumed.load(Ordering::Relaxed),
                rejoined: shared.rejoined.load(Ordering::Relaxed),
                join_rate: if timing.ramp_s > 0.0 { round(joined as f64 / timing.ramp_s, 1) } else { 0.0 },
            },
            join_latency_ms: shared.join_latency.summary_ms(),
            connect_latency_ms: shared.connect_latency.summary_ms(),
            ping_rtt_ms: shared.ping_rtt.summary_ms(),
            signaling: Signaling {
                messages_sent: sent,
                messages_received: received,
                messages_per_second: if timing.active_s > 0.0 { round((sent + received) as f64 / timing.active_s, 1) } else { 0.0 },
            },
            api: api_actions,
            error_count: errors.values().sum(),
            errors,
            media: media.map(|m| media_report(&m, timing.hold_s)),
            server: server_report(&server, joined),
            timing,
            pictures,
        }
    }

    /// Histograms to draw next to the JSON: (file suffix, title, values in microseconds).
    pub fn pictures(&self) -> &[(&'static str, String, Histogram<u64>)] {
        &self.pictures
    }

    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text + "\n")
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["", "value"]);
        let mut row = |k: &str, v: String| {
            t.add_row(vec![Cell::new(k), Cell::new(v)]);
        };
        let lat = |l: &LatencySummary, unit: &str| {
            format!("p50 {:.2} · p95 {:.2} · p99 {:.2} · max {:.2} {unit} (n={})", l.p50, l.p95, l.p99, l.max, l.count)
        };
        let c = &self.config;
        if c.api_only {
            row("run", format!("{} create-meeting calls against {}", c.meetings, c.url));
        } else {
            row(
                "run",
                format!(
                    "{} meetings × {} participants{} at {}/s, hold {}s, against {}",
                    c.meetings,
                    c.participants_per_meeting,
                    if c.media { format!(" with media ({} kbps video)", c.video_bitrate_bps / 1000) } else { String::new() },
                    c.rate,
                    c.duration_s,
                    c.url
                ),
            );
            let p = &self.participants;
            row("participants", format!("{} joined / {} target, {} failed, peak {} connected", p.joined, p.target, p.failed, p.peak_connected));
            if p.resumed + p.rejoined > 0 {
                row("churn", format!("{} reconnects resumed, {} leaves and fresh joins", p.resumed, p.rejoined));
            }
            row("join rate", format!("{:.1}/s over a {:.1} s ramp", p.join_rate, self.timing.ramp_s));
            row("join latency (ws open → joined)", lat(&self.join_latency_ms, "ms"));
            row("connect (TCP + upgrade)", lat(&self.connect_latency_ms, "ms"));
            row("ping RTT", lat(&self.ping_rtt_ms, "ms"));
            let s = &self.signaling;
            row("signaling messages", format!("{} sent, {} received, {:.1}/s", s.messages_sent, s.messages_received, s.messages_per_second));
        }
        for (action, a) in &self.api {
            row(&format!("api {action}"), format!("{} calls, {:.1}/s, {}", a.count, a.per_second, lat(&a.latency_ms, "ms")));
        }
        if self.errors.is_empty() {
            row("errors", "none".into());
        } else {
            for (kind, n) in &self.errors {
                row(&format!("error: {kind}"), n.to_string());
            }
        }
        if let Some(m) = &self.media {
            row("media tracks", format!("{} received / {} expected ({} published)", m.tracks_received, m.tracks_expected, m.tracks_published));
            row("media packets (hold)", format!("{} sent, {} received, {} lost ({:.3} %)", m.packets_sent, m.packets_received, m.packets_lost, m.loss_ratio * 100.0));
            row(
                "media bitrate (hold)",
                format!("sent {:.2} Mbps, received {:.2} Mbps, {:.0} kbps per track", m.sent_bitrate_bps / 1e6, m.received_bitrate_bps / 1e6, m.received_bitrate_per_track_bps / 1e3),
            );
            row("forwarding delay", lat(&m.forwarding_delay_ms, "ms"));
            row("keyframe requests received", m.keyframe_requests_received.to_string());
        }
        if let Some(s) = &self.server {
            let f = |v: Option<f64>, scale: f64, digits: usize, unit: &str| v.map_or("n/a".to_owned(), |v| format!("{:.*}{unit}", digits, v / scale));
            row("server participants (peak)", f(s.participants_peak, 1.0, 0, ""));
            row("server CPU (window)", format!("{} s = {} cores", f(s.cpu_seconds_window, 1.0, 2, ""), f(s.cpu_cores_window, 1.0, 2, "")));
            row("server RSS", format!("{} before, {} at window end, {} peak", f(s.rss_before_bytes, 1048576.0, 1, " MiB"), f(s.rss_window_end_bytes, 1048576.0, 1, " MiB"), f(s.rss_peak_bytes, 1048576.0, 1, " MiB")));
            row("server memory per participant", f(s.memory_per_participant_bytes, 1024.0, 1, " KiB"));
            if self.media.is_some() {
                row("server packets forwarded (window)", format!("{} ({}/s)", f(s.packets_forwarded_window, 1.0, 0, ""), f(s.packets_forwarded_per_second, 1.0, 0, "")));
                row("server packets forwarded per CPU-second", f(s.packets_forwarded_per_cpu_second, 1.0, 0, ""));
                row(
                    "server forwarding delay (window)",
                    format!("p50 {} · p99 {}", f(s.forwarding_delay_p50_ms, 1.0, 2, " ms"), f(s.forwarding_delay_p99_ms, 1.0, 2, " ms")),
                );
            }
            row("server join handling (mean)", f(s.join_duration_mean_ms, 1.0, 3, " ms"));
        }
        t.to_string()
    }
}

fn media_report(m: &MediaSnapshots, hold_s: f64) -> MediaReport {
    let (start, end, tracks_expected) = (&m.hold_start, &m.hold_end, m.tracks_expected);
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let packets_expected = d(start.packets_expected, end.packets_expected);
    let packets_lost = d(start.packets_lost, end.packets_lost);
    let per_s = |bytes: u64| if hold_s > 0.0 { bytes as f64 * 8.0 / hold_s } else { 0.0 };
    let received_bps = per_s(d(start.bytes_received, end.bytes_received));
    let delay = &m.run_end.forwarding_delay_us;
    let ms = |us: f64| round(us / 1000.0, 2);
    MediaReport {
        tracks_expected,
        tracks_received: end.tracks_received,
        tracks_published: end.tracks_published,
        packets_sent: d(start.packets_sent, end.packets_sent),
        packets_received: d(start.packets_received, end.packets_received),
        packets_expected,
        packets_lost,
        loss_ratio: if packets_expected > 0 { packets_lost as f64 / packets_expected as f64 } else { 0.0 },
        sent_bitrate_bps: round(per_s(d(start.bytes_sent, end.bytes_sent)), 0),
        received_bitrate_bps: round(received_bps, 0),
        received_bitrate_per_track_bps: if end.tracks_received > 0 { round(received_bps / end.tracks_received as f64, 0) } else { 0.0 },
        keyframe_requests_received: m.run_end.keyframe_requests_received,
        run_packets_sent: m.run_end.packets_sent,
        run_packets_received: m.run_end.packets_received,
        forwarding_delay_ms: LatencySummary { count: delay.count, p50: ms(delay.p50), p95: ms(delay.p95), p99: ms(delay.p99), max: ms(delay.max), mean: ms(delay.mean) },
    }
}

fn server_report(s: &ServerSamples, joined: u64) -> Option<ServerReport> {
    let before = s.before.as_ref()?;
    let peak = |name: &str| {
        s.during.iter().chain(s.window_end.iter()).filter_map(|x| x.get(name)).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    let window = s.window_start.as_ref().zip(s.window_end.as_ref());
    let window_s = window.map(|(a, b)| (b.at - a.at).as_secs_f64());
    let wdelta = |name: &str| window.and_then(|(a, b)| a.delta(b, name));
    let total = |name: &str| s.after.as_ref().and_then(|a| before.delta(a, name));
    let cpu_window = wdelta(scrape::CPU_SECONDS);
    let forwarded_window = wdelta(scrape::PACKETS_FORWARDED);
    let rss_end = s.window_end.as_ref().and_then(|x| x.get(scrape::RSS_BYTES));
    let rss_before = before.get(scrape::RSS_BYTES);
    let join_count = total(scrape::JOIN_DURATION_COUNT);
    let join_sum = total(scrape::JOIN_DURATION_SUM);
    Some(ServerReport {
        participants_peak: peak(scrape::PARTICIPANTS),
        meetings_peak: peak(scrape::MEETINGS),
        peer_connections_peak: peak(scrape::PEER_CONNECTIONS),
        window_s: window_s.map(|w| round(w, 3)),
        cpu_seconds_window: cpu_window.map(|v| round(v, 2)),
        cpu_seconds_total: total(scrape::CPU_SECONDS).map(|v| round(v, 2)),
        cpu_cores_window: cpu_window.zip(window_s).filter(|(_, w)| *w > 0.0).map(|(c, w)| round(c / w, 3)),
        rss_before_bytes: rss_before,
        rss_window_end_bytes: rss_end,
        rss_peak_bytes: peak(scrape::RSS_BYTES),
        memory_per_participant_bytes: rss_end.zip(rss_before).filter(|_| joined > 0).map(|(e, b)| round((e - b) / joined as f64, 0)),
        packets_received_window: wdelta(scrape::PACKETS_RECEIVED),
        packets_forwarded_window: forwarded_window,
        packets_forwarded_total: total(scrape::PACKETS_FORWARDED),
        packets_forwarded_per_second: forwarded_window.zip(window_s).filter(|(_, w)| *w > 0.0).map(|(p, w)| round(p / w, 0)),
        packets_forwarded_per_cpu_second: forwarded_window.zip(cpu_window).filter(|(_, c)| *c > 0.0).map(|(p, c)| round(p / c, 0)),
        signaling_messages_total: total(scrape::SIGNALING_MESSAGES),
        join_duration_mean_ms: join_sum.zip(join_count).filter(|(_, n)| *n > 0.0).map(|(s, n)| round(s / n * 1000.0, 3)),
        forwarding_delay_p50_ms: window.and_then(|(a, b)| a.quantile_between(b, scrape::FORWARDING_DELAY, 0.5)).map(|v| round(v * 1000.0, 3)),
        forwarding_delay_p99_ms: window.and_then(|(a, b)| a.quantile_between(b, scrape::FORWARDING_DELAY, 0.99)).map(|v| round(v * 1000.0, 3)),
    })
}
