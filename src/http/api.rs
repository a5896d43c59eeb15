//! `POST /api/aws-chime-video`: the Chime-compatible JSON contract (see DESIGN.md).
//!
//! Authentication:
//! - every action accepts `Authorization: Bearer <API key>`, or the practitioner console's session cookie with
//!   its `X-CSRF-Token` (`console::authenticate`; the bearer key wins when both are present);
//! - `create-attendee` alternatively accepts the meeting's invite token in the body field `invite` (the join
//!   page copies it from its `?invite=` query parameter). A body field rather than a header keeps the patient's
//!   page a plain same-origin JSON POST. An invite only works for its own meeting (403 otherwise) and for no
//!   other action (401: an invite is not a key). A console session with its CSRF token counts before an invite
//!   in the same request (the console's Join opens the visit's link, invite included);
//! - the caller fixes the attendee's role: a key or the console makes a host, an invite a guest.
//!
//! Status split: a body that is not JSON, has the wrong shape or types, or a `meetingId` that is not a GUID is
//! 400 BadRequest; a well-formed value that breaks one of Chime's limits (ExternalMeetingId / attendeeName
//! outside 2–64 printable characters, the 251st attendee) is 422 UnprocessableEntity.
//!
//! The body is parsed before authentication (the invite lives in it), so malformed JSON gets a 400 even
//! without credentials; nothing about stored data is revealed before the caller is authenticated.
//!
//! Timing: `timed` wraps the route and records every request's duration by action and status; the handler
//! names the action by putting an `ApiAction` into the response's extensions (only it has parsed the body).

use super::console;
use super::caller::{ListenerScheme, origin, require_key};
use super::error::{ApiError, ErrorCode};
use super::json::object_only;
use crate::app::AppState;
use crate::auth::{AuthError, Caller};
use crate::ids::{ExternalMeetingId, ExternalUserId, MeetingId, Provider, SessionId};
use crate::meetings::{CreateMeeting, Origin, PRESENCE_HEARTBEAT_SECS, Presence, join_path};
use chrono::{DateTime, NaiveDate, Utc};
use crate::metrics::ApiAction;
use crate::store::AuditActor;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Instant;

/// `error.reason` of a 401 for an invite past its expiry (the join page says the link has expired).
pub const INVITE_EXPIRED: &str = "InviteExpired";

/// A JSON object with an `action` (`object_only!`: not the positional form serde's derive also reads).
#[derive(Debug, Deserialize)]
#[serde(remote = "Self", tag = "action", rename_all = "kebab-case")]
pub enum ApiRequest {
    #[serde(rename_all = "camelCase")]
    CreateMeeting { appointment_id: Option<AppointmentRef>, external_meeting_id: Option<String>, ends_at: Option<String> },
    #[serde(rename_all = "camelCase")]
    CreateAttendee { meeting_id: String, attendee_name: String, invite: Option<String> },
    #[serde(rename_all = "camelCase")]
    DeleteMeeting { meeting_id: String },
    #[serde(rename_all = "camelCase")]
    GetMeeting { meeting_id: String },
    #[serde(rename_all = "camelCase")]
    ListAttendees { meeting_id: String },
    /// Our addition: attendee-minutes and estimated cost per day and provider.
    #[serde(rename_all = "camelCase")]
    GetUsage { from: Option<String>, to: Option<String>, meeting_id: Option<String> },
    /// Our addition: a Chime attendee's page reports joining, staying and leaving (its presence token).
    #[serde(rename_all = "camelCase")]
    AttendeePresence { token: String, event: PresenceEvent, session_id: Option<String> },
}

object_only!(ApiRequest, "a JSON object with an action");

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceEvent {
    Joined,
    Heartbeat,
    Left,
}

/// EHRs send appointment ids as numbers (the seed does) or strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AppointmentRef {
    Number(i64),
    Text(String),
}

