//! `/api/appointments` and `/api/outbox` end to end on the real server (SQLite here; PostgreSQL in
//! `appointments_postgres`): the seed's columns, meetings made and removed with the modality, validation,
//! and the messages each change queues. No SMTP or SNS is configured, so messages wait in the outbox as they
//! would in an offline clinic (delivery is tested in `notify.rs`).

mod common;

use chrono::{Duration, Utc};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

pub async fn call(s: &TestServer, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = s.client.request(method, s.url(path)).bearer_auth(&s.key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON: {text:?}")))
}

fn visit(modality: &str, minutes_ahead: i64) -> Value {
    json!({
        "client_name": "Jordan Example",
        "client_email": "jordan@example.com",
        "client_phone": "+14155550123",
        "practitioner": "Dr. Rivera",
        "start_time": (Utc::now() + Duration::minutes(minutes_ahead)).to_rfc3339(),
        "duration_minutes": 45,
        "modality": modality,
    })
}

async fn create(s: &TestServer, body: Value) -> Value {
    let (status, res) = call(s, reqwest::Method::POST, "/api/appointments", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{res}");
    assert_eq!(res["success"], true);
    res["appointment"].clone()
}

async fn messages(s: &TestServer, appointment: &str) -> Vec<Value> {
    let (status, res) = call(s, reqwest::Method::GET, &format!("/api/outbox?appointment_id={appointment}"), None).await;
    assert_eq!(status, StatusCode::OK, "{res}");
    res["messages"].as_array().unwrap().clone()
}

fn count(msgs: &[Value], kind: &str, state: &str) -> usize {
    msgs.iter().filter(|m| m["kind"] == kind && m["state"] == state).count()
}

#[tokio::test]
async fn a_telehealth_appointment_gets_a_meeting_a_link_and_its_messages() {
    let s = TestServer::start_with(|c| c.app_url = Some("https://clinic.example".into())).await;
    let a = create(&s, visit("telehealth", 3 * 24 * 60)).await;
    assert_eq!(a["modality"], "telehealth");
    assert_eq!(a["status"], "scheduled");
    let room = a["telehealth_room_id"].as_str().unwrap();
    assert!(is_guid(room));
    let link = a["telehealth_link"].as_str().unwrap();
    assert!(link.starts_with(&format!("https://clinic.example/telehealth-aws.html?meeting={room}&invite=")), "{link}");

    // The meeting is real and belongs to the appointment: create-meeting for it finds the same one.
    let (status, m) = s.api(json!({"action": "get-meeting", "meetingId": room})).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let (_, again) = s.api(json!({"action": "create-meeting", "appointmentId": a["id"]})).await;
    assert_eq!(again["meeting"]["MeetingId"], room);

    // Confirmation on both channels, and a reminder 24 h and 1 h before, each on both channels.
    let msgs = messages(&s, a["id"].as_str().unwrap()).await;
    assert_eq!(count(&msgs, "confirmation", "pending"), 2, "{msgs:#?}");
    assert_eq!(count(&msgs, "reminder", "pending"), 4, "{msgs:#?}");
    s.stop().await;
}

#[tokio::test]
async fn switching_modality_makes_or_removes_the_meeting_and_cancelling_withdraws_reminders() {
    let s = TestServer::start().await;
    let a = create(&s, visit("in-person", 3 * 24 * 60)).await;
    let id = a["id"].as_str().unwrap().to_owned();
    assert!(a["telehealth_room_id"].is_null() && a["telehealth_link"].is_null());

    let (status, b) = call(&s, reqwest::Method::PATCH, &format!("/api/appointments/{id}"), Some(json!({"modality": "telehealth"}))).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let room = b["appointment"]["telehealth_room_id"].as_str().unwrap().to_owned();
    assert!(b["appointment"]["telehealth_link"].as_str().unwrap().contains(&room));
    let msgs = messages(&s, &id).await;
    assert_eq!(count(&msgs, "update", "pending"), 2, "{msgs:#?}");
    assert_eq!(count(&msgs, "reminder", "withdrawn"), 4, "the in-person reminders are withdrawn");
    assert_eq!(count(&msgs, "reminder", "pending"), 4, "and made again for the video visit");

    let (status, c) = call(&s, reqwest::Method::PATCH, &format!("/api/appointments/{id}"), Some(json!({"modality": "in-person"}))).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert!(c["appointment"]["telehealth_room_id"].is_null() && c["appointment"]["telehealth_link"].is_null());
    let (status, _) = s.api(json!({"action": "get-meeting", "meetingId": room})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the meeting is deleted with the switch");

    let (status, d) = call(&s, reqwest::Method::PATCH, &format!("/api/appointments/{id}"), Some(json!({"modality": "telehealth"}))).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    let room2 = d["appointment"]["telehealth_room_id"].as_str().unwrap().to_owned();
    assert_ne!(room2, room, "a fresh meeting, the old one being gone");

    let (status, e) = call(&s, reqwest::Method::POST, &format!("/api/appointments/{id}/cancel"), None).await;
    assert_eq!(status, StatusCode::OK, "{e}");
    assert_eq!(e["appointment"]["status"], "cancelled");
    assert!(e["appointment"]["telehealth_room_id"].is_null());
    let (status, _) = s.api(json!({"action": "get-meeting", "meetingId": room2})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let msgs = messages(&s, &id).await;
    assert_eq!(count(&msgs, "reminder", "pending") + count(&msgs, "update", "pending"), 0, "{msgs:#?}");
    assert_eq!(count(&msgs, "cancellation", "pending"), 2);

    let (status, f) = call(&s, reqwest::Method::PATCH, &format!("/api/appointments/{id}"), Some(json!({"practitioner": "Dr. Who"}))).await;
    assert_eq!((status, error_code(&f)), (StatusCode::CONFLICT, "Conflict"), "a cancelled appointment stays as it was");
    s.stop().await;
}

#[tokio::test]
async fn a_visit_half_an_hour_ahead_gets_one_reminder_at_once() {
    let s = TestServer::start().await;
    let a = create(&s, visit("telehealth", 30)).await;
    let msgs = messages(&s, a["id"].as_str().unwrap()).await;
    let reminders: Vec<_> = msgs.iter().filter(|m| m["kind"] == "reminder").collect();
    assert_eq!(reminders.len(), 2, "one reminder per channel, not one per past offset: {msgs:#?}");
    for r in reminders {
        let due = chrono::DateTime::parse_from_rfc3339(r["not_before"].as_str().unwrap()).unwrap();
        assert!(due <= Utc::now(), "due now");
    }
    s.stop().await;
}

#[tokio::test]
async fn listing_goes_by_start_time_range_and_status() {
    let s = TestServer::start().await;
    let near = create(&s, visit("in-person", 60)).await;
    let far = create(&s, visit("in-person", 10 * 24 * 60)).await;
    let cancelled = create(&s, visit("in-person", 120)).await;
    call(&s, reqwest::Method::POST, &format!("/api/appointments/{}/cancel", cancelled["id"].as_str().unwrap()), None).await;

    let to = (Utc::now() + Duration::days(2)).to_rfc3339();
    let url = format!("/api/appointments?to={}&status=scheduled", urlencoding(&to));
    let (status, res) = call(&s, reqwest::Method::GET, &url, None).await;
    assert_eq!(status, StatusCode::OK, "{res}");
    let ids: Vec<_> = res["appointments"].as_array().unwrap().iter().map(|a| a["id"].clone()).collect();
    assert_eq!(ids, [near["id"].clone()]);
    let (_, all) = call(&s, reqwest::Method::GET, "/api/appointments", None).await;
    let ids: Vec<_> = all["appointments"].as_array().unwrap().iter().map(|a| a["id"].clone()).collect();
    assert_eq!(ids, [near["id"].clone(), cancelled["id"].clone(), far["id"].clone()], "by start time");
    s.stop().await;
}

fn urlencoding(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn bad_input_gets_the_contracts_errors_and_stores_nothing() {
    let s = TestServer::start().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"client_email": "not-an-address"}), "client_email"),
        (json!({"client_phone": "415-555-0123"}), "client_phone"),
        (json!({"start_time": (Utc::now() - Duration::minutes(1)).to_rfc3339()}), "start_time"),
        (json!({"start_time": "tomorrow at noon"}), "start_time"),
        (json!({"duration_minutes": 4}), "duration_minutes"),
        (json!({"duration_minutes": 481}), "duration_minutes"),
        (json!({"client_name": ""}), "client_name"),
        (json!({"client_name": "x".repeat(101)}), "client_name"),
        (json!({"practitioner": "  "}), "practitioner"),
        (json!({"modality": "video"}), "modality"),
    ];
    for (change, field) in cases {
        let mut body = visit("telehealth", 60);
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, res) = call(&s, reqwest::Method::POST, "/api/appointments", Some(body)).await;
        assert_eq!((status, error_code(&res)), (StatusCode::BAD_REQUEST, "BadRequest"), "{field}: {res}");
        let message = res["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{field}: {message}");
    }
    // Wrong types, unknown fields, malformed JSON, no key, unknown ids.
    let mut typed = visit("telehealth", 60);
    typed["duration_minutes"] = json!("forty");
    let (status, res) = call(&s, reqwest::Method::POST, "/api/appointments", Some(typed)).await;
    assert!(status.is_client_error() && res["success"] == false, "{status} {res}");
    let mut extra = visit("telehealth", 60);
    extra["surprise"] = json!(1);
    let (status, res) = call(&s, reqwest::Method::POST, "/api/appointments", Some(extra)).await;
    assert!(status.is_client_error() && res["success"] == false, "{status} {res}");
    let res = s.client.post(s.url("/api/appointments")).bearer_auth(&s.key).header("content-type", "application/json").body("{\"client_name\":").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = s.client.post(s.url("/api/appointments")).json(&visit("telehealth", 60)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let big = json!({"client_name": "x".repeat(200_000)});
    let res = s.client.post(s.url("/api/appointments")).bearer_auth(&s.key).json(&big).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    for path in ["/api/appointments/not-a-guid", &format!("/api/appointments/{}", uuid::Uuid::new_v4())] {
        let (status, res) = call(&s, reqwest::Method::GET, path, None).await;
        assert_eq!((status, error_code(&res)), (StatusCode::NOT_FOUND, "NotFound"), "{path}");
    }
    let (status, res) = call(&s, reqwest::Method::GET, "/api/appointments?status=maybe", None).await;
    assert_eq!((status, error_code(&res)), (StatusCode::BAD_REQUEST, "BadRequest"));
    let (status, res) = call(&s, reqwest::Method::GET, "/api/outbox?state=lost", None).await;
    assert_eq!((status, error_code(&res)), (StatusCode::BAD_REQUEST, "BadRequest"));
    let (status, res) = call(&s, reqwest::Method::POST, &format!("/api/outbox/{}/retry", uuid::Uuid::new_v4()), None).await;
    assert_eq!((status, error_code(&res)), (StatusCode::NOT_FOUND, "NotFound"));

    let (_, all) = call(&s, reqwest::Method::GET, "/api/appointments", None).await;
    assert_eq!(all["appointments"].as_array().unwrap().len(), 0, "nothing refused was stored");
    let (_, out) = call(&s, reqwest::Method::GET, "/api/outbox", None).await;
    assert_eq!(out["messages"].as_array().unwrap().len(), 0);

    // The same rules on a change; a refused change leaves the appointment as it was.
    let a = create(&s, visit("in-person", 60)).await;
    let path = format!("/api/appointments/{}", a["id"].as_str().unwrap());
    for (change, field) in [
        (json!({"client_phone": "12345"}), "client_phone"),
        (json!({"duration_minutes": 1000}), "duration_minutes"),
        (json!({"start_time": (Utc::now() - Duration::hours(1)).to_rfc3339()}), "start_time"),
        (json!({"modality": "phone"}), "modality"),
    ] {
        let (status, res) = call(&s, reqwest::Method::PATCH, &path, Some(change)).await;
        assert_eq!((status, error_code(&res)), (StatusCode::BAD_REQUEST, "BadRequest"), "{field}: {res}");
    }
    let (status, res) = call(&s, reqwest::Method::PATCH, &path, Some(json!({"surprise": true}))).await;
    assert!(status.is_client_error() && res["success"] == false, "{status} {res}");
    let (_, same) = call(&s, reqwest::Method::GET, &path, None).await;
    assert_eq!(same["appointment"], a);
    let (status, res) = call(&s, reqwest::Method::POST, &format!("/api/appointments/{}/cancel", uuid::Uuid::new_v4()), None).await;
    assert_eq!((status, error_code(&res)), (StatusCode::NOT_FOUND, "NotFound"));
    let (status, res) = call(&s, reqwest::Method::DELETE, &path, None).await;
    assert!(status.is_client_error() && res["success"] == false, "{status} {res}");
    s.stop().await;
}

#[tokio::test]
async fn only_failed_or_unknown_messages_can_be_retried() {
    let s = TestServer::start().await;
    let a = create(&s, visit("in-person", 3 * 24 * 60)).await;
    let msgs = messages(&s, a["id"].as_str().unwrap()).await;
    let id = msgs[0]["id"].as_str().unwrap();
    let (status, res) = call(&s, reqwest::Method::POST, &format!("/api/outbox/{id}/retry"), None).await;
    assert_eq!((status, error_code(&res)), (StatusCode::CONFLICT, "Conflict"), "{res}");
    s.stop().await;
}

#[tokio::test]
async fn a_create_retried_with_its_idempotency_key_returns_the_first_appointment_and_makes_nothing_new() {
    let s = TestServer::start().await;
    let body = visit("telehealth", 3 * 24 * 60);
    let post = |key: &'static str| {
        s.client.post(s.url("/api/appointments")).bearer_auth(&s.key).header("Idempotency-Key", key).json(&body).send()
    };
    let first = post("ehr-retry-0001").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    // A retry, and two more racing each other: all get the first appointment, with 200.
    let (a, b, c) = futures::join!(post("ehr-retry-0001"), post("ehr-retry-0001"), post("ehr-retry-0001"));
    for res in [a, b, c] {
        let res = res.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let again: Value = res.json().await.unwrap();
        assert_eq!(again["appointment"], first["appointment"]);
    }
    let (_, all) = call(&s, reqwest::Method::GET, &format!("/api/appointments?to={}", urlencoding(&(Utc::now() + Duration::days(5)).to_rfc3339())), None).await;
    assert_eq!(all["appointments"].as_array().unwrap().len(), 1, "one appointment");
    let msgs = messages(&s, first["appointment"]["id"].as_str().unwrap()).await;
    assert_eq!(count(&msgs, "confirmation", "pending"), 2, "one confirmation per channel, not one per request");
    // Another key is another appointment; a malformed key is refused.
    let other = post("ehr-retry-0002").await.unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);
    let bad = s.client.post(s.url("/api/appointments")).bearer_auth(&s.key).header("Idempotency-Key", "x".repeat(300)).json(&body).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    s.stop().await;
}

