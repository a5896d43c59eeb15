//! The signaling socket and the SFU through the real server: join with a JoinToken, refusal of bad
//! tokens, garbage frames, media between two webrtc-rs peers, delete-meeting and shutdown disconnecting
//! everyone.

mod common;
mod support;

use common::{TestServer, meeting_id};
use reqwest::StatusCode;
use serde_json::json;
use signaling::{ClientMessage, EndReason, ErrorCode, ServerMessage, SignalingClient};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::media_peer::{MediaPeer, VideoCodec, eventually};
use support::ws::{bridge, closed, next, until};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(5);

struct Guest {
    attendee_id: String,
    token: String,
}

async fn meeting_with_guests(server: &TestServer, names: &[&str]) -> (String, String, Vec<Guest>) {
    let meeting = server.create_meeting().await;
    let id = meeting_id(&meeting);
    let signaling_url = meeting["meeting"]["MediaPlacement"]["SignalingUrl"].as_str().unwrap().to_owned();
    let mut guests = Vec::new();
    for name in names {
        let (status, body) = server.create_attendee(&id, name).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        guests.push(Guest {
            attendee_id: body["attendee"]["AttendeeId"].as_str().unwrap().to_owned(),
            token: body["attendee"]["JoinToken"].as_str().unwrap().to_owned(),
        });
    }
    (id, signaling_url, guests)
}

async fn join(url: &str, token: &str) -> (SignalingClient, ServerMessage) {
    let mut client = SignalingClient::connect(url).await.expect("websocket connects");
    client.send(&ClientMessage::Join { token: token.into(), audio_muted: false, video_muted: false }).await.unwrap();
    let first = next(&mut client, T).await;
    (client, first)
}

fn is_error(msg: &ServerMessage, code: ErrorCode) -> bool {
    matches!(msg, ServerMessage::Error { code: c, .. } if *c == code)
}

#[tokio::test]
async fn the_signaling_url_is_the_gateways_own_websocket() {
    let server = TestServer::start().await;
    let (_, url, _) = meeting_with_guests(&server, &[]).await;
    assert_eq!(url, format!("ws://{}/ws", server.http));
}

#[tokio::test]
async fn joining_with_a_valid_token_reports_the_others_and_the_count() {
    let server = TestServer::start().await;
    let (id, url, guests) = meeting_with_guests(&server, &["Dr. Smith", "Pat Client"]).await;
    let (mut a, first) = join(&url, &guests[0].token).await;
    let ServerMessage::Joined { meeting_id, attendee_id, participants, count, resumed, .. } = first else { panic!("{first:?}") };
    assert_eq!((meeting_id.as_str(), attendee_id.as_str(), count), (id.as_str(), guests[0].attendee_id.as_str(), 1));
    assert!(!resumed, "a first join resumes nothing");
    assert!(participants.is_empty());

    let (_b, first) = join(&url, &guests[1].token).await;
    let ServerMessage::Joined { participants, count, .. } = first else { panic!("{first:?}") };
    assert_eq!(count, 2);
    assert_eq!(participants.len(), 1);
    assert_eq!(participants[0].name, "Dr. Smith");
    assert_eq!(participants[0].attendee_id, guests[0].attendee_id);

    let joined = until(&mut a, T, |m| matches!(m, ServerMessage::ParticipantJoined { .. })).await;
    let ServerMessage::ParticipantJoined { participant, count } = joined else { unreachable!() };
    assert_eq!((participant.name.as_str(), count), ("Pat Client", 2));
    assert_eq!(server.state.rooms.participant_count(id.parse().map(|u: uuid::Uuid| u.into()).unwrap()), 2);
}

#[tokio::test]
async fn a_forged_token_is_refused_and_the_socket_closes() {
    let server = TestServer::start().await;
    let (_, url, guests) = meeting_with_guests(&server, &["Pat Client"]).await;
    let mut forged = guests[0].token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let (mut client, first) = join(&url, &String::from_utf8(forged).unwrap()).await;
    assert!(is_error(&first, ErrorCode::Unauthorized), "{first:?}");
    assert!(closed(&mut client, T).await);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let server = TestServer::start_with(|c| c.join_token_ttl = Duration::from_secs(1)).await;
    let (_, url, guests) = meeting_with_guests(&server, &["Pat Client"]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut client, first) = join(&url, &guests[0].token).await;
    assert!(is_error(&first, ErrorCode::Unauthorized), "{first:?}");
    assert!(closed(&mut client, T).await);
}

