//! Roles end to end through the real server, on a real SQLite file and on the real PostgreSQL
//! (`TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`, in a fresh schema; skipped when it
//! is unreachable outside CI, a failure when `CI=true`): an attendee created with the API key or from the
//! console is a host, one created through the patient's invite link a guest; the role reaches the signaling
//! frames (`joined` for oneself, the participant info for the others) and the `attendee.joined` audit line,
//! and never Chime's `Attendee` object.

mod common;
mod support;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use signaling::{ClientMessage, Role, ServerMessage, SignalingClient};
use std::time::Duration;
use support::postgres::fresh_schema;
use support::ws::{next, until};
use telehealth_gateway::ids::{AttendeeId, MeetingId};

const T: Duration = Duration::from_secs(5);


/// Runs `test` on a server with a fresh SQLite file, then on one with a fresh PostgreSQL schema.
async fn on_both(test: impl AsyncFn(&TestServer)) {
    let s = TestServer::start().await;
    test(&s).await;
    s.stop().await;

    let Some(schema) = fresh_schema("roles_test").await else { return };
    let url = schema.url.clone();
    let s = TestServer::start_with(|c| c.database_url = url.clone()).await;
    assert_eq!(s.state.store.dialect(), telehealth_gateway::store::Dialect::Postgres);
    test(&s).await;
    s.stop().await;
    schema.drop().await;
}

/// Chime's `Attendee` keeps Chime's fields only: no role, under any spelling.
fn assert_chime_attendee(attendee: &Value) {
    let keys: Vec<&str> = attendee.as_object().expect("an Attendee object").keys().map(String::as_str).collect();
    assert!(keys.contains(&"AttendeeId") && keys.contains(&"ExternalUserId"), "{attendee}");
    for key in &keys {
        assert!(["AttendeeId", "ExternalUserId", "JoinToken", "Capabilities"].contains(key), "{key} is not Chime's: {attendee}");
    }
}

struct Created {
    attendee_id: String,
    token: String,
}

fn created(status: StatusCode, body: &Value) -> Created {
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_chime_attendee(&body["attendee"]);
    Created {
        attendee_id: body["attendee"]["AttendeeId"].as_str().unwrap().to_owned(),
        token: body["attendee"]["JoinToken"].as_str().unwrap().to_owned(),
    }
}

async fn join(url: &str, token: &str) -> (SignalingClient, ServerMessage) {
    let mut client = SignalingClient::connect(url).await.expect("websocket connects");
    client.send(&ClientMessage::Join { token: token.into(), audio_muted: false, video_muted: false }).await.unwrap();
    let first = next(&mut client, T).await;
    (client, first)
}

