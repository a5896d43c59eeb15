//! The load tester's media side against the real server: two participants, each a `MediaSession` on a media
//! driver thread publishing synthetic Opus + VP8 over UDP through the SFU, must receive each other's tracks with
//! the counts, loss and forwarding delay a loopback link gives, and the server's own counters must agree.

// The gateway's own test server and signaling helpers.
#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/support/ws.rs"]
mod ws;

use common::{TestServer, meeting_id};
use loadtest::media::{MediaEngine, MediaOptions, MediaSnapshot, MediaStats};
use loadtest::peer;
use reqwest::StatusCode;
use signaling::{ClientMessage, ServerMessage, SignalingClient};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use ws::{bridge, next};

const T: Duration = Duration::from_secs(5);

fn loopback(video_bitrate_bps: u64) -> MediaOptions {
    MediaOptions { peer: peer::MediaOptions { video_bitrate_bps, video_fps: 30 }, ..MediaOptions::default() }
}

async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// A participant as the load tester drives one: a joined signaling socket whose media messages go to a
/// `MediaSession`. Its own stats, so the test can check each side.
struct Participant {
    stats: Arc<MediaStats>,
    /// The signaling socket's sending side, for messages of the test's own.
    signal: mpsc::UnboundedSender<ClientMessage>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: oneshot::Sender<()>,
    driver: JoinHandle<()>,
}

impl Participant {
    async fn join(url: &str, token: &str, options: &MediaOptions) -> Self {
        let mut client = SignalingClient::connect(url).await.expect("websocket connects");
        client.send(&ClientMessage::Join { token: token.into(), audio_muted: false, video_muted: false }).await.unwrap();
        let first = next(&mut client, T).await;
        assert!(matches!(first, ServerMessage::Joined { .. }), "{first:?}");
        let (out, mut incoming) = bridge(client);
        let engine = MediaEngine::start(options.clone(), Arc::new(MediaStats::default())).expect("media threads start");
        let stats = Arc::clone(engine.stats());
        let signal = out.clone();
        let session = engine.session(out).expect("media session starts");
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = oneshot::channel();
        let errs = Arc::clone(&errors);
        let driver = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    msg = incoming.recv() => match msg {
                        Some(msg) => if let Err(e) = session.handle(&msg).await {
                            errs.lock().unwrap().push(format!("{e:#}"));
                        },
                        None => break,
                    },
                }
            }
            session.close().await;
            drop(engine);
        });
        Self { stats, signal, errors, stop, driver }
    }

    async fn leave(self) -> (MediaSnapshot, Vec<String>) {
        let _ = self.stop.send(());
        tokio::time::timeout(T, self.driver).await.expect("session closes in time").expect("driver task");
        let errors = self.errors.lock().unwrap().clone();
        (self.stats.snapshot(), errors)
    }
}

async fn two_participants(server: &TestServer, options: &MediaOptions) -> [Participant; 2] {
    let meeting = server.create_meeting().await;
    let id = meeting_id(&meeting);
    let url = meeting["meeting"]["MediaPlacement"]["SignalingUrl"].as_str().unwrap().to_owned();
    let mut tokens = Vec::new();
    for name in ["Load Tester A", "Load Tester B"] {
        let (status, body) = server.create_attendee(&id, name).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        tokens.push(body["attendee"]["JoinToken"].as_str().unwrap().to_owned());
    }
    [Participant::join(&url, &tokens[0], options).await, Participant::join(&url, &tokens[1], options).await]
}

