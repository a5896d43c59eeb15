//! GET /ws: the signaling socket. This handler only turns frames into `signaling` messages and back;
//! the room decides what they mean.
//!
//! The first frame must be `join` with a JoinToken, within `JOIN_TIMEOUT`. A forged, expired or missing
//! token, or a deleted meeting, gets an error frame and the socket closes. Malformed frames later on get
//! a `BadRequest` error and the socket stays open.

use crate::app::AppState;
use crate::ids::{AttendeeId, MeetingId};
use crate::room::{JoinError, Outbound, Session};
use crate::store::{AuditAction, AuditEntry};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;
use signaling::{ClientMessage, ErrorCode, MAX_FRAME_BYTES, ServerMessage};
use std::time::Duration;

const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| run(state, socket))
}

async fn send(socket: &mut WebSocket, msg: &ServerMessage) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

/// Sends an error and, for fatal codes, closes the socket. Returns false if the socket is done.
async fn reject(socket: &mut WebSocket, code: ErrorCode, message: &str) -> bool {
    let alive = send(socket, &ServerMessage::error(code, message)).await;
    if code.is_fatal() || !alive {
        close(socket, 4000 + close_code(code), message).await;
        return false;
    }
    true
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

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from(reason.to_owned()) };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// Parses one text frame. Errors are phrased for the client; they never echo its content back.
fn parse(text: &str) -> Result<ClientMessage, String> {
    serde_json::from_str(text).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() { "frame is not valid JSON" } else { "frame is not a valid message" };
        format!("{what} (line {}, column {})", e.line(), e.column())
    })
}

async fn run(state: AppState, mut socket: WebSocket) {
    let Some(session) = join(&state, &mut socket).await else { return };
    let (meeting_id, attendee_id) = (session.meeting_id, session.attendee_id);
    tracing::info!(meeting = %meeting_id, attendee = %attendee_id, "participant joined");
    audit(&state, AuditAction::AttendeeJoined, meeting_id, attendee_id).await;
    relay(&mut socket, session).await;
    tracing::info!(meeting = %meeting_id, attendee = %attendee_id, "participant left");
    audit(&state, AuditAction::AttendeeLeft, meeting_id, attendee_id).await;
}

async fn audit(state: &AppState, action: AuditAction, meeting_id: MeetingId, attendee_id: AttendeeId) {
    let entry = AuditEntry { action, meeting_id: Some(meeting_id), attendee_id: Some(attendee_id), ..Default::default() };
    if let Err(e) = state.store.append_audit(entry).await {
        tracing::error!(error = %e, "audit write failed");
    }
}

/// Waits for a valid `join` and enters the room. None: the socket was refused (and closed).
async fn join(state: &AppState, socket: &mut WebSocket) -> Option<Session> {
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    loop {
        let frame = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                reject(socket, ErrorCode::Unauthorized, "no join message received in time").await;
                return None;
            }
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(frame))) => frame,
        };
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
        let (token, audio_muted, video_muted) = match parse(&text) {
            Ok(ClientMessage::Join { token, audio_muted, video_muted }) => (token, audio_muted, video_muted),
            Ok(ClientMessage::Ping { ts }) => {
                send(socket, &ServerMessage::Pong { ts }).await;
                continue;
            }
            Ok(_) => {
                if !reject(socket, ErrorCode::Unauthorized, "the first message must be join").await {
                    return None;
                }
                continue;
            }
            Err(message) => {
                if !reject(socket, ErrorCode::BadRequest, &message).await {
                    return None;
                }
                continue;
            }
        };
        let claims = match state.auth.verify_join_token(&token) {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(reason = %e, "join refused: bad token");
                reject(socket, ErrorCode::Unauthorized, "the join token is invalid or has expired").await;
                return None;
            }
        };
        let attendee = match state.store.find_live_attendee(claims.meeting_id, claims.attendee_id).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                reject(socket, ErrorCode::NotFound, "this meeting has ended or does not exist").await;
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "attendee lookup failed");
                reject(socket, ErrorCode::ServiceUnavailable, "the service is temporarily unavailable").await;
                return None;
            }
        };
        if state.shutdown.is_triggered() {
            reject(socket, ErrorCode::ServiceUnavailable, "the server is shutting down").await;
            return None;
        }
        let name = attendee.external_user_id.as_str().to_owned();
        return match state.rooms.join(claims.meeting_id, claims.attendee_id, name, audio_muted, video_muted) {
            Ok(session) => Some(session),
            Err(e @ (JoinError::Full | JoinError::ShuttingDown)) => {
                reject(socket, ErrorCode::ServiceUnavailable, &e.to_string()).await;
                None
            }
        };
    }
}

/// Moves messages both ways until either side is done.
async fn relay(socket: &mut WebSocket, mut session: Session) {
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
                    Ok(msg) => session.handle(msg),
                    Err(message) => {
                        if !reject(socket, ErrorCode::BadRequest, &message).await {
                            return;
                        }
                    }
                }
            }
            out = session.outbound.recv() => match out {
                Some(Outbound::Message(msg)) => {
                    if !send(socket, &msg).await {
                        return;
                    }
                }
                Some(Outbound::Close) | None => {
                    close(socket, 1000, "bye").await;
                    return;
                }
            },
        }
    }
}
