//! The media plane's forwarding cost, with no browser and no kernel network: the SFU and its client peers
//! exchange datagrams over the in-memory network (`sfu::memnet`), with real ICE, DTLS and SRTP. Rooms of
//! `--size` participants (fan-out = size - 1) each publish Opus (50 packets/s) and VP8 (30 frames/s at
//! `--video-kbps`); every receiver checks sequence continuity and every payload's integrity.
//!
//! The SFU runs on its own runtime threads, the clients on one thread of their own, so the SFU's CPU time is the
//! process's minus the clients' (and this thread's). Reported: forwarded packets per SFU CPU-second and the CPU
//! time per forwarded packet.
//!
//!   cargo bench -p telehealth-loadtest --bench forwarding -- --rooms 6 --size 6 --video-kbps 1500

use anyhow::{Context, bail};
use clap::Parser;
use loadtest::cpu;
use loadtest::memdriver::{self, Progress};
use loadtest::peer::{MediaOptions, PeerStats};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use telehealth_gateway::ids::{AttendeeId, MeetingId};
use telehealth_gateway::room::Rooms;
use telehealth_gateway::sfu::memnet::MemNet;
use telehealth_gateway::sfu::{Sfu, SfuConfig};

/// The gateway binary's allocator, so the SFU is measured as it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    /// Rooms (meetings) running at once.
    #[arg(long, default_value_t = 6)]
    rooms: usize,
    /// Participants per room; each receives the other size - 1.
    #[arg(long, default_value_t = 6)]
    size: usize,
    #[arg(long, default_value_t = 1500)]
    video_kbps: u64,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Seconds of steady forwarding measured, after the warm-up.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Worker threads of the control runtime (room actors).
    #[arg(long, default_value_t = 1)]
    sfu_threads: usize,
    /// Media shards.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// A label for the output line.
    #[arg(long, default_value = "run")]
    label: String,
    // `cargo bench` passes `--bench`; accept and ignore it.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    if args.size < 2 || args.rooms == 0 {
        bail!("--size must be at least 2 and --rooms at least 1");
    }
    let net = MemNet::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.sfu_threads)
        .thread_name("sfu")
        .enable_all()
        .build()?;
    let sfu = Sfu::new(SfuConfig {
        bind_ips: vec!["127.0.0.1".parse()?],
        memnet: Some(Arc::clone(&net)),
        shards: Some(args.shards),
        ..Default::default()
    })?;
    let rooms = Rooms::new(Arc::clone(&sfu));
    let expect = 2 * (args.size - 1);
    let sessions = rt.block_on(async {
        let mut sessions = Vec::new();
        for _ in 0..args.rooms {
            let meeting = MeetingId::new();
            for p in 0..args.size {
                let session = rooms.join(meeting, AttendeeId::new(), format!("p{p}"), false, false)?;
                sessions.push((session, expect));
            }
        }
        anyhow::Ok(sessions)
    })?;
    let participants = sessions.len();
    let progress = Progress::new();
    let options = MediaOptions { video_bitrate_bps: args.video_kbps * 1000, video_fps: args.fps };
    let driver = std::thread::Builder::new().name("clients".into()).spawn({
        let (net, progress) = (Arc::clone(&net), Arc::clone(&progress));
        let first: SocketAddr = "127.0.0.2:20000".parse()?;
        move || memdriver::run(net, sessions, first, options, progress)
    })?;

    let setup = Instant::now();
    while progress.ready.load(Ordering::Relaxed) < participants {
        if setup.elapsed() > Duration::from_secs(60) || driver.is_finished() {
            progress.stop.store(true, Ordering::Relaxed);
            let ready = progress.ready.load(Ordering::Relaxed);
            let connected = progress.connected.load(Ordering::Relaxed);
            eprintln!("connected {connected}, memnet delivered {} dropped {}", net.delivered(), net.dropped());
            let err = driver.join().map_err(|_| anyhow::anyhow!("client thread panicked"))?.err();
            bail!("only {ready} of {participants} peers connected and receiving within 60 s ({err:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect = setup.elapsed();
    std::thread::sleep(Duration::from_secs(args.warmup));

    let client_tid = progress.tid.load(Ordering::Relaxed);
    let main_tid = cpu::current_tid();
    let sample = || (Instant::now(), cpu::process(), cpu::thread(client_tid), cpu::thread(main_tid), sfu.stats.snapshot());
    let (t0, p0, c0, m0, s0) = sample();
    std::thread::sleep(Duration::from_secs(args.seconds));
    let (t1, p1, c1, m1, s1) = sample();

    progress.stop.store(true, Ordering::Relaxed);
    let stats = driver
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?
        .context("client thread")?
        .iter()
        .fold(PeerStats::default(), |mut total, s| {
            total.add(s);
            total
        });
    rt.shutdown_timeout(Duration::from_secs(2));

    let wall = (t1 - t0).as_secs_f64();
    let sfu_cpu = ((p1 - p0).saturating_sub(c1 - c0).saturating_sub(m1 - m0)).as_secs_f64();
    let forwarded = s1.packets_out - s0.packets_out;
    let per_cpu_s = forwarded as f64 / sfu_cpu;
    let mut delays = stats.delays_us.clone();
    delays.sort_unstable();
    let pct = |q: f64| delays.get(((delays.len() as f64 * q) as usize).min(delays.len().saturating_sub(1))).copied().unwrap_or(0);
    let loss = stats.packets_lost as f64 / (stats.packets_expected.max(1)) as f64;
    println!(
        "forwarding-mem {label}: {rooms} rooms x {size} (fan-out {fanout}), video {kbps} kbps @ {fps} fps; \
         connected in {connect:.2?}\n  \
         forwarded {fwd_s:.0}/s; SFU CPU {cores:.3} cores; {per:.0} forwarded per SFU CPU-second = {us:.2} µs each\n  \
         clients CPU {ccores:.3} cores; received {rcv} (lost {lost}, late {late}, corrupt {corrupt}, foreign {foreign}); \
         loss {loss:.4} %; delay p50 {p50:.2} ms, p99 {p99:.2} ms; memnet dropped {dropped}; write errors {werr}",
        label = args.label,
        rooms = args.rooms,
        size = args.size,
        fanout = args.size - 1,
        kbps = args.video_kbps,
        fps = args.fps,
        fwd_s = forwarded as f64 / wall,
        cores = sfu_cpu / wall,
        per = per_cpu_s,
        us = 1e6 / per_cpu_s,
        ccores = (c1 - c0).as_secs_f64() / wall,
        rcv = stats.packets_received,
        lost = stats.packets_lost,
        late = stats.packets_late,
        corrupt = stats.packets_corrupt,
        foreign = stats.packets_foreign,
        loss = loss * 100.0,
        p50 = f64::from(pct(0.50)) / 1000.0,
        p99 = f64::from(pct(0.99)) / 1000.0,
        dropped = net.dropped(),
        werr = stats.write_errors,
    );
    println!(
        "RESULT {{\"label\":\"{}\",\"rooms\":{},\"size\":{},\"video_kbps\":{},\"forwarded_per_s\":{:.0},\"sfu_cores\":{:.4},\"per_cpu_second\":{:.0},\"us_per_packet\":{:.3},\"loss_pct\":{:.4},\"corrupt\":{},\"delay_p50_ms\":{:.3},\"delay_p99_ms\":{:.3}}}",
        args.label, args.rooms, args.size, args.video_kbps, forwarded as f64 / wall, sfu_cpu / wall, per_cpu_s,
        1e6 / per_cpu_s, loss * 100.0, stats.packets_corrupt, f64::from(pct(0.5)) / 1000.0, f64::from(pct(0.99)) / 1000.0
    );
    if stats.packets_corrupt > 0 {
        bail!("{} payloads arrived corrupted", stats.packets_corrupt);
    }
    Ok(())
}
