//! The SFU and room layer without HTTP: two webrtc-rs peers publish synthetic Opus + VP8 and each must
//! receive the other's packets; a viewer's PLI must reach the publisher.

mod support;

use signaling::{ClientMessage, ServerMessage};
use std::sync::Arc;
use std::time::Duration;
use support::media_peer::{GOP_PACKETS, MediaPeer, VideoCodec, eventually};
use telehealth_gateway::ids::{AttendeeId, MeetingId};
use telehealth_gateway::room::{Outbound, Rooms, Session};
use telehealth_gateway::sfu::{Sfu, SfuConfig};
use tokio::sync::mpsc;

/// Bridges a room session to channels, as the WebSocket handler would.
fn bridge(mut session: Session) -> (mpsc::UnboundedSender<ClientMessage>, mpsc::UnboundedReceiver<ServerMessage>) {
    let (to_server, mut from_client) = mpsc::unbounded_channel::<ClientMessage>();
    let (to_client, from_server) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                m = from_client.recv() => match m { Some(m) => session.handle(m).await, None => break },
                o = session.outbound.recv() => match o {
                    Some(Outbound::Message(m)) => { let _ = to_client.send(m); }
                    Some(Outbound::Close) | None => break,
                },
            }
        }
    });
    (to_server, from_server)
}

