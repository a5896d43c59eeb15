//! Meetings over time, on the real server: automatic cleanup of both kinds (run as of a chosen time instead of
//! waiting), attendee sessions from real signaling sockets and from Chime pages' presence reports, and the
//! usage report's minutes and cost.

mod common;
mod support;

use chrono::{Duration as Span, Utc};
use common::*;
use fake_chime::{Credentials, FakeChime};
use reqwest::StatusCode;
use serde_json::{Value, json};
use signaling::{ClientMessage, SignalingClient};
use std::time::Duration;
use telehealth_gateway::ids::{AttendeeId, MeetingId, Provider, SessionId};
use telehealth_gateway::store::{AuditEntry, SessionRecord};

fn id(v: &Value) -> MeetingId {
    MeetingId::parse(&meeting_id(v)).unwrap()
}

async fn live(s: &TestServer, m: MeetingId) -> bool {
    s.state.store.find_live_meeting(m).await.unwrap().is_some()
}

async fn cleanup_at(s: &TestServer, at: chrono::DateTime<Utc>) -> Vec<(MeetingId, &'static str)> {
    s.state.meetings.cleanup(at, &s.state.config.lifecycle).await.unwrap().deleted
}

/// Joins a local meeting over the real signaling socket; the returned client keeps the participant in.
async fn join(s: &TestServer, meeting: &Value, name: &str) -> SignalingClient {
    let (status, att) = s.create_attendee(&meeting_id(meeting), name).await;
    assert_eq!(status, StatusCode::OK, "{att}");
    let url = meeting["meeting"]["MediaPlacement"]["SignalingUrl"].as_str().unwrap();
    let mut client = SignalingClient::connect(url).await.unwrap();
    let token = att["attendee"]["JoinToken"].as_str().unwrap().to_owned();
    client.send(&ClientMessage::Join { token, audio_muted: true, video_muted: true }).await.unwrap();
    support::ws::next(&mut client, Duration::from_secs(5)).await;
    client
}

/// Sessions of one meeting, once `done` holds for them (writes happen beside the call).
async fn sessions_when(s: &TestServer, m: MeetingId, done: impl Fn(&[SessionRecord]) -> bool) -> Vec<SessionRecord> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let from = Utc::now() - Span::days(1);
        let list = s.state.store.sessions_between(from, Utc::now() + Span::days(1), Some(m)).await.unwrap();
        if done(&list) {
            return list;
        }
        assert!(std::time::Instant::now() < deadline, "sessions never got there: {list:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

// ---------- cleanup ----------

#[tokio::test]
async fn a_chime_meeting_past_its_end_plus_grace_is_deleted_at_chime_and_marked_here() {
    let fake = FakeChime::start(Credentials::default()).await;
    let s = TestServer::with_chime(&fake, |_| {}).await;
    let ends = Utc::now() + Span::minutes(10);
    let m = s.api(json!({"action": "create-meeting", "endsAt": ends.to_rfc3339()})).await.1;
    let unbounded = s.api(json!({"action": "create-meeting"})).await.1;
    let grace = Span::from_std(s.state.config.lifecycle.grace).unwrap();

    assert!(cleanup_at(&s, ends + grace - Span::minutes(1)).await.is_empty(), "not before end + grace");
    assert_eq!(cleanup_at(&s, ends + grace + Span::minutes(1)).await, [(id(&m), "window")]);
    assert!(!fake.meeting_exists(&meeting_id(&m)), "deleted at Chime");
    assert!(!live(&s, id(&m)).await, "marked deleted here");
    let log = s.state.store.audit_for_meeting(id(&m)).await.unwrap();
    let last = log.last().unwrap();
    assert_eq!((last.action.as_str(), last.actor.as_str()), ("meeting.deleted", "system"));
    assert_eq!(last.detail.as_deref(), Some("provider=chime reason=window"));

    // Without an end, Chime's own 24-hour limit plus the grace period.
    assert!(cleanup_at(&s, Utc::now() + Span::hours(24)).await.is_empty());
    assert_eq!(cleanup_at(&s, Utc::now() + Span::hours(24) + grace + Span::minutes(1)).await, [(id(&unbounded), "window")]);
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&metrics, "telehealth_meetings_cleaned_total{provider=\"chime\",reason=\"window\"}"), 2.0);
}

