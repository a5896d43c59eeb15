//! GET /ws: the signaling socket. This handler only turns frames into `signaling` messages and back;
//! admission (`room::admission`) decides who gets in, the room what the messages mean.
//!
//! The first frame must be `join` with a JoinToken, within `JOIN_TIMEOUT`. A forged, expired or missing
//! token, or a deleted meeting, gets an error frame and the socket closes. Malformed frames later on get
//! a `BadRequest` error and the socket stays open.
//!
//! Metrics: `Socket` counts every text frame in and out, so no path can forget to; `join` records how the
//! join phase ended and, for a successful one, the time from the `join` frame to `joined` leaving.

use crate::app::AppState;
use crate::metrics::{Direction, JoinResult, Metrics};
use crate::room::{JoinRequest, Outbound, Refusal, Session};
use super::sockets::SocketSlot;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{Extension, State, WebSocketUpgrade};
use axum::response::Response;
use signaling::{ClientMessage, ErrorCode, MAX_FRAME_BYTES, ServerMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// tungstenite allocates its read buffer up front (128 KiB by default) and batches writes up to 128 KiB.
/// Signaling frames are small and should leave at once, and 10,000 idle sockets must not cost 2.5 GiB:
/// a small read chunk (frames up to `MAX_FRAME_BYTES` still assemble across reads) and no write batching.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// `slot` is this socket's place under the socket caps (`sockets::admit`); it is held until the socket closes.
pub async fn upgrade(State(state): State<AppState>, slot: Option<Extension<SocketSlot>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |ws| {
            let socket = Socket { ws, metrics: Arc::clone(&state.metrics) };
            async move {
                run(state, socket).await;
                drop(slot);
            }
        })
}

/// The WebSocket, counting the signaling (text) frames that cross it.
struct Socket {
    ws: WebSocket,
    metrics: Arc<Metrics>,
}

impl Socket {
    async fn recv(&mut self) -> Option<Result<Message, axum::Error>> {
        let frame = self.ws.recv().await;
        if let Some(Ok(Message::Text(_))) = frame {
            self.metrics.signaling_message(Direction::In);
        }
        frame
    }

    async fn send(&mut self, msg: &ServerMessage) -> bool {
        let Ok(text) = serde_json::to_string(msg) else { return false };
        let sent = self.ws.send(Message::Text(text.into())).await.is_ok();
        if sent {
            self.metrics.signaling_message(Direction::Out);
        }
        sent
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code, reason: Utf8Bytes::from(reason.to_owned()) };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
    }
}

/// Sends an error and, for fatal codes, closes the socket. Returns false if the socket is done.
async fn reject(socket: &mut Socket, code: ErrorCode, message: &str) -> bool {
    let alive = socket.send(&ServerMessage::error(code, message)).await;
    if code.is_fatal() || !alive {
        socket.close(4000 + close_code(code), message).await;
        return false;
    }
    true
}

/// Refuses the join with a fatal error (the socket closes) and counts the outcome.
async fn refuse(socket: &mut Socket, result: JoinResult, code: ErrorCode, message: &str) {
    socket.metrics.join_finished(result, None);
    reject(socket, code, message).await;
}

/// Application close codes (4xxx) mirror the HTTP status of the error code.
fn close_code(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::BadRequest => 400,
        ErrorCode::Unauthorized => 401,
        ErrorCode::NotFound => 404,
        ErrorCode::Conflict => 409,
        ErrorCode::UnprocessableEntity => 422,
        ErrorCode::ServiceFailure => 500,
        ErrorCode::ServiceUnavailable => 503,
    }
}

/// Parses one text frame. Errors are phrased for the client; they never echo its content back.
fn parse(text: &str) -> Result<ClientMessage, String> {
    serde_json::from_str(text).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() { "frame is not valid JSON" } else { "frame is not a valid message" };
        format!("{what} (line {}, column {})", e.line(), e.column())
    })
}

