//! A load-test run, as `telehealth-loadtest` runs it.
//!
//! It drives a running gateway the way real clients do: meetings and attendees through the JSON API, joins
//! over the real signaling WebSocket (the `signaling` crate's client), and with `--media` real peer connections
//! (webrtc-rs's sans-IO core, over UDP) that publish synthetic Opus + VP8 and subscribe to everyone else. Around the run it scrapes the
//! server's `/metrics`, so the report carries the server's cost (CPU seconds, memory per participant) next to
//! what the clients saw.
//!
//! Phases: provision (API: every meeting and attendee), ramp (joins paced at `rate`), hold (`duration`, once
//! every participant has joined or failed), leave, and delete the meetings.

pub use crate::options::Options;
use crate::api::{self, Api};
use crate::media::{MediaEngine, MediaOptions, MediaStats};
use crate::peer::MediaOptions as PeerOptions;
use crate::participant::{self, Behaviour, MeetingSlot, Shared, Ticket};
use crate::report::{self, Report};
use crate::{plot, progress, scrape};
use anyhow::Context;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Runs the load test and returns its report (also written to `json` when set).
pub async fn run(options: Options) -> anyhow::Result<Report> {
    options.validate()?;
    let api = Arc::new(Api::new(&options.url, &options.api_key, options.insecure)?);
    let before = scrape::scrape(api.http(), &options.url).await;
    let report = if options.api_only { run_api_only(&options, &api, before).await? } else { run_participants(&options, &api, before).await? };
    if let Some(path) = &options.json {
        report.write_json(path).with_context(|| format!("writing {}", path.display()))?;
        for (suffix, title, histogram) in report.pictures() {
            let svg = plot::sibling(path, suffix);
            plot::write_histogram_svg(&svg, title, histogram).with_context(|| format!("writing {}", svg.display()))?;
        }
    }
    Ok(report)
}

/// A run id in every ExternalMeetingId, so a run's meetings are recognisable (and never collide with a clinic's).
fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

