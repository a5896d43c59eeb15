//! Property tests of the signaling socket on the real server (loopback): whatever text or binary frames a
//! client sends, before or after `join`, it gets what `src/http/ws.rs` documents, and nothing else:
//!
//! - a binary frame, or a text frame that is not a client message, gets an `error` frame with code
//!   `BadRequest`, whose message does not repeat the frame, and the socket stays open (a `ping` still gets
//!   its `pong`);
//! - before `join`, a `ping` gets its `pong`, and any other valid message (a `join` with a made-up token
//!   included) gets `Unauthorized` and the socket closes with code 4401;
//! - after `join`, valid messages are the room's business and are not sent here (tests/signaling.rs has them).
//!
//! After every case `/healthz` answers ok and no server thread has panicked; at the end the server stops
//! cleanly.

mod common;
mod props;

use futures::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use props::strategies::*;
use props::{Harness, no_echo};
use reqwest::StatusCode;
use signaling::{ClientMessage, ErrorCode, ServerMessage};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as RawFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const T: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// Frames that make a parser echo its input if it can: an unknown `type`, a string where a number belongs, a
/// wrong-typed token, an unknown field before a syntax error, or bare text, each carrying a marker.
fn bait() -> impl Strategy<Value = String> {
    let marker = "[A-Za-z]{8}".prop_map(|m| format!("Pat-Client-{m}"));
    (marker, 0..7usize).prop_map(|(m, shape)| match shape {
        0 => format!(r#"{{"type":"{m}"}}"#),
        1 => format!(r#"{{"type":"ping","ts":"{m}"}}"#),
        2 => format!(r#"{{"type":"join","token":["{m}"]}}"#),
        3 => format!(r#"{{"type":"candidate","candidate":{{"candidate":"c","sdpMLineIndex":"{m}"}}}}"#),
        4 => format!(r#"{{"type":"offer","{m}": tru}}"#),
        5 => format!(r#"["{m}"]"#),
        _ => m,
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        2 => any::<String>().prop_map(Frame::Text),
        2 => jsonish_text().prop_map(Frame::Text),
        2 => mutated_text().prop_map(Frame::Text),
        3 => near_valid_client_message().prop_map(|v| Frame::Text(v.to_string())),
        2 => bait().prop_map(Frame::Text),
        1 => prop::collection::vec(any::<u8>(), 0..1024).prop_map(Frame::Binary),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    join_first: bool,
    frames: Vec<Frame>,
}

fn case() -> impl Strategy<Value = Case> {
    (any::<bool>(), prop::collection::vec(frame(), 1..5)).prop_map(|(join_first, frames)| Case { join_first, frames })
}

/// What the socket gave next.
#[derive(Debug)]
#[allow(dead_code)] // the payloads are read through Debug, in failure messages
enum Next {
    Message(ServerMessage),
    /// A close frame, with its code.
    Closed(Option<CloseCode>),
    /// The connection ended without a close frame (or failed).
    Dropped(String),
}

fn fail(why: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(why.into())
}

async fn next(ws: &mut Ws) -> Result<Next, TestCaseError> {
    loop {
        let frame = tokio::time::timeout(T, ws.next()).await.map_err(|_| fail("no answer from the server in time"))?;
        return Ok(match frame {
            None => Next::Dropped("end of stream".into()),
            Some(Err(e)) => Next::Dropped(e.to_string()),
            Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                Ok(msg) => Next::Message(msg),
                Err(e) => return Err(fail(format!("the server sent a frame that is not a server message ({e}): {text}"))),
            },
            Some(Ok(Message::Close(frame))) => Next::Closed(frame.map(|f| f.code)),
            Some(Ok(Message::Binary(b))) => return Err(fail(format!("the server sent a binary frame of {} bytes", b.len()))),
            Some(Ok(_)) => continue, // WebSocket ping/pong
        });
    }
}

/// The next message that answers this client (others' comings and goings are skipped); the socket must still
/// be open.
async fn reply(ws: &mut Ws) -> Result<ServerMessage, TestCaseError> {
    loop {
        match next(ws).await? {
            Next::Message(
                ServerMessage::ParticipantCount { .. }
                | ServerMessage::ParticipantJoined { .. }
                | ServerMessage::ParticipantLeft { .. }
                | ServerMessage::ParticipantReconnecting { .. }
                | ServerMessage::ParticipantResumed { .. }
                | ServerMessage::MediaState { .. },
            ) => continue,
            Next::Message(msg) => return Ok(msg),
            other => return Err(fail(format!("the socket ended instead of answering: {other:?}"))),
        }
    }
}

async fn error_reply(ws: &mut Ws) -> Result<(ErrorCode, String), TestCaseError> {
    match reply(ws).await? {
        ServerMessage::Error { code, message } => Ok((code, message)),
        other => Err(fail(format!("expected an error frame, got {other:?}"))),
    }
}

async fn send(ws: &mut Ws, msg: Message) -> Result<(), TestCaseError> {
    ws.send(msg).await.map_err(|e| fail(format!("the socket refused a frame: {e}")))
}

async fn ping_pong(ws: &mut Ws, ts: u64) -> Result<(), TestCaseError> {
    send(ws, Message::text(serde_json::to_string(&ClientMessage::Ping { ts: Some(ts) }).unwrap())).await?;
    let pong = reply(ws).await?;
    prop_assert_eq!(pong, ServerMessage::Pong { ts: Some(ts) }, "the socket is still usable");
    Ok(())
}

/// A meeting with room for the attendees the cases join as (Chime's limit is 250 per meeting).
struct Seats {
    meeting: Option<String>,
    used: usize,
}

impl Seats {
    async fn token(&mut self, h: &Harness) -> Result<String, TestCaseError> {
        if self.meeting.is_none() || self.used == 200 {
            self.meeting = Some(common::meeting_id(&h.server.create_meeting().await));
            self.used = 0;
        }
        self.used += 1;
        let (status, body) = h.server.create_attendee(self.meeting.as_ref().unwrap(), "Prop Tester").await;
        prop_assert_eq!(status, StatusCode::OK, "{}", body);
        Ok(body["attendee"]["JoinToken"].as_str().unwrap().to_owned())
    }
}

async fn run_case(h: &Harness, seats: &mut Seats, case: Case, nonce: u64) -> Result<(), TestCaseError> {
    let url = format!("ws://{}/ws", h.server.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.map_err(|e| fail(format!("connect: {e}")))?;
    if case.join_first {
        let token = seats.token(h).await?;
        let join = ClientMessage::Join { token, audio_muted: true, video_muted: true };
        send(&mut ws, Message::text(serde_json::to_string(&join).unwrap())).await?;
        let joined = reply(&mut ws).await?;
        prop_assert!(matches!(joined, ServerMessage::Joined { .. }), "{:?}", joined);
    }
    for frame in case.frames {
        match frame {
            Frame::Binary(bytes) => {
                send(&mut ws, Message::binary(bytes)).await?;
                let (code, message) = error_reply(&mut ws).await?;
                prop_assert_eq!(code, ErrorCode::BadRequest, "{}", message);
                prop_assert!(!message.is_empty());
            }
            Frame::Text(text) => {
                let parsed = serde_json::from_str::<ClientMessage>(&text);
                if case.join_first && parsed.is_ok() {
                    continue; // the room's business
                }
                send(&mut ws, Message::text(text.clone())).await?;
                match parsed {
                    Err(_) => {
                        let (code, message) = error_reply(&mut ws).await?;
                        prop_assert_eq!(code, ErrorCode::BadRequest, "{:?} → {}", text, message);
                        prop_assert!(!message.is_empty());
                        no_echo(&message, &text, 5)?;
                        prop_assert!(!message.contains("Pat-Client-"), "{:?} → {}", text, message);
                    }
                    Ok(ClientMessage::Ping { ts }) => {
                        let pong = reply(&mut ws).await?;
                        prop_assert_eq!(pong, ServerMessage::Pong { ts });
                    }
                    Ok(msg) => {
                        // Before `join`: anything else (a join with a made-up token too) is refused, fatally.
                        let (code, message) = error_reply(&mut ws).await?;
                        prop_assert_eq!(code, ErrorCode::Unauthorized, "{:?} → {}", msg, message);
                        no_echo(&message, &text, 5)?;
                        match next(&mut ws).await? {
                            Next::Closed(Some(code)) => prop_assert_eq!(u16::from(code), 4401),
                            other => prop_assert!(false, "expected the socket to close with 4401, got {:?}", other),
                        }
                        return h.healthy().await;
                    }
                }
            }
        }
    }
    ping_pong(&mut ws, nonce).await?;
    let _ = ws.close(None).await;
    h.healthy().await
}

#[test]
fn any_frame_before_or_after_join_gets_the_documented_answer_and_the_socket_survives_non_fatal_errors() {
    let h = Harness::start();
    let seats = std::sync::Mutex::new(Seats { meeting: None, used: 0 });
    let nonce = std::sync::atomic::AtomicU64::new(1);
    h.check(96, case(), |h, case| {
        let n = nonce.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        h.block_on(run_case(h, &mut seats.lock().unwrap(), case, n))
    });
}

/// A text frame that is not UTF-8 breaks the WebSocket protocol itself: the server ends that socket (it
/// cannot be answered with a frame), and only that one.
#[test]
fn a_text_frame_of_invalid_utf8_ends_only_that_socket() {
    let h = Harness::start();
    h.check(16, prop::collection::vec(any::<u8>(), 1..256).prop_filter("not UTF-8", |b| std::str::from_utf8(b).is_err()), |h, bytes| {
        h.block_on(async {
            let url = format!("ws://{}/ws", h.server.http);
            let (mut other, _) = tokio_tungstenite::connect_async(&url).await.map_err(|e| fail(format!("connect: {e}")))?;
            let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.map_err(|e| fail(format!("connect: {e}")))?;
            send(&mut ws, Message::Frame(RawFrame::message(bytes, OpCode::Data(Data::Text), true))).await?;
            loop {
                match next(&mut ws).await? {
                    Next::Message(ServerMessage::Error { .. }) => continue,
                    Next::Message(m) => prop_assert!(false, "unexpected {:?}", m),
                    Next::Closed(_) | Next::Dropped(_) => break,
                }
            }
            ping_pong(&mut other, 1).await?;
            h.healthy().await
        })
    });
}

/// The echo check itself: it catches a repeated value, key or marker, and lets the protocol's words pass.
#[test]
fn the_echo_check_catches_echoes() {
    let frame = r#"{"type":"Pat-Client-abcdefgh","sdp":12345678,"Jordan Example":1}"#;
    assert!(no_echo("unknown variant `Pat-Client-abcdefgh`", frame, 5).is_err());
    assert!(no_echo("invalid type: integer `12345678`", frame, 5).is_err());
    assert!(no_echo("unknown field `Jordan Example`", frame, 5).is_err());
    assert!(no_echo("frame is not a valid message (line 1, column 31)", frame, 5).is_ok());
    assert!(no_echo("missing field `sdp`", r#"{"type":"offer"}"#, 3).is_ok());
}