impl ApiRequest {
    /// The metrics label: the variant, never the client's text.
    pub fn action(&self) -> ApiAction {
        match self {
            Self::CreateMeeting { .. } => ApiAction::CreateMeeting,
            Self::CreateAttendee { .. } => ApiAction::CreateAttendee,
            Self::DeleteMeeting { .. } => ApiAction::DeleteMeeting,
            Self::GetMeeting { .. } => ApiAction::GetMeeting,
            Self::ListAttendees { .. } => ApiAction::ListAttendees,
            Self::GetUsage { .. } => ApiAction::GetUsage,
            Self::AttendeePresence { .. } => ApiAction::AttendeePresence,
        }
    }
}

impl AppointmentRef {
    fn into_text(self) -> Result<String, ApiError> {
        let s = match self {
            AppointmentRef::Number(n) => n.to_string(),
            AppointmentRef::Text(s) => s,
        };
        if s.is_empty() || s.chars().count() > 64 || s.chars().any(char::is_control) {
            return Err(ApiError::unprocessable("appointmentId must be 1–64 printable characters"));
        }
        Ok(s)
    }
}

/// Middleware around the API route: times the request, whatever its outcome (including bodies the JSON
/// extractor refused and wrong methods, which count as `invalid`).
pub async fn timed(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let res = next.run(req).await;
    let action = res.extensions().get::<ApiAction>().copied().unwrap_or(ApiAction::Invalid);
    state.metrics.api_request(action, res.status(), started.elapsed());
    res
}

pub async fn handle(
    State(state): State<AppState>,
    scheme: Option<Extension<ListenerScheme>>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Json<ApiRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(req)) => req,
        Err(rejection) => return ApiError::from(rejection).into_response(),
    };
    let action = req.action();
    let origin = origin(&state, scheme.map(|e| e.0).unwrap_or(ListenerScheme::Http), &headers, &uri);
    let mut res = dispatch(&state, req, &origin, &headers).await.into_response();
    res.extensions_mut().insert(action);
    res
}

