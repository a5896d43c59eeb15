//! Invite links expire, on the real server: a meeting created with `endsAt` hands out a link that works until
//! the end plus `INVITE_GRACE` and is then refused with a message the join page shows as it is
//! (`error.reason = InviteExpired`); one without `endsAt` lives `INVITE_TTL`; an appointment's link lives until
//! the visit's end plus the grace, and a rescheduled visit gets a link for its new end.

mod common;

use base64::Engine;
use chrono::{DateTime, Duration as Span, Utc};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use telehealth_gateway::config::InviteLifetime;
use tokio::time::Instant;

/// When an invite expires (unix seconds): the token is `version | kind | meeting (16) | expires_at (8, big
/// endian) | MAC`, as `auth` documents.
fn expiry(invite: &str) -> i64 {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(invite).expect("base64url");
    i64::from_be_bytes(bytes[18..26].try_into().unwrap())
}

fn invite_in(link: &str) -> String {
    link.split("invite=").nth(1).expect("the link carries an invite").split('&').next().unwrap().to_owned()
}

/// create-attendee with the invite and a one-letter name: 422 while the invite is good (the name is checked
/// after it, so no attendee is made), 401 once it is not.
async fn try_invite(s: &TestServer, meeting: &str, invite: &str) -> (StatusCode, Value) {
    s.api_with(None, json!({"action": "create-attendee", "meetingId": meeting, "attendeeName": "x", "invite": invite})).await
}

#[tokio::test]
async fn an_invite_past_the_meetings_end_and_grace_is_refused_with_a_message_the_page_shows() {
    let grace = Duration::from_secs(1);
    let s = TestServer::start_with(|c| {
        c.invites = InviteLifetime { ttl: Duration::from_secs(3600), grace };
        c.lifecycle.grace = Duration::ZERO;
    })
    .await;
    let ends_at = (Utc::now() + Span::seconds(2)).to_rfc3339();
    let (status, created) = s.api(json!({"action": "create-meeting", "endsAt": ends_at})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let (id, invite) = (meeting_id(&created), invite_of(&created));
    let end = DateTime::parse_from_rfc3339(&ends_at).unwrap().timestamp();
    let expires = expiry(&invite);
    assert_eq!(expires, end + 1, "the end plus the grace");

    let (status, body) = try_invite(&s, &id, &invite).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "the invite is still good: {body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let (status, body) = try_invite(&s, &id, &invite).await;
        if status != StatusCode::UNPROCESSABLE_ENTITY {
            break (status, body);
        }
        assert!(Instant::now() < deadline, "the invite never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(Utc::now().timestamp() >= expires, "not before its expiry");
    let (status, body) = refused;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "Unauthorized");
    assert_eq!(body["error"]["reason"], "InviteExpired", "{body}");
    assert_eq!(body["error"]["message"], "This link has expired. Please ask your clinic for a new one.");

    // A forged invite is still just "not valid", without the reason.
    let (status, body) = try_invite(&s, &id, "bm90LWFuLWludml0ZQ").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].get("reason").is_none(), "{body}");
    s.stop().await;
}

#[tokio::test]
async fn a_meeting_without_an_end_hands_out_a_link_that_lives_the_invite_ttl() {
    let s = TestServer::start_with(|c| c.invites.ttl = Duration::from_secs(3 * 86_400)).await;
    let before = Utc::now().timestamp();
    let created = s.create_meeting().await;
    let expires = expiry(&invite_of(&created));
    assert!((before + 3 * 86_400..=Utc::now().timestamp() + 3 * 86_400).contains(&expires), "{expires}");
    let (status, body) = try_invite(&s, &meeting_id(&created), &invite_of(&created)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "the invite works: {body}");
    s.stop().await;
}

#[tokio::test]
async fn an_appointments_link_lives_until_the_visits_end_plus_the_grace_and_moves_with_it() {
    let s = TestServer::start().await;
    let grace = s.state.config.invites.grace.as_secs() as i64;
    assert_eq!(grace, 2 * 3600, "the default grace");
    let start = (Utc::now() + Span::days(3)).with_timezone(&Utc);
    let body = json!({
        "client_name": "Jordan Example", "practitioner": "Dr. Rivera", "start_time": start.to_rfc3339(),
        "duration_minutes": 45, "modality": "telehealth",
    });
    let res = s.client.post(s.url("/api/appointments")).bearer_auth(&s.key).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let a: Value = res.json().await.unwrap();
    let appointment = &a["appointment"];
    let room = appointment["telehealth_room_id"].as_str().unwrap().to_owned();
    let first = invite_in(appointment["telehealth_link"].as_str().unwrap());
    let end = start.timestamp() + 45 * 60;
    assert_eq!(expiry(&first), end + grace);

    // Rescheduled a day later: a new link for the new end; the one already sent still works meanwhile.
    let later = start + Span::days(1);
    let path = format!("/api/appointments/{}", appointment["id"].as_str().unwrap());
    let res = s.client.patch(s.url(&path)).bearer_auth(&s.key).json(&json!({"start_time": later.to_rfc3339()})).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let moved: Value = res.json().await.unwrap();
    let second = invite_in(moved["appointment"]["telehealth_link"].as_str().unwrap());
    assert_eq!(expiry(&second), end + 86_400 + grace);
    assert_eq!(moved["appointment"]["telehealth_room_id"], room.as_str(), "the same meeting");
    for invite in [&first, &second] {
        let (status, body) = try_invite(&s, &room, invite).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }

    // A change that does not move the visit keeps the link.
    let res = s.client.patch(s.url(&path)).bearer_auth(&s.key).json(&json!({"practitioner": "Dr. Chen"})).send().await.unwrap();
    let same: Value = res.json().await.unwrap();
    assert_eq!(same["appointment"]["telehealth_link"], moved["appointment"]["telehealth_link"]);
    s.stop().await;
}