#[tokio::test]
async fn a_missing_or_empty_token_is_refused() {
    let server = TestServer::start().await;
    let url = format!("ws://{}/ws", server.http);
    let (mut client, first) = join(&url, "").await;
    assert!(is_error(&first, ErrorCode::Unauthorized), "{first:?}");
    assert!(closed(&mut client, T).await);

    // Anything but `join` first is refused too.
    let mut client = SignalingClient::connect(&url).await.unwrap();
    client.send(&ClientMessage::Offer { sdp: "v=0".into(), restart: false }).await.unwrap();
    assert!(is_error(&next(&mut client, T).await, ErrorCode::Unauthorized));
    assert!(closed(&mut client, T).await);
}

#[tokio::test]
async fn an_invite_is_not_a_join_token() {
    let server = TestServer::start().await;
    let meeting = server.create_meeting().await;
    let invite = common::invite_of(&meeting);
    let url = format!("ws://{}/ws", server.http);
    let (_, first) = join(&url, &invite).await;
    assert!(is_error(&first, ErrorCode::Unauthorized), "{first:?}");
}

#[tokio::test]
async fn garbage_frames_get_a_bad_request_error_and_the_socket_stays_usable() {
    let server = TestServer::start().await;
    let (_, url, guests) = meeting_with_guests(&server, &["Pat Client"]).await;
    let (mut client, first) = join(&url, &guests[0].token).await;
    assert!(matches!(first, ServerMessage::Joined { .. }));
    for garbage in ["not json", "{\"type\":\"explode\"}", "{\"type\":\"offer\",\"sdp\":42}", "[]", "{}", "\u{0}\u{1}"] {
        client.send_raw(garbage).await.unwrap();
        let reply = next(&mut client, T).await;
        assert!(is_error(&reply, ErrorCode::BadRequest), "{garbage:?} → {reply:?}");
    }
    // An answer nobody asked for, and an unparseable SDP, are refused without ending the session.
    client.send(&ClientMessage::Answer { sdp: "v=0".into() }).await.unwrap();
    assert!(is_error(&next(&mut client, T).await, ErrorCode::Conflict));
    client.send(&ClientMessage::Offer { sdp: "this is not sdp".into(), restart: false }).await.unwrap();
    assert!(is_error(&next(&mut client, T).await, ErrorCode::UnprocessableEntity));
    client.send(&ClientMessage::Ping { ts: Some(7) }).await.unwrap();
    assert_eq!(next(&mut client, T).await, ServerMessage::Pong { ts: Some(7) });
}

#[tokio::test]
async fn an_oversized_frame_closes_the_socket_but_not_the_server() {
    let server = TestServer::start().await;
    let (_, url, guests) = meeting_with_guests(&server, &["Pat Client"]).await;
    let (mut client, _) = join(&url, &guests[0].token).await;
    let huge = format!("{{\"type\":\"offer\",\"sdp\":\"{}\"}}", "a".repeat(signaling::MAX_FRAME_BYTES + 1));
    let _ = client.send_raw(&huge).await;
    assert!(closed(&mut client, T).await);
    let (status, _) = server.create_attendee(&guests[0].attendee_id.replace('-', "x"), "Someone").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the server still answers");
}

