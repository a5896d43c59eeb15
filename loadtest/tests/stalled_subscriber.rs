//! A subscriber that stalls (stops reading and sending, as a frozen browser) must not slow the others on its
//! shard: the shard keeps no queue per subscriber, so the other two participants of the visit go on receiving
//! each other with no loss and no added delay while the stalled one's packets are simply lost on its path.
//! Real ICE, DTLS and SRTP over the in-memory network, one shard.

use loadtest::memdriver::{self, Progress};
use loadtest::peer::{MediaOptions, PeerStats};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use telehealth_gateway::ids::{AttendeeId, MeetingId};
use telehealth_gateway::room::Rooms;
use telehealth_gateway::sfu::memnet::MemNet;
use telehealth_gateway::sfu::{Sfu, SfuConfig};

fn p99_ms(s: &PeerStats) -> f64 {
    let mut d = s.delays_us.clone();
    d.sort_unstable();
    d.get(d.len() * 99 / 100).map_or(f64::INFINITY, |us| f64::from(*us) / 1000.0)
}

#[test]
fn a_stalled_subscriber_does_not_slow_the_others_in_its_shard() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let net = MemNet::new();
    let sfu = Sfu::new(SfuConfig {
        bind_ips: vec!["127.0.0.1".parse().unwrap()],
        memnet: Some(Arc::clone(&net)),
        shards: Some(1),
        ..Default::default()
    })
    .unwrap();
    let rooms = Rooms::new(Arc::clone(&sfu));
    let meeting = MeetingId::new();
    let sessions = rt.block_on(async {
        (0..3).map(|i| (rooms.join(meeting, AttendeeId::new(), format!("p{i}"), false, false).unwrap(), 4)).collect()
    });
    let progress = Progress::new();
    let options = MediaOptions { video_bitrate_bps: 1_000_000, video_fps: 30 };
    let driver = std::thread::spawn({
        let (net, progress) = (Arc::clone(&net), Arc::clone(&progress));
        move || memdriver::run(net, sessions, "127.0.0.2:21000".parse().unwrap(), options, progress)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.ready.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "the three peers did not connect and receive each other in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Two seconds of normal forwarding, then two with participant 1 stalled.
    progress.reset.fetch_add(1, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    let out_before = sfu.stats.snapshot().packets_out;
    progress.stalled.store(1, Ordering::Relaxed);
    progress.reset.fetch_add(1, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    let out_during = sfu.stats.snapshot().packets_out - out_before;
    progress.stop.store(true, Ordering::Relaxed);
    let stats = driver.join().unwrap().unwrap();

    for i in [0, 2] {
        let s = &stats[i];
        // 2 s of the other active participant's audio (50/s) and video (~150/s): far more than 300 packets.
        assert!(s.packets_received > 300, "participant {i} received {} packets while 1 was stalled", s.packets_received);
        assert_eq!((s.packets_lost, s.packets_corrupt), (0, 0), "participant {i}: {s:?}");
        assert!(p99_ms(s) < 50.0, "participant {i}: delay p99 {} ms while 1 was stalled", p99_ms(s));
    }
    assert_eq!(stats[1].packets_received, 0, "the stalled participant read nothing");
    // The SFU went on forwarding to the stalled participant too (it cannot know; its packets are lost on the way),
    // and no queue built up for it: nothing waits.
    assert!(out_during > 600, "forwarded {out_during} packets in the stalled window");
    drop(rooms);
    rt.shutdown_timeout(Duration::from_secs(2));
}
