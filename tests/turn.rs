//! The embedded TURN server through the real server: a webrtc-rs peer that may only relay (ICE transport policy
//! `relay`, as a browser behind a firewall is in effect) exchanges media with a directly connected peer through
//! it, with the credential `joined` handed it; the TCP and TLS listeners answer TURN and hang up on garbage.
//! (Chromium over TCP and TLS relays: tests/browser/turn.test.mjs.)

mod common;
mod support;

use common::{TestServer, meeting_id};
use signaling::{ServerMessage, SignalingClient};
use std::net::SocketAddr;
use std::time::Duration;
use support::media_peer::{MediaPeer, VideoCodec, eventually};
use support::raw;
use support::ws::{bridge, next};
use telehealth_gateway::config::{Config, TurnConfig, TurnListenConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(5);

/// The embedded server on loopback port 0: UDP, TCP and TLS, URLs derived from the listeners.
fn with_turn(c: &mut Config) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    c.turn_server = Some(TurnListenConfig { udp: Some(any), tcp: Some(any), tls: Some(any), relay_ip: None, max_allocations: 10 });
    c.turn = Some(TurnConfig { urls: vec![], secret: b"a secret of thirty-two characters".to_vec(), ttl: Duration::from_secs(600) });
}

/// The URL of `scheme` with `transport` among the TURN servers pages are given.
fn turn_addr(server: &TestServer, scheme: &str, transport: &str) -> SocketAddr {
    let turn = server.state.rooms.config().turn.clone().expect("TURN is configured");
    let url = turn.urls.iter().find(|u| u.starts_with(&format!("{scheme}:")) && u.ends_with(&format!("?transport={transport}")));
    let url = url.unwrap_or_else(|| panic!("no {scheme} {transport} URL in {:?}", turn.urls));
    url[scheme.len() + 1..url.find('?').unwrap()].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_may_only_relay_exchanges_media_through_the_embedded_turn_server() {
    let server = TestServer::start_with(with_turn).await;
    let meeting = server.create_meeting().await;
    let id = meeting_id(&meeting);
    let url = meeting["meeting"]["MediaPlacement"]["SignalingUrl"].as_str().unwrap().to_owned();
    let mut peers = Vec::new();
    let mut attendees = Vec::new();
    for (name, relayed) in [("Dr. Smith", false), ("Pat Client", true)] {
        let (_, body) = server.create_attendee(&id, name).await;
        attendees.push(body["attendee"]["AttendeeId"].as_str().unwrap().to_owned());
        let mut client = SignalingClient::connect(&url).await.unwrap();
        let token = body["attendee"]["JoinToken"].as_str().unwrap();
        client.send(&signaling::ClientMessage::Join { token: token.into(), audio_muted: false, video_muted: false }).await.unwrap();
        let ServerMessage::Joined { ice_servers, .. } = next(&mut client, T).await else { panic!("joined first") };
        // One entry: the three listeners' URLs, one credential that names no one and expires.
        assert_eq!(ice_servers.len(), 1, "{ice_servers:?}");
        let username = ice_servers[0].username.clone().unwrap();
        let (expiry, tag) = username.split_once(':').unwrap();
        assert!(expiry.parse::<u64>().is_ok() && tag.len() == 16 && !tag.contains(name), "{username}");
        let (tx, rx) = bridge(client);
        let (others, _) = mpsc::unbounded_channel();
        let peer = match relayed {
            false => MediaPeer::start(tx, rx, others, VideoCodec::Vp8).await,
            true => MediaPeer::start_relayed(tx, rx, others, &ice_servers).await,
        };
        peers.push(peer.expect("peer starts"));
    }
    let (a, b) = (&attendees[0], &attendees[1]);
    let flowing = eventually(Duration::from_secs(20), || {
        ["audio", "video"].iter().all(|k| peers[0].received.count(b, k) > 20 && peers[1].received.count(a, k) > 20)
    })
    .await;
    assert!(
        flowing,
        "media did not flow through the relay: doctor got video {}, patient got video {}; TURN allocations {:?}",
        peers[0].received.count(b, "video"),
        peers[1].received.count(a, "video"),
        server.metric("telehealth_turn_allocations").await
    );
    // The patient could only have come through a relay of ours.
    assert!(server.metric("telehealth_turn_allocations").await.unwrap_or(0.0) >= 1.0);
    assert!(turn_addr(&server, "turn", "udp").ip().is_loopback());
    for p in &peers {
        p.close().await;
    }
}

/// An Allocate with no credential: a TURN server answers it with 401 and a nonce.
fn bare_allocate() -> Vec<u8> {
    let mut m = vec![0x00, 0x03, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(&rand::random::<[u8; 12]>());
    m.extend_from_slice(&[0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]); // REQUESTED-TRANSPORT: UDP
    m
}

/// Sends `bare_allocate` and reads the answer's message type (0x0113: Allocate error response).
async fn answer_type<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S) -> u16 {
    stream.write_all(&bare_allocate()).await.unwrap();
    let mut header = [0u8; 20];
    tokio::time::timeout(T, stream.read_exact(&mut header)).await.expect("an answer in time").expect("an answer");
    u16::from_be_bytes([header[0], header[1]])
}

#[tokio::test]
async fn the_stream_listeners_answer_turn_and_hang_up_on_garbage() {
    let server = TestServer::start_with(with_turn).await;
    let (tcp, tls) = (turn_addr(&server, "turn", "tcp"), turn_addr(&server, "turns", "tcp"));

    let mut s = raw::tcp(tcp).await;
    assert_eq!(answer_type(&mut s).await, 0x0113, "TURN over TCP answers 401");
    let mut s = raw::tls(tls).await;
    assert_eq!(answer_type(&mut s).await, 0x0113, "TURN inside TLS answers 401");

    // Bytes that are neither STUN nor ChannelData: the stream is closed, and the listener serves on.
    let mut s = raw::tcp(tcp).await;
    s.write_all(b"\xff\xff\xff\xff garbage").await.unwrap();
    assert!(raw::closed_within(&mut s, T).await.is_some(), "garbage closes the stream");
    let mut s = raw::tcp(tls).await;
    s.write_all(&bare_allocate()).await.unwrap();
    assert!(raw::closed_within(&mut s, T).await.is_some(), "TURN without TLS on the TLS port is refused");
    let mut s = raw::tcp(tcp).await;
    assert_eq!(answer_type(&mut s).await, 0x0113, "the TCP listener still answers");

    // A message split across writes, as TCP may deliver it, is still one message.
    let mut s = raw::tcp(tcp).await;
    let msg = bare_allocate();
    s.write_all(&msg[..7]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(&msg[7..]).await.unwrap();
    let mut header = [0u8; 20];
    tokio::time::timeout(T, s.read_exact(&mut header)).await.expect("an answer").unwrap();
    assert_eq!(u16::from_be_bytes([header[0], header[1]]), 0x0113);
}