#[tokio::test]
async fn delete_meeting_disconnects_everyone_and_kills_the_tokens() {
    let server = TestServer::start().await;
    let (id, url, guests) = meeting_with_guests(&server, &["Dr. Smith", "Pat Client"]).await;
    let (mut a, _) = join(&url, &guests[0].token).await;
    let (mut b, _) = join(&url, &guests[1].token).await;
    let (status, body) = server.api(json!({"action": "delete-meeting", "meetingId": id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for client in [&mut a, &mut b] {
        let ended = until(client, T, |m| matches!(m, ServerMessage::MeetingEnded { .. })).await;
        assert_eq!(ended, ServerMessage::MeetingEnded { reason: EndReason::Deleted });
        assert!(closed(client, T).await);
    }
    let (mut again, first) = join(&url, &guests[0].token).await;
    assert!(is_error(&first, ErrorCode::NotFound), "{first:?}");
    assert!(closed(&mut again, T).await);
}

#[tokio::test]
async fn joining_twice_replaces_the_first_socket() {
    let server = TestServer::start().await;
    let (_, url, guests) = meeting_with_guests(&server, &["Pat Client"]).await;
    let (mut first, _) = join(&url, &guests[0].token).await;
    let (_second, joined) = join(&url, &guests[0].token).await;
    // The second socket takes over the same participant: it resumes, it does not enter a second time.
    assert!(matches!(joined, ServerMessage::Joined { count: 1, resumed: true, .. }), "{joined:?}");
    let ended = until(&mut first, T, |m| matches!(m, ServerMessage::MeetingEnded { .. })).await;
    assert_eq!(ended, ServerMessage::MeetingEnded { reason: EndReason::Replaced });
}

#[tokio::test]
async fn shutdown_tells_participants_the_server_is_restarting_and_refuses_new_joins() {
    let server = TestServer::start().await;
    let (_, url, guests) = meeting_with_guests(&server, &["Dr. Smith", "Pat Client"]).await;
    let (mut a, _) = join(&url, &guests[0].token).await;
    let state = server.state.clone();
    let stopping = tokio::spawn(server.stop());
    // Not "ended": the meeting goes on, and the page is told to come back.
    let restarting = until(&mut a, T, |m| matches!(m, ServerMessage::ServerRestarting { .. } | ServerMessage::MeetingEnded { .. })).await;
    assert!(matches!(restarting, ServerMessage::ServerRestarting { retry_after_ms } if retry_after_ms > 0), "{restarting:?}");
    assert!(closed(&mut a, T).await);
    assert!(state.rooms.is_draining());
    assert!(state.rooms.join(uuid::Uuid::new_v4().into(), uuid::Uuid::new_v4().into(), "x".into(), false, false).is_err());
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("server stops in time").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_webrtc_peers_exchange_opus_and_vp8_through_the_server_and_pli_reaches_the_publisher() {
    let server = TestServer::start().await;
    let (id, url, guests) = meeting_with_guests(&server, &["Dr. Smith", "Pat Client"]).await;
    let mut peers = Vec::new();
    let mut events = Vec::new();
    for g in &guests {
        let (client, first) = join(&url, &g.token).await;
        assert!(matches!(first, ServerMessage::Joined { .. }), "{first:?}");
        let (tx, rx) = bridge(client);
        let (other_tx, other_rx) = mpsc::unbounded_channel();
        peers.push(MediaPeer::start(tx, rx, other_tx, VideoCodec::Vp8).await.expect("peer starts"));
        events.push(other_rx);
    }
    let (a, b) = (&guests[0].attendee_id, &guests[1].attendee_id);
    let sfu = server.state.rooms.sfu().clone();
    let flowing = eventually(Duration::from_secs(15), || {
        ["audio", "video"].iter().all(|k| peers[0].received.count(b, k) > 20 && peers[1].received.count(a, k) > 20)
    })
    .await;
    assert!(flowing, "media did not flow both ways; stats {:?}", sfu.stats.snapshot());

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = peers[0].received.keyframe_requests.load(Ordering::Relaxed);
    assert!(peers[1].send_pli().await > 0);
    let relayed =
        eventually(Duration::from_secs(3), || peers[0].received.keyframe_requests.load(Ordering::Relaxed) > before).await;
    assert!(relayed, "the viewer's PLI did not reach the publisher; stats {:?}", sfu.stats.snapshot());

    // B leaves: A is told, and the count drops to 1.
    peers[1].send(ClientMessage::Leave);
    let left = loop {
        let m = tokio::time::timeout(T, events[0].recv()).await.expect("in time").expect("open");
        if let ServerMessage::ParticipantLeft { .. } = m {
            break m;
        }
    };
    assert_eq!(left, ServerMessage::ParticipantLeft { attendee_id: b.clone(), count: 1 });
    let meeting: uuid::Uuid = id.parse().unwrap();
    assert!(eventually(T, || server.state.rooms.participant_count(meeting.into()) == 1).await);
    for p in &peers {
        p.close().await;
    }
}

/// A dropped socket keeps the participant's place: the others see "reconnecting" and never "left", and the same
/// JoinToken on a new socket resumes the same participant (one stay in the usage records, not two).
#[tokio::test]
async fn a_dropped_socket_resumes_within_the_window_and_the_others_never_see_a_leave() {
    let server = TestServer::start().await;
    let (id, url, guests) = meeting_with_guests(&server, &["Dr. Smith", "Pat Client"]).await;
    let meeting: telehealth_gateway::ids::MeetingId = uuid::Uuid::parse_str(&id).unwrap().into();
    let (mut a, _) = join(&url, &guests[0].token).await;
    let (b, _) = join(&url, &guests[1].token).await;
    until(&mut a, T, |m| matches!(m, ServerMessage::ParticipantJoined { .. })).await;

    drop(b); // the network goes away under Pat's page
    let away = |m: &ServerMessage| {
        matches!(m, ServerMessage::ParticipantReconnecting { .. } | ServerMessage::ParticipantLeft { .. })
    };
    let seen = until(&mut a, T, away).await;
    assert_eq!(seen, ServerMessage::ParticipantReconnecting { attendee_id: guests[1].attendee_id.clone() });
    assert_eq!(server.state.rooms.participant_count(meeting), 2, "the place is kept");

    let (_b, first) = join(&url, &guests[1].token).await;
    let ServerMessage::Joined { resumed, count, participants, .. } = first else { panic!("{first:?}") };
    assert!(resumed && count == 2, "resumed {resumed}, count {count}");
    assert_eq!(participants.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["Dr. Smith"]);
    let back = |m: &ServerMessage| matches!(m, ServerMessage::ParticipantResumed { .. } | ServerMessage::ParticipantLeft { .. });
    let seen = until(&mut a, T, back).await;
    assert_eq!(seen, ServerMessage::ParticipantResumed { attendee_id: guests[1].attendee_id.clone() });
    let (from, to) = (chrono::Utc::now() - chrono::Duration::hours(1), chrono::Utc::now() + chrono::Duration::hours(1));
    let stays = server.state.store.sessions_between(from, to, Some(meeting)).await.unwrap();
    assert_eq!(stays.iter().filter(|s| s.attendee_id.to_string() == guests[1].attendee_id).count(), 1, "{stays:?}");
}

#[tokio::test]
async fn after_the_resume_window_the_others_see_the_leave_and_the_token_joins_afresh() {
    let server = TestServer::start_with(|c| c.resume_window = Duration::from_millis(300)).await;
    let (id, url, guests) = meeting_with_guests(&server, &["Dr. Smith", "Pat Client"]).await;
    let meeting: telehealth_gateway::ids::MeetingId = uuid::Uuid::parse_str(&id).unwrap().into();
    let (mut a, _) = join(&url, &guests[0].token).await;
    let (b, _) = join(&url, &guests[1].token).await;
    until(&mut a, T, |m| matches!(m, ServerMessage::ParticipantJoined { .. })).await;
    drop(b);
    until(&mut a, T, |m| matches!(m, ServerMessage::ParticipantReconnecting { .. })).await;
    let left = until(&mut a, T, |m| matches!(m, ServerMessage::ParticipantLeft { .. })).await;
    assert_eq!(left, ServerMessage::ParticipantLeft { attendee_id: guests[1].attendee_id.clone(), count: 1 });
    assert_eq!(server.state.rooms.participant_count(meeting), 1);

    let (_b, first) = join(&url, &guests[1].token).await;
    assert!(matches!(first, ServerMessage::Joined { resumed: false, count: 2, .. }), "{first:?}");
}

/// With a TURN server configured, `joined` hands each participant a TURN REST credential (expiring, derived from the
/// shared secret, naming no one); without one it hands none.
#[tokio::test]
async fn joined_hands_out_turn_credentials_only_when_a_turn_server_is_configured() {
    use telehealth_gateway::auth::turn::credential;
    use telehealth_gateway::config::TurnConfig;
    let server = TestServer::start().await;
    let (_, url, guests) = meeting_with_guests(&server, &["Pat Client"]).await;
    let (_a, first) = join(&url, &guests[0].token).await;
    assert!(matches!(&first, ServerMessage::Joined { ice_servers, .. } if ice_servers.is_empty()), "{first:?}");

    let turn = TurnConfig { urls: vec!["turn:127.0.0.1:3478?transport=tcp".into()], secret: b"shared-secret".to_vec(), ttl: Duration::from_secs(3600) };
    let server = TestServer::start_with(|c| c.turn = Some(turn)).await;
    let (_, url, guests) = meeting_with_guests(&server, &["Pat Client"]).await;
    let (_b, first) = join(&url, &guests[0].token).await;
    let ServerMessage::Joined { ice_servers, .. } = first else { panic!("{first:?}") };
    assert_eq!(ice_servers.len(), 1);
    assert_eq!(ice_servers[0].urls, ["turn:127.0.0.1:3478?transport=tcp"]);
    let username = ice_servers[0].username.clone().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert!(!username.contains(&guests[0].attendee_id), "{username}");
    assert_eq!(ice_servers[0].credential.as_deref(), Some(credential(b"shared-secret", expiry.parse().unwrap(), user).1.as_str()));
}