#[tokio::test]
async fn a_chime_meeting_that_chime_already_ended_is_marked_deleted_by_the_cleanup() {
    let fake = FakeChime::start(Credentials::default()).await;
    let s = TestServer::with_chime(&fake, |_| {}).await;
    let ends = Utc::now() + Span::minutes(1);
    let m = s.api(json!({"action": "create-meeting", "endsAt": ends.to_rfc3339()})).await.1;
    fake.end_meeting(&meeting_id(&m));
    assert_eq!(cleanup_at(&s, ends + Span::hours(2)).await, [(id(&m), "window")]);
    assert!(!live(&s, id(&m)).await);
}

#[tokio::test]
async fn a_chime_meeting_whose_deletion_fails_stays_and_is_tried_again() {
    let fake = FakeChime::start(Credentials::default()).await;
    let s = TestServer::with_chime(&fake, |c| c.chime.max_attempts = 1).await;
    let ends = Utc::now() + Span::minutes(1);
    let m = s.api(json!({"action": "create-meeting", "endsAt": ends.to_rfc3339()})).await.1;
    fake.fail(None, fake_chime::Failure::unavailable(), Some(1));
    let report = s.state.meetings.cleanup(ends + Span::hours(2), &s.state.config.lifecycle).await.unwrap();
    assert_eq!((report.deleted.len(), report.failed), (0, 1));
    assert!(live(&s, id(&m)).await, "kept until Chime confirms");
    assert_eq!(cleanup_at(&s, ends + Span::hours(2)).await, [(id(&m), "window")]);
}

#[tokio::test]
async fn a_local_meeting_is_deleted_once_idle_after_its_last_participant_left_and_never_while_someone_is_in() {
    let s = TestServer::start().await;
    let visited = s.create_meeting().await;
    let never_joined = s.create_meeting().await;
    let occupied = s.create_meeting().await;
    let mut a = join(&s, &visited, "Dr. Smith").await;
    let _b = join(&s, &occupied, "Pat Client").await;
    a.send(&ClientMessage::Leave).await.unwrap();
    sessions_when(&s, id(&visited), |l| l.len() == 1 && l[0].ended_at.is_some()).await;
    sessions_when(&s, id(&occupied), |l| l.len() == 1).await;

    let idle = Span::from_std(s.state.config.lifecycle.local_idle).unwrap();
    assert!(cleanup_at(&s, Utc::now() + idle - Span::minutes(1)).await.is_empty(), "not idle long enough yet");
    assert_eq!(cleanup_at(&s, Utc::now() + idle + Span::minutes(1)).await, [(id(&visited), "idle")]);
    assert!(!live(&s, id(&visited)).await);
    assert!(live(&s, id(&never_joined)).await, "a meeting nobody has been in waits for its visit");
    assert!(live(&s, id(&occupied)).await, "someone is still in it");
    let log = s.state.store.audit_for_meeting(id(&visited)).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|l| l.action.as_str()).collect();
    assert_eq!(actions, ["meeting.created", "attendee.created", "attendee.joined", "attendee.left", "meeting.deleted"]);
    assert_eq!(log[4].detail.as_deref(), Some("provider=local reason=idle"));
}

#[tokio::test]
async fn a_local_meeting_past_its_end_is_deleted_once_nobody_is_in_it_and_its_tokens_end_with_it() {
    let s = TestServer::start().await;
    let ends = Utc::now() + Span::minutes(5);
    let m = s.api(json!({"action": "create-meeting", "endsAt": ends.to_rfc3339()})).await.1;
    let mut client = join(&s, &m, "Dr. Smith").await;
    let grace = Span::from_std(s.state.config.lifecycle.grace).unwrap();
    assert!(cleanup_at(&s, ends + grace + Span::minutes(1)).await.is_empty(), "someone is connected");
    client.send(&ClientMessage::Leave).await.unwrap();
    sessions_when(&s, id(&m), |l| l.iter().all(|x| x.ended_at.is_some())).await;
    assert_eq!(cleanup_at(&s, ends + grace + Span::minutes(1)).await, [(id(&m), "window")]);

    // JoinTokens of a meeting with an end expire at end + grace, not after the whole TTL.
    let m = s.api(json!({"action": "create-meeting", "endsAt": ends.to_rfc3339()})).await.1;
    let (_, att) = s.create_attendee(&meeting_id(&m), "Pat Client").await;
    let claims = s.state.auth.verify_join_token(att["attendee"]["JoinToken"].as_str().unwrap()).unwrap();
    assert_eq!(claims.expires_at, (ends + grace).timestamp());
}