fn ratio(part: u64, whole: u64) -> f64 {
    part as f64 / whole.max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_media_sessions_receive_each_other_through_the_server_with_low_loss_and_delay() {
    let server = TestServer::start().await;
    let sfu = server.state.rooms.sfu().clone();
    let [a, b] = two_participants(&server, &loopback(500_000)).await;

    // Both connected, both see both of the other's tracks, and packets flow both ways.
    let up = eventually(Duration::from_secs(15), || {
        [&a, &b].iter().all(|p| {
            let s = p.stats.snapshot();
            s.peer_connections_connected == 1 && s.tracks_received == 2 && s.packets_received > 50
        })
    })
    .await;
    assert!(up, "media did not come up: A {:?}\nB {:?}\nserver {:?}", a.stats.snapshot(), b.stats.snapshot(), sfu.stats.snapshot());

    // A measurement window on a steady flow: what one side sends, the other receives, and the server
    // agrees it forwarded that much. (Receivers publish every 100 ms and a few packets are in flight at
    // either edge, hence the tolerances.)
    let (a0, b0, sfu0) = (a.stats.snapshot(), b.stats.snapshot(), sfu.stats.snapshot());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (a1, b1, sfu1) = (a.stats.snapshot(), b.stats.snapshot(), sfu.stats.snapshot());
    let sent_by_a = a1.packets_sent - a0.packets_sent;
    let sent_by_b = b1.packets_sent - b0.packets_sent;
    let got_by_a = a1.packets_received - a0.packets_received;
    let got_by_b = b1.packets_received - b0.packets_received;
    let forwarded = sfu1.packets_out - sfu0.packets_out;
    eprintln!("window: A sent {sent_by_a} got {got_by_a}; B sent {sent_by_b} got {got_by_b}; server forwarded {forwarded}");
    // 500 kbps at 30 fps is ~2,083 bytes a frame (2 packets), so ~60 video + 50 audio packets/s each.
    for (who, sent) in [("A", sent_by_a), ("B", sent_by_b)] {
        assert!((250..=400).contains(&sent), "{who} sent {sent} packets in 3 s, expected ~330");
    }
    for (who, sent, got) in [("B from A", sent_by_a, got_by_b), ("A from B", sent_by_b, got_by_a)] {
        let r = ratio(got, sent);
        assert!((0.8..=1.1).contains(&r), "{who}: received {got} of {sent} sent in the window ({r:.2})");
    }
    let received = got_by_a + got_by_b;
    let r = ratio(received, forwarded);
    assert!((0.85..=1.1).contains(&r), "clients received {received}, server forwarded {forwarded} ({r:.2})");

    // Each viewer asks for a keyframe, as a browser's decoder would; the SFU relays it to the other publisher.
    for p in [&a, &b] {
        p.signal.send(ClientMessage::RequestKeyframe).unwrap();
    }
    let relayed = eventually(T, || a.stats.snapshot().keyframe_requests_received >= 1 && b.stats.snapshot().keyframe_requests_received >= 1).await;
    assert!(relayed, "keyframe requests did not reach the senders: A {:?}\nB {:?}", a.stats.snapshot(), b.stats.snapshot());

    let (a_end, a_errors) = a.leave().await;
    let (b_end, b_errors) = b.leave().await;
    assert!(a_errors.is_empty() && b_errors.is_empty(), "server messages refused: {a_errors:?} {b_errors:?}");
    eprintln!("A: {a_end:?}\nB: {b_end:?}\nserver: {:?}", sfu.stats.snapshot());
    for (who, s) in [("A", &a_end), ("B", &b_end)] {
        assert_eq!((s.tracks_published, s.tracks_received), (2, 2), "{who}: {s:?}");
        assert_eq!(s.peer_connections_connected, 0, "{who} counts as connected after close");
        assert!(s.packets_expected >= s.packets_received / 2, "{who}: expected counts every track: {s:?}");
        let loss = ratio(s.packets_lost, s.packets_expected);
        assert!(loss < 0.05, "{who}: lost {} of {} ({loss:.3})", s.packets_lost, s.packets_expected);
        let delay = &s.forwarding_delay_us;
        assert!(delay.count >= s.packets_received * 9 / 10, "{who}: most packets carry a send time: {s:?}");
        assert!(delay.p50 > 0.0 && delay.p50 < 200_000.0, "{who}: median forwarding delay {} µs", delay.p50);
        assert!(delay.p50 <= delay.p95 && delay.p95 <= delay.p99 && delay.p99 <= delay.max, "{who}: {delay:?}");
    }
}

#[tokio::test]
async fn bad_server_messages_are_errors_and_unrelated_ones_are_ignored() {
    let (out, mut sent) = mpsc::unbounded_channel();
    let engine = MediaEngine::start(loopback(100_000), Arc::new(MediaStats::default())).expect("media threads start");
    let stats = Arc::clone(engine.stats());
    let session = engine.session(out).expect("session starts");
    let offer = sent.recv().await.expect("the offer goes out first");
    assert!(matches!(offer, ClientMessage::Offer { ref sdp, .. } if sdp.contains("VP8") && sdp.contains("opus")), "{offer:?}");

    assert!(session.handle(&ServerMessage::Answer { sdp: "not sdp".into() }).await.is_err());
    assert!(session.handle(&ServerMessage::Offer { sdp: "v=0".into() }).await.is_err());
    let junk = signaling::IceCandidate {
        candidate: "candidate:garbage".into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    };
    assert!(session.handle(&ServerMessage::Candidate { candidate: junk }).await.is_err());
    session.handle(&ServerMessage::Pong { ts: Some(1) }).await.expect("non-media messages are ignored");
    session.handle(&ServerMessage::ParticipantCount { count: 3 }).await.expect("non-media messages are ignored");

    session.close().await;
    let s = stats.snapshot();
    assert_eq!((s.tracks_published, s.peer_connections_connected, s.packets_sent), (2, 0, 0), "{s:?}");
}

#[test]
fn options_with_nothing_to_bind_no_frame_rate_or_no_thread_are_refused() {
    let stats = || Arc::new(MediaStats::default());
    let no_ips = MediaOptions { bind_ips: vec![], ..loopback(100_000) };
    assert!(MediaEngine::start(no_ips, stats()).is_err());
    let mut no_fps = loopback(100_000);
    no_fps.peer.video_fps = 0;
    assert!(MediaEngine::start(no_fps, stats()).is_err());
    let no_threads = MediaOptions { threads: 0, ..loopback(100_000) };
    assert!(MediaEngine::start(no_threads, stats()).is_err());
    assert!(MediaEngine::start(loopback(100_000), stats()).is_ok());
}

