//! `/api/appointments` and `/api/outbox`: the clinic's scheduling and its notifications, as JSON. The three
//! seed columns keep their column names in JSON (`modality`, `telehealth_room_id`, `telehealth_link`), and so,
//! for one naming rule, do the other fields. Errors are the contract's (`{"success":false,"error":{…}}`).

use super::caller::{ListenerScheme, origin};
use super::console::Practitioner;
use super::error::{ApiError, ErrorCode};
use super::json::object_only;
use crate::app::AppState;
use crate::appointments::{AppointmentError, AppointmentPatch, Created, NewAppointment};
use crate::ids::{AppointmentId, OutboxId};
use crate::store::appointments::{AppointmentRecord, AppointmentStatus, Modality};
use crate::store::outbox::{OutboxMessage, OutboxState};
use crate::store::{AuditAction, AuditEntry, audit, outbox};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

impl From<AppointmentError> for ApiError {
    fn from(e: AppointmentError) -> Self {
        match e {
            AppointmentError::Invalid(i) => ApiError::bad_request(i.to_string()),
            AppointmentError::NotFound => ApiError::not_found("the appointment does not exist"),
            AppointmentError::Cancelled | AppointmentError::Concurrent => ApiError::new(ErrorCode::Conflict, e.to_string()),
            AppointmentError::Meeting(m) => m.into(),
            AppointmentError::Store(s) => s.into(),
        }
    }
}

/// A JSON object (`object_only!`), with these fields and no others.
#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct CreateBody {
    client_name: String,
    #[serde(default)]
    client_email: Option<String>,
    #[serde(default)]
    client_phone: Option<String>,
    practitioner: String,
    start_time: String,
    duration_minutes: i64,
    modality: String,
}

object_only!(CreateBody, "a JSON object with the appointment's fields");

/// Absent: unchanged. For the two optional contacts, `null` clears. A JSON object (`object_only!`).
#[derive(Deserialize, Default)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct PatchBody {
    client_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    client_email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    client_phone: Option<Option<String>>,
    practitioner: Option<String>,
    start_time: Option<String>,
    duration_minutes: Option<i64>,
    modality: Option<String>,
}

object_only!(PatchBody, "a JSON object with the fields to change");

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    from: Option<String>,
    to: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    state: Option<String>,
    appointment_id: Option<String>,
}

fn time(field: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::bad_request(format!("{field} must be an RFC 3339 time with its offset, like 2026-12-24T15:30:00-05:00")))
}

/// The optional `Idempotency-Key` header: 1–255 visible ASCII characters (a UUID, typically).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let key = v.to_str().ok().map(str::trim).filter(|k| (1..=255).contains(&k.len()) && k.chars().all(|c| c.is_ascii_graphic()));
    key.map(|k| Some(k.to_owned())).ok_or_else(|| ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters"))
}

fn modality(s: &str) -> Result<Modality, ApiError> {
    Modality::parse(s).ok_or_else(|| ApiError::bad_request("modality must be 'in-person' or 'telehealth'"))
}

/// The path's `{id}`. One that does not even decode (percent-encoded bytes that are not UTF-8) names nothing,
/// like any other id that is not a GUID: axum's own rejection would be a plain-text 400 repeating it.
fn path_id(p: Result<Path<String>, PathRejection>) -> String {
    p.map(|Path(id)| id).unwrap_or_default()
}

fn appointment_id(s: &str) -> Result<AppointmentId, ApiError> {
    AppointmentId::parse(s).ok_or_else(|| ApiError::not_found("the appointment does not exist"))
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(ApiError::from)
}

pub fn appointment_json(a: &AppointmentRecord) -> Value {
    json!({
        "id": a.id,
        "client_name": a.client_name,
        "client_email": a.client_email,
        "client_phone": a.client_phone,
        "practitioner": a.practitioner,
        "start_time": a.start_time,
        "duration_minutes": a.duration_minutes,
        "modality": a.modality.as_str(),
        "telehealth_room_id": a.telehealth_room_id,
        "telehealth_link": a.telehealth_link,
        "status": a.status.as_str(),
        "created_at": a.created_at,
        "updated_at": a.updated_at,
    })
}

fn message_json(m: &OutboxMessage) -> Value {
    json!({
        "id": m.id,
        "appointment_id": m.appointment_id,
        "kind": m.kind,
        "channel": m.channel.as_str(),
        "recipient": m.recipient,
        "subject": m.subject,
        "state": m.state.as_str(),
        "attempts": m.attempts,
        "not_before": m.not_before,
        "next_attempt_at": m.next_attempt_at,
        "sent_at": m.sent_at,
        "last_error": m.last_error,
        "created_at": m.created_at,
    })
}

/// Any other method on these routes: 405 naming the methods the route takes (`allow`, e.g. `GET, POST`).
pub fn wrong_method(allow: &'static str) -> ApiError {
    ApiError::method_not_allowed(allow, format!("this route takes {allow} (see the README's Appointments table)"))
}

fn ok(mut body: Value) -> Response {
    body["success"] = json!(true);
    Json(body).into_response()
}