async fn participant(rooms: &Rooms, meeting: MeetingId, name: &str, codec: VideoCodec) -> (AttendeeId, MediaPeer, mpsc::UnboundedReceiver<ServerMessage>) {
    let id = AttendeeId::new();
    let session = rooms.join(meeting, id, name.into(), false, false).expect("join");
    let (tx, mut rx) = bridge(session);
    let first = rx.recv().await.expect("joined");
    assert!(matches!(first, ServerMessage::Joined { .. }), "first message is joined: {first:?}");
    let (media_tx, media_rx) = mpsc::unbounded_channel();
    let (other_tx, other_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let _ = media_tx.send(m);
        }
    });
    let peer = MediaPeer::start(tx, media_rx, other_tx, codec).await.expect("peer");
    (id, peer, other_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_receive_each_others_audio_and_video_and_pli_reaches_the_publisher() {
    let sfu = Sfu::new(SfuConfig { bind_ips: vec!["127.0.0.1".parse().unwrap()], ..Default::default() }).unwrap();
    let rooms = Rooms::new(Arc::clone(&sfu));
    let meeting = MeetingId::new();
    let (a, peer_a, _a_events) = participant(&rooms, meeting, "Alice", VideoCodec::Vp8).await;
    let (b, peer_b, _b_events) = participant(&rooms, meeting, "Bob", VideoCodec::Vp8).await;
    let (a, b) = (a.to_string(), b.to_string());

    let flowing = eventually(Duration::from_secs(15), || {
        ["audio", "video"].iter().all(|k| peer_a.received.count(&b, k) > 20 && peer_b.received.count(&a, k) > 20)
    })
    .await;
    assert!(
        flowing,
        "media did not flow both ways: A got audio {} video {}, B got audio {} video {}; stats {:?}",
        peer_a.received.count(&b, "audio"),
        peer_a.received.count(&b, "video"),
        peer_b.received.count(&a, "audio"),
        peer_b.received.count(&a, "video"),
        sfu.stats.snapshot()
    );
    let codecs: Vec<String> = peer_b.received.tracks.lock().unwrap().iter().map(|t| t.2.to_lowercase()).collect();
    assert!(codecs.contains(&"audio/opus".into()) && codecs.contains(&"video/vp8".into()), "codecs: {codecs:?}");
    // Both handshakes chose AES-128-GCM (webrtc-rs offers it first), and the SFU read that from the wire.
    let profiles = sfu.stats.snapshot().srtp_profiles;
    let gcm = telehealth_gateway::sfu::stats::SRTP_PROFILES.iter().position(|p| *p == "SRTP_AEAD_AES_128_GCM").unwrap();
    assert_eq!((profiles[gcm], profiles.iter().sum::<u64>()), (2, 2), "connections per SRTP profile: {profiles:?}");
    // Every RTP packet's time in the gateway was measured from its kernel receive timestamp; on an idle loopback
    // nearly all of them leave within 5 ms (the buckets: 0.1, 0.25, 0.5, 1, 2, 5 ms, …).
    let (delays, _) = sfu.stats.forwarding_delay.cumulative();
    let total = delays[delays.len() - 1];
    assert!(total >= sfu.stats.snapshot().packets_in * 9 / 10 && total > 80, "delays measured: {delays:?}");
    assert!(delays[5] * 10 >= total * 9, "90 % within 5 ms: {delays:?}");

    // Let the subscription's own keyframe requests pass the 1 s throttle, then act as B's decoder.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = peer_a.received.keyframe_requests.load(std::sync::atomic::Ordering::Relaxed);
    assert!(peer_b.send_pli().await > 0, "B has a video track to send a PLI on");
    let relayed = eventually(Duration::from_secs(3), || {
        peer_a.received.keyframe_requests.load(std::sync::atomic::Ordering::Relaxed) > before
    })
    .await;
    assert!(relayed, "B's PLI did not reach A; stats {:?}", sfu.stats.snapshot());
    assert!(sfu.stats.snapshot().viewer_keyframe_requests > 0);

    eprintln!("A got {:?}; B got {:?}; stats {:?}", peer_a.received.packets.lock().unwrap(), peer_b.received.packets.lock().unwrap(), sfu.stats.snapshot());
    assert_eq!(rooms.participant_count(meeting), 2);
    peer_b.send(ClientMessage::Leave);
    assert!(eventually(Duration::from_secs(3), || rooms.participant_count(meeting) == 1).await);
    peer_a.close().await;
    peer_b.close().await;
}

/// A browser's PLI comes in a compound packet behind its receiver report, whose first report block is often about
/// the retransmission stream the SFU sends it (an SSRC no track has). webrtc-rs files a compound under its first
/// destination SSRC and drops it when no track has that one, so such a PLI never reached the publisher and a
/// viewer that had lost a frame for good stayed frozen (seen with 5 % loss, tests/browser/badnet.test.mjs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pli_behind_a_report_on_an_unknown_ssrc_reaches_the_publisher() {
    let sfu = Sfu::new(SfuConfig { bind_ips: vec!["127.0.0.1".parse().unwrap()], ..Default::default() }).unwrap();
    let rooms = Rooms::new(Arc::clone(&sfu));
    let meeting = MeetingId::new();
    let (a, peer_a, _a_events) = participant(&rooms, meeting, "Alice", VideoCodec::Vp8).await;
    let (_b, peer_b, _b_events) = participant(&rooms, meeting, "Bob", VideoCodec::Vp8).await;
    let a = a.to_string();
    assert!(eventually(Duration::from_secs(15), || peer_b.received.count(&a, "video") > 20).await, "B receives A's video");
    // Past the 1 s throttle of the subscription's own keyframe requests.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (before, viewer_before) = (
        peer_a.received.keyframe_requests.load(std::sync::atomic::Ordering::Relaxed),
        sfu.stats.snapshot().viewer_keyframe_requests,
    );
    assert!(peer_b.send_pli_behind_report(0xDEAD_BEEF).await > 0, "B has a video track to send a PLI on");
    let relayed = eventually(Duration::from_secs(3), || {
        peer_a.received.keyframe_requests.load(std::sync::atomic::Ordering::Relaxed) > before
    })
    .await;
    assert!(relayed, "B's PLI did not reach A; stats {:?}", sfu.stats.snapshot());
    assert!(sfu.stats.snapshot().viewer_keyframe_requests > viewer_before);
    peer_a.close().await;
    peer_b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_video_is_forwarded_between_h264_peers() {
    let sfu = Sfu::new(SfuConfig { bind_ips: vec!["127.0.0.1".parse().unwrap()], ..Default::default() }).unwrap();
    let rooms = Rooms::new(Arc::clone(&sfu));
    let meeting = MeetingId::new();
    let (a, peer_a, _a_events) = participant(&rooms, meeting, "Alice", VideoCodec::H264).await;
    let (_b, peer_b, _b_events) = participant(&rooms, meeting, "Bob", VideoCodec::H264).await;
    let a = a.to_string();
    assert!(
        eventually(Duration::from_secs(15), || peer_b.received.count(&a, "video") > 20).await,
        "B got {} H.264 packets from A; stats {:?}",
        peer_b.received.count(&a, "video"),
        sfu.stats.snapshot()
    );
    let mimes: Vec<String> = peer_b.received.tracks.lock().unwrap().iter().map(|t| t.2.to_lowercase()).collect();
    assert!(mimes.contains(&"video/h264".into()), "B's remote tracks: {mimes:?}");
    peer_a.close().await;
    peer_b.close().await;
}