async fn dispatch(state: &AppState, req: ApiRequest, origin: &Origin, headers: &HeaderMap) -> Result<Response, ApiError> {
    match req {
        ApiRequest::CreateMeeting { appointment_id, external_meeting_id, ends_at } => {
            let caller = practitioner(state, headers)?;
            refuse_while_draining(state)?;
            let external_meeting_id = external_meeting_id
                .map(|s| ExternalMeetingId::parse(&s))
                .transpose()
                .map_err(|e| ApiError::unprocessable(e.to_string()))?;
            let appointment_id = appointment_id.map(AppointmentRef::into_text).transpose()?;
            let ends_at = ends_at.as_deref().map(parse_ends_at).transpose()?;
            // The service stores the `meeting.created` audit line with the meeting, atomically.
            let req = CreateMeeting { external_meeting_id, appointment_id, ends_at, created_by: actor(&caller) };
            let served = state.meetings.create_meeting(req, origin).await?;
            let meeting = &served.value;
            tracing::info!(meeting_id = %meeting.id, provider = %served.provider, "meeting created");
            // The link lives as long as the visit (plus `INVITE_GRACE`) when the caller said when it ends.
            let invite = state.auth.issue_invite(meeting.id, ends_at);
            let link = join_path(meeting.id, &invite);
            let mut body = json!({"meeting": meeting, "link": link});
            if let Some(f) = served.failover {
                body["failover"] = json!({"from": f.from, "reason": f.reason});
            }
            Ok(success(state, served.provider, body))
        }
        ApiRequest::CreateAttendee { meeting_id, attendee_name, invite } => {
            let meeting_id = parse_meeting_id(&meeting_id)?;
            let caller = key_or_invite(state, headers, invite.as_deref(), meeting_id)?;
            refuse_while_draining(state)?;
            let name = ExternalUserId::parse(&attendee_name).map_err(|e| ApiError::unprocessable(e.to_string()))?;
            // Stored with its `attendee.created` audit line, atomically: fail closed, never an unaudited seat.
            let served = state.meetings.create_attendee(meeting_id, name, caller.attendee_role(), &actor(&caller), origin).await?;
            let (attendee, meeting) = &served.value;
            tracing::info!(%meeting_id, attendee_id = %attendee.attendee_id, provider = %served.provider, "attendee created");
            // `meeting` is our addition: the patient's page learns its SignalingUrl (or Chime's MediaPlacement)
            // without an API key.
            let mut body = json!({"attendee": attendee, "meeting": meeting});
            if served.provider != Provider::Local {
                // Chime's media never passes through us: the page reports its presence, for usage.
                let token = state.auth.issue_presence_token(meeting_id, attendee.attendee_id, None);
                body["presence"] = json!({"token": token, "heartbeatSecs": PRESENCE_HEARTBEAT_SECS});
            }
            Ok(success(state, served.provider, body))
        }
        ApiRequest::DeleteMeeting { meeting_id } => {
            let caller = practitioner(state, headers)?;
            let meeting_id = parse_meeting_id(&meeting_id)?;
            let served = state.meetings.delete_meeting(meeting_id, &actor(&caller)).await?;
            tracing::info!(%meeting_id, "meeting deleted");
            Ok(success(state, served.provider, json!({})))
        }
        ApiRequest::GetMeeting { meeting_id } => {
            practitioner(state, headers)?;
            let served = state.meetings.get_meeting(parse_meeting_id(&meeting_id)?, origin).await?;
            Ok(success(state, served.provider, json!({"meeting": served.value})))
        }
        ApiRequest::ListAttendees { meeting_id } => {
            practitioner(state, headers)?;
            let served = state.meetings.list_attendees(parse_meeting_id(&meeting_id)?).await?;
            Ok(success(state, served.provider, json!({"attendees": served.value})))
        }
        ApiRequest::GetUsage { from, to, meeting_id } => {
            practitioner(state, headers)?;
            // Days are the clinic's: what "today" and a date mean to the people reading the report.
            let tz = state.config.notify.timezone;
            let today = Utc::now().with_timezone(&tz).date_naive();
            let to = to.as_deref().map(|d| parse_date("to", d)).transpose()?.unwrap_or(today);
            let from = from.as_deref().map(|d| parse_date("from", d)).transpose()?.unwrap_or(to - chrono::Days::new(29));
            if from > to || (to - from).num_days() > MAX_USAGE_DAYS {
                return Err(ApiError::unprocessable(format!("from must not be after to, and at most {MAX_USAGE_DAYS} days before it")));
            }
            let meeting = meeting_id.as_deref().map(parse_meeting_id).transpose()?;
            let usage = state.meetings.usage(from, to, meeting, Utc::now(), &state.config.lifecycle, tz).await?;
            Ok(succeeded(state, json!({"usage": usage})))
        }
        ApiRequest::AttendeePresence { token, event, session_id } => {
            let claims =
                state.auth.verify_presence_token(&token).map_err(|_| ApiError::unauthorized("the presence token is not valid"))?;
            let session = || {
                session_id
                    .as_deref()
                    .and_then(SessionId::parse)
                    .ok_or_else(|| ApiError::bad_request("sessionId (a GUID from the joined report) is required"))
            };
            let report = match event {
                PresenceEvent::Joined => Presence::Joined,
                PresenceEvent::Heartbeat => Presence::Heartbeat(session()?),
                PresenceEvent::Left => Presence::Left(session()?),
            };
            let id = state.meetings.presence(claims.meeting_id, claims.attendee_id, report).await?;
            Ok(Json(json!({"success": true, "sessionId": id, "heartbeatSecs": PRESENCE_HEARTBEAT_SECS})).into_response())
        }
    }
}

/// Any method but POST on the API route.
/// A path under `/api/` that names no route: the contract's JSON 404, whatever the method.
pub async fn no_such_route() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such API route (see the README's API section)")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed("POST", "use POST with a JSON body")
}

/// Every success carries `success`, `demoMode` and the `provider` of the meeting it is about next to Chime's
/// own fields.
fn success(state: &AppState, provider: Provider, mut body: Value) -> Response {
    body["provider"] = json!(provider);
    succeeded(state, body)
}