async fn run_participants(options: &Options, api: &Arc<Api>, before: Option<scrape::Sample>) -> anyhow::Result<Report> {
    let total = options.total_participants();
    let shared = Arc::new(Shared::default());
    let media = match options.media {
        true => {
            let media = MediaOptions {
                peer: PeerOptions { video_bitrate_bps: options.video_bitrate_bps, video_fps: 30 },
                bind_ips: options.rtc_bind_ips.clone(),
                threads: options.media_threads,
            };
            Some(MediaEngine::start(media, Arc::new(MediaStats::default()))?)
        }
        false => None,
    };
    let media_stats = media.as_ref().map(|m| Arc::clone(m.stats()));
    let behaviour = Arc::new(Behaviour {
        ws_url: options.ws_url(),
        tls: options.insecure.then(signaling::tls::accept_any_certificate),
        ping_interval: options.ping_interval,
        churn: options.churn,
        media,
    });
    let progress = progress::Progress::new(options.progress, total as u64);
    let started = Instant::now();

    // Provision every meeting and attendee first, a bounded number of calls in flight, so the ramp that
    // follows measures joins alone and runs at exactly the asked-for rate.
    progress.set_phase("provisioning");
    let mut tickets: Vec<Ticket> = Vec::with_capacity(total);
    let mut meeting_ids: Vec<String> = Vec::with_capacity(options.meetings);
    let mut slots: Vec<Arc<MeetingSlot>> = Vec::with_capacity(options.meetings);
    let run = run_id();
    let mut calls = futures::stream::iter(0..options.meetings)
        .map(|i| provision(api, &run, i, options.participants_per_meeting))
        .buffered(options.api_concurrency);
    while let Some(result) = calls.next().await {
        match result {
            Ok((meeting_id, tokens)) => {
                meeting_ids.push(meeting_id);
                let slot = Arc::new(MeetingSlot::default());
                slots.push(Arc::clone(&slot));
                for join_token in tokens {
                    progress.inc();
                    tickets.push(Ticket { meeting: Arc::clone(&slot), join_token });
                }
            }
            Err((meeting_id, failure)) => {
                meeting_ids.extend(meeting_id);
                shared.error(failure.kind());
                // Its participants will never join: they count as failed.
                let n = options.participants_per_meeting as u64;
                shared.failed.fetch_add(n, Ordering::Relaxed);
                shared.settled.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
    drop(calls);
    let provisioned = started.elapsed();

    // Pace joins at `rate` (a schedule, not a sleep per join, so timer slack does not lower the rate).
    progress.set_phase("joining");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut participants = Vec::with_capacity(total);
    let period = Duration::from_secs_f64(1.0 / options.rate);
    let ramp_started = Instant::now();
    let mut next = tokio::time::Instant::now();
    let ticker = progress.spawn_ticker(Arc::clone(&shared), media_stats.clone(), api.http().clone(), options.url.clone());
    // Ctrl-C ends the ramp or the hold early; everyone still leaves and every meeting is still deleted.
    let interrupt = Interrupt::watch();
    for ticket in tickets {
        if interrupt.is_set() {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.settled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        tokio::time::sleep_until(next).await;
        next += period;
        participants.push(tokio::spawn(participant::run(Arc::clone(&shared), Arc::clone(&behaviour), ticket, stop_rx.clone())));
    }
    // Every participant has joined or failed (or a generous timeout passed).
    let settle_deadline = Instant::now() + Duration::from_secs(60);
    while shared.settled.load(Ordering::Relaxed) < total as u64 && Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // With media, the hold measures steady state: it starts once every subscriber has opened the tracks it
    // expects (a renegotiation still in flight would count packets the server forwards but no track reads yet).
    if let Some(stats) = &media_stats {
        let expected = expected_tracks(&slots);
        let media_deadline = Instant::now() + Duration::from_secs(30);
        while stats.snapshot().tracks_received < expected && Instant::now() < media_deadline && !interrupt.is_set() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let ramp = ramp_started.elapsed();

    // Hold.
    progress.set_phase("holding");
    let hold_start = scrape::scrape(api.http(), &options.url).await;
    let media_start = media_stats.as_ref().map(|s| s.snapshot());
    let hold_started = Instant::now();
    // Nobody to hold (every join failed, e.g. a wrong key): go straight to the report.
    if shared.joined.load(Ordering::Relaxed) > 0 {
        tokio::select! {
            _ = tokio::time::sleep(options.duration) => {}
            _ = interrupt.wait() => {}
        }
    }
    let hold = hold_started.elapsed();
    let media_end = media_stats.as_ref().map(|s| s.snapshot());
    let hold_end = scrape::scrape(api.http(), &options.url).await;

    // Leave, then clean up.
    progress.set_phase("leaving");
    let _ = stop_tx.send(true);
    for p in participants {
        let _ = p.await;
    }
    let active = ramp_started.elapsed();
    let media_final = media_stats.as_ref().map(|s| s.snapshot());
    progress.set_phase("deleting meetings");
    delete_meetings(api, meeting_ids, options.api_concurrency, &shared).await;
    let server_samples = ticker.finish().await;
    progress.finish();
    let after = scrape::scrape(api.http(), &options.url).await;

    let tracks_expected = expected_tracks(&slots);
    if interrupt.is_set() {
        shared.error("interrupted (Ctrl-C)");
    }
    Ok(Report::build(report::Inputs {
        options,
        shared: &shared,
        api,
        timing: report::Timing::new(provisioned, ramp, hold, active, started.elapsed()),
        media: match (media_start, media_end, media_final) {
            (Some(hold_start), Some(hold_end), Some(run_end)) => Some(report::MediaSnapshots { hold_start, hold_end, run_end, tracks_expected }),
            _ => None,
        },
        server: report::ServerSamples { before, window_start: hold_start, window_end: hold_end, after, during: server_samples },
    }))
}

/// Remote tracks the joined participants should open: each receives the audio and video of every other one.
fn expected_tracks(slots: &[Arc<MeetingSlot>]) -> u64 {
    slots.iter().map(|s| { let j = s.joined.load(Ordering::Relaxed); j * j.saturating_sub(1) * 2 }).sum()
}

/// Set once on Ctrl-C.
#[derive(Clone)]
struct Interrupt(watch::Receiver<bool>);

impl Interrupt {
    fn watch() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = tx.send(true);
                eprintln!("\ninterrupted: leaving and deleting the run's meetings (Ctrl-C again to quit at once)");
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        Self(rx)
    }

    fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|set| *set).await;
    }
}

/// Deletes the run's meetings, `concurrency` calls in flight; failures are counted by kind.
async fn delete_meetings(api: &Arc<Api>, ids: Vec<String>, concurrency: usize, shared: &Shared) {
    let mut deletes = futures::stream::iter(ids)
        .map(|id| {
            let api = Arc::clone(api);
            async move { api.delete_meeting(&id).await }
        })
        .buffer_unordered(concurrency);
    while let Some(result) = deletes.next().await {
        if let Err(failure) = result {
            shared.error(failure.kind());
        }
    }
}

type ProvisionError = (Option<String>, api::ApiFailure);

/// Creates one meeting and its attendees; returns the join tokens.
async fn provision(api: &Api, run: &str, index: usize, per_meeting: usize) -> Result<(String, Vec<String>), ProvisionError> {
    let meeting_id = api.create_meeting(&format!("loadtest-{run}-{index}")).await.map_err(|e| (None, e))?;
    let mut tokens = Vec::with_capacity(per_meeting);
    for n in 0..per_meeting {
        // Synthetic names only: a load test never carries patient data.
        match api.create_attendee(&meeting_id, &format!("Load tester {n}")).await {
            Ok(a) => tokens.push(a.join_token),
            Err(e) => return Err((Some(meeting_id), e)),
        }
    }
    Ok((meeting_id, tokens))
}

/// The API throughput benchmark: `meetings` create-meeting calls, `api_concurrency` in flight (paced at
/// `rate` per second at most), then the same number of deletes.
async fn run_api_only(options: &Options, api: &Arc<Api>, before: Option<scrape::Sample>) -> anyhow::Result<Report> {
    let shared = Arc::new(Shared::default());
    let progress = progress::Progress::new(options.progress, options.meetings as u64);
    progress.set_phase("create-meeting");
    let run = run_id();
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / options.rate);
    let mut created = Vec::with_capacity(options.meetings);
    let mut calls = futures::stream::iter(0..options.meetings)
        .map(|i| {
            let (api, run) = (Arc::clone(api), run.clone());
            async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(started) + period.mul_f64(i as f64)).await;
                api.create_meeting(&format!("loadtest-{run}-{i}")).await
            }
        })
        .buffer_unordered(options.api_concurrency);
    while let Some(result) = calls.next().await {
        progress.inc();
        match result {
            Ok(id) => created.push(id),
            Err(failure) => shared.error(failure.kind()),
        }
    }
    let create_time = started.elapsed();
    let mid = scrape::scrape(api.http(), &options.url).await;
    progress.set_phase("delete-meeting");
    delete_meetings(api, created, options.api_concurrency, &shared).await;
    progress.finish();
    let after = scrape::scrape(api.http(), &options.url).await;
    let total = started.elapsed();
    Ok(Report::build(report::Inputs {
        options,
        shared: &shared,
        api,
        timing: report::Timing::new(create_time, Duration::ZERO, Duration::ZERO, create_time, total),
        media: None,
        server: report::ServerSamples { window_start: before.clone(), before, window_end: mid, after, during: Vec::new() },
    }))
}