/// Found by the property tests (props_api.rs): an id whose percent-encoding is not UTF-8 got axum's plain-text
/// 400 repeating the id; it names no appointment, like any other id that is not a GUID.
#[tokio::test]
async fn an_id_that_does_not_decode_is_not_found_in_the_contracts_shape() {
    let s = TestServer::start().await;
    for (method, path) in [
        (reqwest::Method::GET, "/api/appointments/%FF%FE"),
        (reqwest::Method::PATCH, "/api/appointments/%C3"),
        (reqwest::Method::POST, "/api/appointments/%FFPat/cancel"),
        (reqwest::Method::POST, "/api/outbox/%FF/retry"),
    ] {
        let body = (method == reqwest::Method::PATCH).then(|| json!({"client_name": "Jordan Example"}));
        let (status, res) = call(&s, method, path, body).await;
        assert_eq!((status, error_code(&res)), (StatusCode::NOT_FOUND, "NotFound"), "{path}");
        assert!(!res["error"]["message"].as_str().unwrap().contains("Pat"), "{res}");
    }
    s.stop().await;
}

/// Found by the property tests (props_api.rs): serde's messages, passed on as they were, repeated the caller's
/// values and unknown keys (here a patient's name); the refusal names the field and the rule only. And the
/// positional (array) form serde's derive also reads is not a body.
#[tokio::test]
async fn a_refused_body_is_not_repeated_back() {
    let s = TestServer::start().await;
    let mut typed = visit("telehealth", 60);
    typed["duration_minutes"] = json!("Jordan Example");
    let mut unknown = visit("telehealth", 60);
    unknown["Jordan Example"] = json!(1);
    let positional = json!(["Jordan Example", null, null, "Dr. Rivera", (Utc::now() + Duration::days(3)).to_rfc3339(), 45, "in-person"]);
    for (body, names) in [(typed, "duration_minutes"), (unknown, "unknown field"), (positional, "expected a JSON object")] {
        let (status, res) = call(&s, reqwest::Method::POST, "/api/appointments", Some(body.clone())).await;
        assert_eq!((status, error_code(&res)), (StatusCode::BAD_REQUEST, "BadRequest"), "{body}");
        let message = res["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{message}");
        assert!(!message.contains("Jordan"), "{message}");
    }
    let (_, all) = call(&s, reqwest::Method::GET, "/api/appointments", None).await;
    assert_eq!(all["appointments"].as_array().unwrap().len(), 0, "nothing was stored");
    s.stop().await;
}