/// A success about no one meeting (e.g. usage): `success` and `demoMode` only.
fn succeeded(state: &AppState, mut body: Value) -> Response {
    body["success"] = json!(true);
    body["demoMode"] = json!(state.meetings.demo_mode());
    Json(body).into_response()
}

/// The longest range one usage report covers.
const MAX_USAGE_DAYS: i64 = 366;

/// `endsAt`: an RFC 3339 time in the future.
fn parse_ends_at(s: &str) -> Result<DateTime<Utc>, ApiError> {
    let at = DateTime::parse_from_rfc3339(s)
        .map_err(|_| ApiError::bad_request("endsAt must be an RFC 3339 time, e.g. 2026-12-03T15:30:00Z"))?
        .with_timezone(&Utc);
    if at <= Utc::now() {
        return Err(ApiError::unprocessable("endsAt must be in the future"));
    }
    Ok(at)
}

fn parse_date(field: &str, s: &str) -> Result<NaiveDate, ApiError> {
    s.parse().map_err(|_| ApiError::bad_request(format!("{field} must be a date, e.g. 2026-12-03")))
}

fn parse_meeting_id(s: &str) -> Result<MeetingId, ApiError> {
    MeetingId::parse(s).ok_or_else(|| ApiError::bad_request("meetingId must be a GUID"))
}

fn refuse_while_draining(state: &AppState) -> Result<(), ApiError> {
    if state.shutdown.is_triggered() {
        return Err(ApiError::new(ErrorCode::ServiceUnavailable, "the gateway is shutting down"));
    }
    Ok(())
}

/// The bearer key, or else a console session (the route is POST-only, so its CSRF token is always checked).
fn practitioner(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    console::authenticate(state, &Method::POST, headers).map(|p| p.caller)
}

/// Who may create an attendee: a key, a console session, or the meeting's invite. The caller decides the role
/// (`Caller::attendee_role`), so a practitioner joining from the console's browser must count as the console
/// even though the visit's link they open carries the patient's invite: a live session with its CSRF token wins
/// over the invite. Without both, the invite decides, exactly as for the patient (a stale cookie never locks
/// anyone out).
fn key_or_invite(state: &AppState, headers: &HeaderMap, invite: Option<&str>, meeting: MeetingId) -> Result<Caller, ApiError> {
    if headers.contains_key(header::AUTHORIZATION) {
        return require_key(state, headers);
    }
    if headers.contains_key(header::COOKIE)
        && let Ok(p) = console::authenticate(state, &Method::POST, headers)
    {
        return Ok(p.caller);
    }
    let Some(invite) = invite else {
        return Err(ApiError::unauthorized("an API key or the meeting's invite is required"));
    };
    let invited_to = state.auth.verify_invite(invite).map_err(|e| match e {
        // Worded for the patient: the join page shows it as it is.
        AuthError::Expired => ApiError::unauthorized("This link has expired. Please ask your clinic for a new one.")
            .with_reason(INVITE_EXPIRED),
        _ => ApiError::unauthorized("the invite is not valid"),
    })?;
    if invited_to != meeting {
        return Err(ApiError::forbidden("the invite is for another meeting"));
    }
    Ok(Caller::Invite { meeting_id: meeting })
}

fn actor(caller: &Caller) -> AuditActor {
    console::audit_actor(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_label_is_the_parsed_variant() {
        let cases = [
            (json!({"action": "create-meeting"}), "create-meeting"),
            (json!({"action": "create-attendee", "meetingId": "x", "attendeeName": "Pat Client"}), "create-attendee"),
            (json!({"action": "delete-meeting", "meetingId": "x"}), "delete-meeting"),
            (json!({"action": "get-meeting", "meetingId": "x"}), "get-meeting"),
            (json!({"action": "list-attendees", "meetingId": "x"}), "list-attendees"),
        ];
        for (body, label) in cases {
            let req: ApiRequest = serde_json::from_value(body).unwrap();
            assert_eq!(req.action().as_str(), label);
        }
        // An unknown action never becomes a label: it does not parse, and `timed` files it as `invalid`.
        assert!(serde_json::from_value::<ApiRequest>(json!({"action": "Pat Client's chart"})).is_err());
    }
}