async fn run(state: AppState, mut socket: Socket) {
    let Some((session, join_received)) = join(&state, &mut socket).await else { return };
    relay(&mut socket, session, join_received).await;
}

/// The join phase's outcome for `/metrics`.
fn join_result(refusal: Refusal) -> JoinResult {
    match refusal {
        Refusal::Unauthorized => JoinResult::Unauthorized,
        Refusal::NotFound => JoinResult::NotFound,
        Refusal::Full | Refusal::ServerFull => JoinResult::Full,
        Refusal::ShuttingDown => JoinResult::ShuttingDown,
        Refusal::Unavailable => JoinResult::Unavailable,
    }
}

/// The error code a refusal is sent with (every one of them is fatal: the socket closes).
fn refusal_code(refusal: Refusal) -> ErrorCode {
    match refusal {
        Refusal::Unauthorized => ErrorCode::Unauthorized,
        Refusal::NotFound => ErrorCode::NotFound,
        Refusal::Full | Refusal::ServerFull | Refusal::ShuttingDown | Refusal::Unavailable => {
            ErrorCode::ServiceUnavailable
        }
    }
}

/// Waits for a valid `join` and hands it to admission; also returns when the `join` frame arrived, to time the
/// join until `joined` is sent. None: the socket was refused (and closed), or the client went away.
async fn join(state: &AppState, socket: &mut Socket) -> Option<(Session, Instant)> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        let frame = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                refuse(socket, JoinResult::Timeout, ErrorCode::Unauthorized, "no join message received in time").await;
                return None;
            }
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(frame))) => frame,
        };
        let received = Instant::now();
        let text = match frame {
            Message::Text(t) => t,
            Message::Binary(_) => {
                if !reject(socket, ErrorCode::BadRequest, "binary frames are not part of the protocol").await {
                    return None;
                }
                continue;
            }
            _ => continue,
        };
        let request = match parse(&text) {
            Ok(ClientMessage::Join { token, audio_muted, video_muted }) => JoinRequest { token, audio_muted, video_muted },
            Ok(ClientMessage::Ping { ts }) => {
                socket.send(&ServerMessage::Pong { ts }).await;
                continue;
            }
            Ok(_) => {
                // Unauthorized is fatal: this ends the socket.
                refuse(socket, JoinResult::Unauthorized, ErrorCode::Unauthorized, "the first message must be join").await;
                return None;
            }
            Err(message) => {
                if !reject(socket, ErrorCode::BadRequest, &message).await {
                    return None;
                }
                continue;
            }
        };
        return match state.admission.admit(request).await {
            // Counted as `ok` when `joined` has been sent (in `relay`).
            Ok(session) => Some((session, received)),
            Err(refusal) => {
                refuse(socket, join_result(refusal), refusal_code(refusal), &refusal.message()).await;
                None
            }
        };
    }
}

/// Moves messages both ways until either side is done. The room queues `joined` first, so the first
/// message sent ends the timed join that began at `join_received`.
async fn relay(socket: &mut Socket, mut session: Session, join_received: Instant) {
    let mut join_pending = true;
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let text = match frame {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        if !reject(socket, ErrorCode::BadRequest, "binary frames are not part of the protocol").await {
                            return;
                        }
                        continue;
                    }
                    Some(Ok(_)) => continue, // ping/pong: the WebSocket layer answers pings itself
                };
                match parse(&text) {
                    Ok(msg) => session.handle(msg).await,
                    Err(message) => {
                        if !reject(socket, ErrorCode::BadRequest, &message).await {
                            return;
                        }
                    }
                }
            }
            out = session.outbound.recv() => match out {
                Some(Outbound::Message(msg)) => {
                    if !socket.send(&msg).await {
                        return;
                    }
                    if join_pending && matches!(msg, ServerMessage::Joined { .. }) {
                        join_pending = false;
                        socket.metrics.join_finished(JoinResult::Ok, Some(join_received.elapsed()));
                    }
                }
                Some(Outbound::Close) | None => {
                    socket.close(1000, "bye").await;
                    return;
                }
            },
        }
    }
}