#[tokio::test]
async fn ends_at_must_be_a_future_rfc_3339_time() {
    let s = TestServer::start().await;
    let (status, body) = s.api(json!({"action": "create-meeting", "endsAt": "tomorrow"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "BadRequest"));
    let past = (Utc::now() - Span::minutes(1)).to_rfc3339();
    let (status, body) = s.api(json!({"action": "create-meeting", "endsAt": past})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "UnprocessableEntity"));
}

// ---------- sessions and usage ----------

#[tokio::test]
async fn a_signaling_socket_records_one_session_from_join_to_leave() {
    let s = TestServer::start().await;
    let m = s.create_meeting().await;
    let mut client = join(&s, &m, "Dr. Smith").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.send(&ClientMessage::Leave).await.unwrap();
    let list = sessions_when(&s, id(&m), |l| l.len() == 1 && l[0].ended_at.is_some()).await;
    let held = list[0].ended_at.unwrap() - list[0].started_at;
    assert!(held >= Span::milliseconds(250) && held < Span::seconds(10), "{held}");
    assert_eq!(list[0].provider, Provider::Local);
    assert!(list[0].node.is_some(), "held by this process");
}

#[tokio::test]
async fn a_chime_page_reports_its_presence_and_a_silent_one_ends_where_it_was_last_seen() {
    let fake = FakeChime::start(Credentials::default()).await;
    let s = TestServer::with_chime(&fake, |_| {}).await;
    let m = s.api(json!({"action": "create-meeting"})).await.1;
    let (_, att) = s.create_attendee(&meeting_id(&m), "Pat Client").await;
    let token = att["presence"]["token"].as_str().unwrap().to_owned();
    let report = |event: &str, session: Option<&str>| {
        let mut body = json!({"action": "attendee-presence", "token": token, "event": event});
        if let Some(sid) = session {
            body["sessionId"] = json!(sid);
        }
        s.api_with(None, body)
    };
    let (status, joined) = report("joined", None).await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    let sid = joined["sessionId"].as_str().unwrap().to_owned();
    let (status, beat) = report("heartbeat", Some(&sid)).await;
    assert_eq!((status, &beat["sessionId"]), (StatusCode::OK, &json!(sid)));
    let (status, _) = report("left", Some(&sid)).await;
    assert_eq!(status, StatusCode::OK);
    let list = sessions_when(&s, id(&m), |l| l.len() == 1 && l[0].ended_at.is_some()).await;
    assert_eq!((list[0].provider, list[0].node.as_deref()), (Provider::Chime, None));

    // A page that goes silent: its session ends where it was last seen; its next heartbeat starts a new one.
    let (_, joined) = report("joined", None).await;
    let silent = joined["sessionId"].as_str().unwrap().to_owned();
    let report_time = s.state.meetings.cleanup(Utc::now() + Span::minutes(10), &s.state.config.lifecycle).await.unwrap();
    assert_eq!(report_time.stale_sessions_ended, 1);
    let (_, beat) = report("heartbeat", Some(&silent)).await;
    assert_ne!(beat["sessionId"], json!(silent), "a new session");
    let list = sessions_when(&s, id(&m), |l| l.len() == 3).await;
    let ended = list.iter().find(|x| x.id.to_string() == silent).unwrap();
    assert_eq!(ended.ended_at, Some(ended.last_seen_at));

    // Refused: a forged token, a JoinToken, a heartbeat without its session, a local meeting.
    let (status, body) = s.api_with(None, json!({"action": "attendee-presence", "token": "forged", "event": "joined"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "Unauthorized"));
    let join_token = att["attendee"]["JoinToken"].as_str().unwrap();
    let (status, _) = s.api_with(None, json!({"action": "attendee-presence", "token": join_token, "event": "joined"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = report("heartbeat", None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "BadRequest"));
    let (status, body) = report("dancing", None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "BadRequest"));
}

#[tokio::test]
async fn presence_for_a_local_meeting_or_an_unknown_attendee_is_refused() {
    let s = TestServer::start().await;
    let m = s.create_meeting().await;
    let (_, att) = s.create_attendee(&meeting_id(&m), "Dr. Smith").await;
    let attendee = AttendeeId::parse(att["attendee"]["AttendeeId"].as_str().unwrap()).unwrap();
    assert!(att.get("presence").is_none(), "a local meeting's presence comes from signaling");
    let token = s.state.auth.issue_presence_token(id(&m), attendee, None);
    let (status, body) = s.api_with(None, json!({"action": "attendee-presence", "token": token, "event": "joined"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "BadRequest"), "{body}");
    let stranger = s.state.auth.issue_presence_token(MeetingId::new(), AttendeeId::new(), None);
    let (status, _) = s.api_with(None, json!({"action": "attendee-presence", "token": stranger, "event": "joined"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Writes a finished session directly, as if it had happened. Stored ended in one write: an open session two
/// days old would be ended as stale by the server's own cleanup, which runs at start.
async fn past_session(s: &TestServer, meeting: MeetingId, provider: Provider, started: chrono::DateTime<Utc>, minutes: i64) {
    let ended = started + Span::minutes(minutes);
    let session = SessionRecord {
        id: SessionId::new(),
        meeting_id: meeting,
        attendee_id: AttendeeId::new(),
        provider,
        node: None,
        started_at: started,
        last_seen_at: ended,
        ended_at: Some(ended),
    };
    s.state.store.start_session(&session, &AuditEntry { meeting_id: Some(meeting), ..Default::default() }).await.unwrap();
}

#[tokio::test]
async fn the_usage_report_gives_attendee_minutes_and_cost_per_day_and_provider() {
    let s = TestServer::start().await;
    let (chime_visit, local_visit) = (MeetingId::new(), MeetingId::new());
    let day = Utc::now().date_naive() - Span::days(2);
    let at = |h: u32| day.and_hms_opt(h, 0, 0).unwrap().and_utc();
    // The seed's example: a 60-minute one-to-one visit on Chime; and a 30-minute one on the local SFU.
    past_session(&s, chime_visit, Provider::Chime, at(10), 60).await;
    past_session(&s, chime_visit, Provider::Chime, at(10), 60).await;
    past_session(&s, local_visit, Provider::Local, at(14), 30).await;
    past_session(&s, local_visit, Provider::Local, at(14), 30).await;

    let (status, body) = s.api(json!({"action": "get-usage", "from": day.to_string(), "to": day.to_string()})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let u = &body["usage"];
    assert_eq!(u["currency"], json!("USD"));
    assert_eq!(u["rates"], json!({"chime": 0.0017, "local": 0.0}));
    assert_eq!(
        u["days"],
        json!([
            {"date": day.to_string(), "provider": "local", "meetings": 1, "sessions": 2, "attendeeMinutes": 60.0, "estimatedCost": 0.0},
            {"date": day.to_string(), "provider": "chime", "meetings": 1, "sessions": 2, "attendeeMinutes": 120.0, "estimatedCost": 0.204}
        ])
    );
    // One meeting only; another range; bad input.
    let (_, one) = s.api(json!({"action": "get-usage", "from": day.to_string(), "meetingId": chime_visit.to_string()})).await;
    assert_eq!(one["usage"]["totals"], json!([{"provider": "chime", "meetings": 1, "sessions": 2, "attendeeMinutes": 120.0, "estimatedCost": 0.204}]));
    let later = (day + Span::days(1)).to_string();
    let (_, none) = s.api(json!({"action": "get-usage", "from": later})).await;
    assert_eq!(none["usage"]["days"], json!([]));
    let (status, _) = s.api(json!({"action": "get-usage", "from": "yesterday"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s.api(json!({"action": "get-usage", "from": later, "to": day.to_string()})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = s.api_with(None, json!({"action": "get-usage"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "usage needs an API key");
}

#[tokio::test]
async fn the_cost_rates_are_configurable() {
    let s = TestServer::start_with(|c| {
        c.lifecycle.local_cost_per_minute = 0.001;
        c.lifecycle.chime_cost_per_minute = 0.002;
    })
    .await;
    let start = Utc::now() - Span::hours(3);
    past_session(&s, MeetingId::new(), Provider::Local, start, 100).await;
    let (_, body) = s.api(json!({"action": "get-usage"})).await;
    assert_eq!(body["usage"]["rates"], json!({"chime": 0.002, "local": 0.001}));
    assert_eq!(body["usage"]["totals"][0]["estimatedCost"], json!(0.1));
}