/// The SFU is the DTLS server, so the browser's first flight is answered from the read path at once (as the
/// client, webrtc-rs 0.21 held its ClientHello until the next timer tick: 100-200 ms on every join).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sfu_answers_as_the_dtls_server() {
    let sfu = Sfu::new(SfuConfig { bind_ips: vec!["127.0.0.1".parse().unwrap()], ..Default::default() }).unwrap();
    let (out, mut sent) = mpsc::unbounded_channel();
    let (_to_peer, incoming) = mpsc::unbounded_channel();
    let (others, _others) = mpsc::unbounded_channel();
    let client = MediaPeer::start(out, incoming, others, VideoCodec::Vp8).await.expect("peer");
    let offer = loop {
        match tokio::time::timeout(Duration::from_secs(5), sent.recv()).await.expect("an offer in time") {
            Some(ClientMessage::Offer { sdp, .. }) => break sdp,
            Some(_) => continue,
            None => panic!("the peer stopped before offering"),
        }
    };
    assert!(offer.contains("a=setup:actpass"), "{offer}");
    let (events, _events) = mpsc::channel(64);
    let server = sfu.create_peer("dtls-room", "dtls-role".into(), events).await.expect("server peer");
    let answer = server.handle_offer(offer).await.expect("answer");
    assert!(answer.contains("a=setup:passive") && !answer.contains("a=setup:active"), "{answer}");
    server.close().await;
    client.close().await;
}

/// A viewer who arrives after the publisher's keyframe is started on that keyframe (cached by the SFU) and the
/// packets since, so nobody asks the publisher for a keyframe. (This publisher never answers a request; without
/// the cache the SFU would ask every 300 ms until a keyframe happened to reach the viewer.) What the viewer
/// receives first cannot be checked here: webrtc-rs drops a new remote track's first packets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_viewer_starts_on_the_cached_keyframe_without_a_request() {
    let sfu = Sfu::new(SfuConfig { bind_ips: vec!["127.0.0.1".parse().unwrap()], ..Default::default() }).unwrap();
    let rooms = Rooms::new(Arc::clone(&sfu));
    let meeting = MeetingId::new();
    let (a, peer_a, _a_events) = participant(&rooms, meeting, "Alice", VideoCodec::Vp8Gop).await;
    // A publishes alone for more than one group of pictures, so a keyframe has reached the SFU (A's very first
    // packets may go out before its connection is up) and deltas followed it.
    assert!(eventually(Duration::from_secs(10), || sfu.stats.snapshot().packets_in > 0).await, "A's media reaches the SFU");
    tokio::time::sleep(Duration::from_millis(GOP_PACKETS * 33 + 300)).await;
    let (_b, peer_b, _b_events) = participant(&rooms, meeting, "Bob", VideoCodec::Vp8).await;
    let a = a.to_string();
    assert!(
        eventually(Duration::from_secs(10), || peer_b.received.count(&a, "video") >= 20).await,
        "B got {} video packets from A; stats {:?}",
        peer_b.received.count(&a, "video"),
        sfu.stats.snapshot()
    );
    // Past the first 300 ms retry of a subscriber still waiting for its keyframe.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let asked = peer_a.received.keyframe_requests.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((asked, sfu.stats.snapshot().keyframe_requests), (0, 0), "nobody asked A for a keyframe");
    peer_a.close().await;
    peer_b.close().await;
}