/// The `attendee.joined` details of the meeting's audit log, once there are `n` (the join's write runs in
/// the background).
async fn joined_lines(s: &TestServer, meeting: MeetingId, n: usize) -> Vec<(Option<AttendeeId>, String)> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let lines: Vec<_> = s
            .state
            .store
            .audit_for_meeting(meeting)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.action == "attendee.joined")
            .map(|r| (r.attendee_id, r.detail.unwrap_or_default()))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n} attendee.joined lines: {lines:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_attendee_joins_as_host_and_an_invited_one_as_guest() {
    on_both(async |s: &TestServer| {
        let meeting = s.create_meeting().await;
        let id = meeting_id(&meeting);
        let url = meeting["meeting"]["MediaPlacement"]["SignalingUrl"].as_str().unwrap().to_owned();
        let (status, body) = s.create_attendee(&id, "Dr. Smith").await;
        let doctor = created(status, &body);
        let invite = invite_of(&meeting);
        let body = json!({"action": "create-attendee", "meetingId": id, "attendeeName": "Pat Client", "invite": invite});
        let (status, body) = s.api_with(None, body).await;
        let patient = created(status, &body);

        // The doctor is told its own role in `joined`.
        let (mut a, first) = join(&url, &doctor.token).await;
        let ServerMessage::Joined { role, participants, .. } = first else { panic!("{first:?}") };
        assert_eq!((role, participants.len()), (Some(Role::Host), 0));

        // The patient is a guest, and sees the doctor as a host.
        let (_b, first) = join(&url, &patient.token).await;
        let ServerMessage::Joined { role, participants, .. } = first else { panic!("{first:?}") };
        assert_eq!(role, Some(Role::Guest));
        assert_eq!(participants.len(), 1);
        assert_eq!((participants[0].attendee_id.as_str(), participants[0].role), (doctor.attendee_id.as_str(), Some(Role::Host)));

        // The doctor sees the patient arrive as a guest.
        let arrived = until(&mut a, T, |m| matches!(m, ServerMessage::ParticipantJoined { .. })).await;
        let ServerMessage::ParticipantJoined { participant, .. } = arrived else { unreachable!() };
        assert_eq!((participant.attendee_id.as_str(), participant.role), (patient.attendee_id.as_str(), Some(Role::Guest)));

        // A second socket for the patient resumes the same participant, still a guest.
        let (_b2, again) = join(&url, &patient.token).await;
        let ServerMessage::Joined { resumed, role, participants, .. } = again else { panic!("{again:?}") };
        assert!(resumed, "the second socket takes over the participant");
        assert_eq!((role, participants[0].role), (Some(Role::Guest), Some(Role::Host)));

        // The audit trail: each join names the role, by ids only (never a name).
        let meeting_id = MeetingId::parse(&id).unwrap();
        let (doctor_id, patient_id) = (AttendeeId::parse(&doctor.attendee_id), AttendeeId::parse(&patient.attendee_id));
        let mut lines = joined_lines(s, meeting_id, 2).await;
        lines.sort_by_key(|(a, _)| *a != doctor_id);
        assert_eq!(
            lines,
            [(doctor_id, "provider=local role=host".to_owned()), (patient_id, "provider=local role=guest".to_owned())]
        );
        let log = s.state.store.audit_for_meeting(meeting_id).await.unwrap();
        let created: Vec<_> =
            log.iter().filter(|r| r.action == "attendee.created").map(|r| (r.actor.starts_with("api-key:"), r.detail.clone())).collect();
        assert_eq!(
            created,
            [(true, Some("provider=local role=host".to_owned())), (false, Some("provider=local role=guest".to_owned()))]
        );
        let text = format!("{log:?}");
        assert!(!text.contains("Smith") && !text.contains("Pat"), "no names in the audit log: {text}");

        // The stored rows carry the roles; list-attendees still answers in Chime's shape.
        let roles: Vec<_> = s.state.store.list_attendees(meeting_id).await.unwrap().iter().map(|a| a.role.as_str()).collect();
        assert_eq!(roles, ["host", "guest"]);
        let (status, list) = s.api(json!({"action": "list-attendees", "meetingId": id})).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        for attendee in list["attendees"].as_array().unwrap() {
            assert_chime_attendee(attendee);
        }
    })
    .await;
}

/// The practitioner console's Join opens the visit's link, which carries the patient's invite: a browser signed
/// in to the console (its cookie and CSRF token) still joins as the console, a host. The same cookie without
/// the token proves nothing, so the invite decides: a guest.
#[tokio::test]
async fn an_attendee_created_from_the_practitioner_console_is_a_host_even_through_the_visits_link() {
    on_both(async |s: &TestServer| {
        let res = s.client.post(s.url("/console/login")).json(&json!({"key": s.key})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let set_cookie = res.headers().get(reqwest::header::SET_COOKIE).expect("a session cookie").to_str().unwrap().to_owned();
        let cookie = set_cookie.split(';').next().unwrap().trim().to_owned();
        let session: Value =
            s.client.get(s.url("/console/session")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
        let csrf = session["csrfToken"].as_str().expect("a CSRF token").to_owned();

        let meeting = s.create_meeting().await;
        let (id, invite) = (meeting_id(&meeting), invite_of(&meeting));
        let create = async |name: &str, invite: Option<&str>, csrf: Option<&str>| {
            let mut body = json!({"action": "create-attendee", "meetingId": id, "attendeeName": name});
            if let Some(invite) = invite {
                body["invite"] = json!(invite);
            }
            let mut req = s.client.post(s.url(API)).header("cookie", &cookie).json(&body);
            if let Some(csrf) = csrf {
                req = req.header("x-csrf-token", csrf);
            }
            let res = req.send().await.unwrap();
            let status = res.status();
            let made = created(status, &res.json().await.unwrap());
            let attendee = AttendeeId::parse(&made.attendee_id).unwrap();
            let stored = s.state.store.find_live_attendee(MeetingId::parse(&id).unwrap(), attendee).await.unwrap();
            stored.expect("stored").role.as_str()
        };
        assert_eq!(create("Dr. Console", None, Some(&csrf)).await, "host", "the console, no invite");
        assert_eq!(create("Dr. Link", Some(&invite), Some(&csrf)).await, "host", "the console, through the visit's link");
        assert_eq!(create("Pat Cookie", Some(&invite), None).await, "guest", "a cookie without its CSRF token is not the console");
    })
    .await;
}