pub async fn create(
    State(state): State<AppState>,
    who: Practitioner,
    scheme: Option<Extension<ListenerScheme>>,
    headers: HeaderMap,
    uri: Uri,
    b: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = who.actor();
    let b = body(b)?;
    let idempotency_key = idempotency_key(&headers)?;
    let new = NewAppointment {
        client_name: b.client_name,
        client_email: b.client_email,
        client_phone: b.client_phone,
        practitioner: b.practitioner,
        start_time: time("start_time", &b.start_time)?,
        duration_minutes: b.duration_minutes,
        modality: modality(&b.modality)?,
        idempotency_key,
    };
    let origin = origin(&state, scheme.map(|e| e.0).unwrap_or(ListenerScheme::Http), &headers, &uri);
    let (rec, created) = state.appointments.create(new, &caller, &origin).await?;
    state.outbox_wake.notify_one();
    // A replay answers what the first request got, with 200: nothing was created now.
    let status = if created == Created::New { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, ok(json!({"appointment": appointment_json(&rec)}))).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    _who: Practitioner,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let from = q.from.as_deref().map(|s| time("from", s)).transpose()?.unwrap_or_else(|| Utc::now() - Duration::hours(12));
    let to = q.to.as_deref().map(|s| time("to", s)).transpose()?.unwrap_or(from + Duration::days(62));
    if to < from {
        return Err(ApiError::bad_request("to must not be before from"));
    }
    let status = q
        .status
        .as_deref()
        .map(|s| AppointmentStatus::parse(s).ok_or_else(|| ApiError::bad_request("status must be 'scheduled' or 'cancelled'")))
        .transpose()?;
    let list = state.appointments.list(from, to, status).await?;
    Ok(ok(json!({"appointments": list.iter().map(appointment_json).collect::<Vec<_>>()})))
}

pub async fn get(
    State(state): State<AppState>,
    _who: Practitioner,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let rec = state.appointments.get(appointment_id(&path_id(id))?).await?;
    Ok(ok(json!({"appointment": appointment_json(&rec)})))
}

pub async fn update(
    State(state): State<AppState>,
    who: Practitioner,
    scheme: Option<Extension<ListenerScheme>>,
    headers: HeaderMap,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
    b: Result<Json<PatchBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = who.actor();
    let id = appointment_id(&path_id(id))?;
    let b = body(b)?;
    let patch = AppointmentPatch {
        client_name: b.client_name,
        client_email: b.client_email,
        client_phone: b.client_phone,
        practitioner: b.practitioner,
        start_time: b.start_time.as_deref().map(|s| time("start_time", s)).transpose()?,
        duration_minutes: b.duration_minutes,
        modality: b.modality.as_deref().map(modality).transpose()?,
    };
    let origin = origin(&state, scheme.map(|e| e.0).unwrap_or(ListenerScheme::Http), &headers, &uri);
    let rec = state.appointments.update(id, patch, &caller, &origin).await?;
    state.outbox_wake.notify_one();
    Ok(ok(json!({"appointment": appointment_json(&rec)})))
}

pub async fn cancel(
    State(state): State<AppState>,
    who: Practitioner,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let caller = who.actor();
    let rec = state.appointments.cancel(appointment_id(&path_id(id))?, &caller).await?;
    state.outbox_wake.notify_one();
    Ok(ok(json!({"appointment": appointment_json(&rec)})))
}

pub async fn outbox_list(
    State(state): State<AppState>,
    _who: Practitioner,
    q: Result<Query<OutboxQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let st = q
        .state
        .as_deref()
        .map(|s| OutboxState::parse(s).ok_or_else(|| ApiError::bad_request("state is not a message state")))
        .transpose()?;
    let appt = q
        .appointment_id
        .as_deref()
        .map(|s| AppointmentId::parse(s).ok_or_else(|| ApiError::bad_request("appointment_id is not a GUID")))
        .transpose()?;
    let list = state.store.list_outbox(st, appt, 500).await?;
    Ok(ok(json!({"messages": list.iter().map(message_json).collect::<Vec<_>>()})))
}

pub async fn outbox_retry(
    State(state): State<AppState>,
    who: Practitioner,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = OutboxId::parse(&path_id(id)).ok_or_else(|| ApiError::not_found("the message does not exist"))?;
    let Some(before) = state.store.outbox_message(id).await? else { return Err(ApiError::not_found("the message does not exist")) };
    let line = AuditEntry {
        action: AuditAction::NotificationRetried,
        appointment_id: before.appointment_id,
        actor: who.actor(),
        detail: Some(format!("channel={} kind={}", before.channel.as_str(), before.kind)),
        ..Default::default()
    };
    let retried = state
        .store
        .write((id, line), |c, (id, line)| {
            Box::pin(async move {
                let retried = outbox::retry(c, *id, Utc::now()).await?;
                if retried {
                    audit::append(c, line).await?;
                }
                Ok(retried)
            })
        })
        .await?;
    let Some(m) = state.store.outbox_message(id).await? else { return Err(ApiError::not_found("the message does not exist")) };
    if !retried {
        let why = format!("only a failed or unknown message can be retried (this one is {})", m.state.as_str());
        return Err(ApiError::new(ErrorCode::Conflict, why));
    }
    state.outbox_wake.notify_one();
    Ok(ok(json!({"message": message_json(&m)})))
}
