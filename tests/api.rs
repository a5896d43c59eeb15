//! The `POST /api/aws-chime-video` contract, against the real server over HTTP(S).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use telehealth_gateway::auth::AuthError;
use telehealth_gateway::ids::{AttendeeId, MeetingId};

fn keys_of(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

// ---------- happy paths and shapes ----------

#[tokio::test]
async fn create_meeting_returns_a_chime_shaped_meeting_a_link_with_an_invite_and_demo_fields() {
    let s = TestServer::start().await;
    let (status, body) =
        s.api(json!({"action": "create-meeting", "appointmentId": 12345, "externalMeetingId": "appointment-12345"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["demoMode"], json!(true));
    assert_eq!(body["provider"], json!("local"));
    let m = &body["meeting"];
    assert_eq!(
        keys_of(m),
        ["ExternalMeetingId", "MediaPlacement", "MediaRegion", "MeetingArn", "MeetingFeatures", "MeetingId"]
    );
    let id = m["MeetingId"].as_str().unwrap();
    assert!(is_guid(id), "{id}");
    assert_eq!(m["ExternalMeetingId"], json!("appointment-12345"));
    assert_eq!(m["MediaRegion"], json!("us-east-1"));
    assert_eq!(m["MeetingArn"], json!(format!("arn:aws:chime:us-east-1:000000000000:meeting/{id}")));
    assert_eq!(m["MeetingFeatures"], json!({"Audio": {"EchoReduction": "AVAILABLE"}}));
    assert_eq!(
        keys_of(&m["MediaPlacement"]),
        [
            "AudioFallbackUrl", "AudioHostUrl", "EventIngestionUrl", "ScreenDataUrl", "ScreenSharingUrl",
            "ScreenViewingUrl", "SignalingUrl", "TurnControlUrl"
        ]
    );
    assert_eq!(m["MediaPlacement"]["SignalingUrl"], json!(format!("ws://{}/ws", s.http)));
    let link = body["link"].as_str().unwrap();
    assert!(link.starts_with(&format!("/telehealth-aws.html?meeting={id}&invite=")), "{link}");
    let invite = invite_of(&body);
    assert_eq!(s.state.auth.verify_invite(&invite).unwrap().to_string(), id);
}

#[tokio::test]
async fn create_meeting_without_ids_derives_a_valid_external_meeting_id() {
    let s = TestServer::start().await;
    let body = s.create_meeting().await;
    assert_eq!(body["meeting"]["ExternalMeetingId"], body["meeting"]["MeetingId"]);
    let (_, body) = s.api(json!({"action": "create-meeting", "appointmentId": "A-77"})).await;
    assert_eq!(body["meeting"]["ExternalMeetingId"], json!("appointment-A-77"));
}

#[tokio::test]
async fn create_attendee_returns_a_chime_shaped_attendee_with_a_join_token_bound_to_it() {
    let s = TestServer::start().await;
    let id = meeting_id(&s.create_meeting().await);
    let (status, body) = s.create_attendee(&id, "Dr. Smith").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((&body["success"], &body["demoMode"], &body["provider"]), (&json!(true), &json!(true), &json!("local")));
    let a = &body["attendee"];
    assert_eq!(keys_of(a), ["AttendeeId", "Capabilities", "ExternalUserId", "JoinToken"]);
    assert_eq!(a["ExternalUserId"], json!("Dr. Smith"));
    assert_eq!(a["Capabilities"], json!({"Audio": "SendReceive", "Video": "SendReceive", "Content": "SendReceive"}));
    let attendee_id = a["AttendeeId"].as_str().unwrap();
    assert!(is_guid(attendee_id));
    assert_eq!(body["meeting"]["MeetingId"], json!(id), "the patient's page learns its SignalingUrl");

    let claims = s.state.auth.verify_join_token(a["JoinToken"].as_str().unwrap()).expect("a valid join token");
    assert_eq!(claims.meeting_id.to_string(), id);
    assert_eq!(claims.attendee_id.to_string(), attendee_id);
    let live = s.state.store.find_live_attendee(claims.meeting_id, claims.attendee_id).await.unwrap();
    assert!(live.is_some());
    let other = s.state.store.find_live_attendee(MeetingId::new(), claims.attendee_id).await.unwrap();
    assert!(other.is_none(), "the attendee belongs to its own meeting only");
}

#[tokio::test]
async fn get_meeting_returns_the_meeting_that_was_created() {
    let s = TestServer::start().await;
    let created = s.create_meeting().await;
    let (status, body) = s.api(json!({"action": "get-meeting", "meetingId": meeting_id(&created)})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["meeting"], created["meeting"]);
    assert_eq!((&body["demoMode"], &body["provider"]), (&json!(true), &json!("local")));
}

#[tokio::test]
async fn list_attendees_returns_every_attendee_without_join_tokens() {
    let s = TestServer::start().await;
    let id = meeting_id(&s.create_meeting().await);
    let (_, empty) = s.api(json!({"action": "list-attendees", "meetingId": id})).await;
    assert_eq!(empty["attendees"], json!([]));
    let (_, a) = s.create_attendee(&id, "Dr. Smith").await;
    let (_, b) = s.create_attendee(&id, "Pat Patient").await;
    let (status, body) = s.api(json!({"action": "list-attendees", "meetingId": id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((&body["demoMode"], &body["provider"]), (&json!(true), &json!("local")));
    let list = body["attendees"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["AttendeeId"], a["attendee"]["AttendeeId"]);
    assert_eq!(list[1]["ExternalUserId"], json!("Pat Patient"));
    for item in list {
        assert_eq!(keys_of(item), ["AttendeeId", "Capabilities", "ExternalUserId"], "no JoinToken in listings");
    }
    let _ = b;
}

#[tokio::test]
async fn delete_meeting_succeeds_and_then_the_meeting_is_gone() {
    let s = TestServer::start().await;
    let id = meeting_id(&s.create_meeting().await);
    let (_, att) = s.create_attendee(&id, "Dr. Smith").await;
    let claims = s.state.auth.verify_join_token(att["attendee"]["JoinToken"].as_str().unwrap()).unwrap();

    let (status, body) = s.api(json!({"action": "delete-meeting", "meetingId": id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], json!(true));
    assert_eq!((&body["demoMode"], &body["provider"]), (&json!(true), &json!("local")));

    for action in ["get-meeting", "list-attendees", "delete-meeting"] {
        let (status, body) = s.api(json!({"action": action, "meetingId": id})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}: {body}");
        assert_eq!(error_code(&body), "NotFound");
    }
    let (status, body) = s.create_attendee(&id, "Late Comer").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "NotFound"));
    // The join token still has a valid signature, but the store no longer knows the attendee: joins fail.
    assert!(s.state.store.find_live_attendee(claims.meeting_id, claims.attendee_id).await.unwrap().is_none());
}

#[tokio::test]
async fn every_action_returns_404_for_an_unknown_meeting() {
    let s = TestServer::start().await;
    let unknown = MeetingId::new().to_string();
    for body in [
        json!({"action": "get-meeting", "meetingId": unknown}),
        json!({"action": "list-attendees", "meetingId": unknown}),
        json!({"action": "delete-meeting", "meetingId": unknown}),
        json!({"action": "create-attendee", "meetingId": unknown, "attendeeName": "Dr. Smith"}),
    ] {
        let (status, res) = s.api(body.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body} → {res}");
        assert_eq!(error_code(&res), "NotFound");
    }
}

#[tokio::test]
async fn the_audit_log_records_creations_and_deletions_by_key_fingerprint_and_invite() {
    let s = TestServer::start().await;
    let created = s.create_meeting().await;
    let id = meeting_id(&created);
    s.create_attendee(&id, "Dr. Smith").await;
    let invite = invite_of(&created);
    let (status, _) =
        s.api_with(None, json!({"action": "create-attendee", "meetingId": id, "attendeeName": "Pat Patient", "invite": invite})).await;
    assert_eq!(status, StatusCode::OK);
    s.api(json!({"action": "delete-meeting", "meetingId": id})).await;

    let log = s.state.store.audit_for_meeting(MeetingId::parse(&id).unwrap()).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["meeting.created", "attendee.created", "attendee.created", "meeting.deleted"]);
    assert!(log[0].actor.starts_with("api-key:") && !log[0].actor.contains(&s.key));
    assert_eq!(log[2].actor, "invite");
    assert!(log[1].attendee_id.is_some());
    let all = format!("{log:?}");
    assert!(!all.contains("Smith") && !all.contains("Pat Patient") && !all.contains(&invite));
}

// ---------- authentication ----------

#[tokio::test]
async fn every_action_returns_401_without_a_key_or_with_a_wrong_one() {
    let s = TestServer::start().await;
    let id = meeting_id(&s.create_meeting().await);
    let bodies = [
        json!({"action": "create-meeting"}),
        json!({"action": "get-meeting", "meetingId": id}),
        json!({"action": "list-attendees", "meetingId": id}),
        json!({"action": "delete-meeting", "meetingId": id}),
        json!({"action": "create-attendee", "meetingId": id, "attendeeName": "Dr. Smith"}),
    ];
    let wrong = format!("{}x", s.key);
    for body in &bodies {
        for key in [None, Some(wrong.as_str()), Some("")] {
            let (status, res) = s.api_with(key, body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body} with {key:?}: {res}");
            assert_eq!(error_code(&res), "Unauthorized");
        }
    }
    let res = s
        .client
        .post(s.url(API))
        .header("Authorization", format!("Basic {}", s.key))
        .json(&json!({"action": "create-meeting"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "only the Bearer scheme is accepted");
    let (status, _) = s.api(json!({"action": "get-meeting", "meetingId": id})).await;
    assert_eq!(status, StatusCode::OK, "the meeting survived every refused delete");
}

#[tokio::test]
async fn an_invite_lets_a_patient_create_an_attendee_for_its_own_meeting() {
    let s = TestServer::start().await;
    let created = s.create_meeting().await;
    let id = meeting_id(&created);
    let (status, body) = s
        .api_with(None, json!({"action": "create-attendee", "meetingId": id, "attendeeName": "Pat Patient", "invite": invite_of(&created)}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let claims = s.state.auth.verify_join_token(body["attendee"]["JoinToken"].as_str().unwrap()).unwrap();
    assert_eq!(claims.meeting_id.to_string(), id);
}

#[tokio::test]
async fn an_invite_for_another_meeting_returns_403() {
    let s = TestServer::start().await;
    let a = s.create_meeting().await;
    let b = s.create_meeting().await;
    let (status, body) = s
        .api_with(None, json!({"action": "create-attendee", "meetingId": meeting_id(&b), "attendeeName": "Pat Patient", "invite": invite_of(&a)}))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "Forbidden"));
}

#[tokio::test]
async fn an_invite_does_not_authorize_any_other_action() {
    let s = TestServer::start().await;
    let created = s.create_meeting().await;
    let (id, invite) = (meeting_id(&created), invite_of(&created));
    for action in ["get-meeting", "list-attendees", "delete-meeting"] {
        let (status, body) = s.api_with(None, json!({"action": action, "meetingId": id, "invite": invite})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{action} with the invite in the body: {body}");
        let (status, body) = s.api_with(Some(&invite), json!({"action": action, "meetingId": id})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{action} with the invite as a bearer key: {body}");
    }
    let (status, _) = s.api_with(Some(&invite), json!({"action": "create-meeting"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_forged_invite_or_a_join_token_used_as_an_invite_returns_401() {
    let s = TestServer::start().await;
    let created = s.create_meeting().await;
    let id = meeting_id(&created);
    let invite = invite_of(&created);
    let mut forged = invite.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let (_, att) = s.create_attendee(&id, "Dr. Smith").await;
    let join_token = att["attendee"]["JoinToken"].as_str().unwrap().to_owned();
    for bad in [String::from_utf8(forged).unwrap(), join_token, "garbage".into()] {
        let (status, body) =
            s.api_with(None, json!({"action": "create-attendee", "meetingId": id, "attendeeName": "Pat Patient", "invite": bad})).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
}

#[tokio::test]
async fn an_invite_dies_with_its_meeting() {
    let s = TestServer::start().await;
    let created = s.create_meeting().await;
    let id = meeting_id(&created);
    s.api(json!({"action": "delete-meeting", "meetingId": id})).await;
    let (status, _) = s
        .api_with(None, json!({"action": "create-attendee", "meetingId": id, "attendeeName": "Pat Patient", "invite": invite_of(&created)}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// ---------- join tokens ----------

#[tokio::test]
async fn a_join_token_with_a_flipped_bit_is_rejected() {
    let s = TestServer::start().await;
    let id = meeting_id(&s.create_meeting().await);
    let (_, att) = s.create_attendee(&id, "Dr. Smith").await;
    let token = att["attendee"]["JoinToken"].as_str().unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut bytes = b64.decode(token).unwrap();
    for i in [2usize, 20, bytes.len() - 1] {
        bytes[i] ^= 0x01;
        assert_eq!(s.state.auth.verify_join_token(&b64.encode(&bytes)), Err(AuthError::BadSignature), "bit flipped in byte {i}");
        bytes[i] ^= 0x01;
    }
    assert!(s.state.auth.verify_join_token(&b64.encode(&bytes)).is_ok());
}

#[tokio::test]
async fn a_join_token_past_its_ttl_is_expired() {
    let s = TestServer::start_with(|c| c.join_token_ttl = std::time::Duration::ZERO).await;
    let id = meeting_id(&s.create_meeting().await);
    let (_, att) = s.create_attendee(&id, "Dr. Smith").await;
    let token = att["attendee"]["JoinToken"].as_str().unwrap();
    assert_eq!(s.state.auth.verify_join_token(token), Err(AuthError::Expired));
}

#[tokio::test]
async fn a_join_token_is_bound_to_its_meeting_and_attendee() {
    let s = TestServer::start().await;
    let m1 = meeting_id(&s.create_meeting().await);
    let m2 = meeting_id(&s.create_meeting().await);
    let (_, a1) = s.create_attendee(&m1, "Dr. Smith").await;
    let (_, a2) = s.create_attendee(&m2, "Dr. Jones").await;
    let c1 = s.state.auth.verify_join_token(a1["attendee"]["JoinToken"].as_str().unwrap()).unwrap();
    let c2 = s.state.auth.verify_join_token(a2["attendee"]["JoinToken"].as_str().unwrap()).unwrap();
    assert_eq!((c1.meeting_id.to_string(), c1.attendee_id.to_string()), (m1.clone(), a1["attendee"]["AttendeeId"].as_str().unwrap().to_owned()));
    assert_ne!(c1.meeting_id, c2.meeting_id);
    // Crossing the pairs finds nobody.
    assert!(s.state.store.find_live_attendee(c1.meeting_id, c2.attendee_id).await.unwrap().is_none());
    assert!(s.state.store.find_live_attendee(c2.meeting_id, c1.attendee_id).await.unwrap().is_none());
    assert!(s.state.store.find_live_attendee(c1.meeting_id, AttendeeId::new()).await.unwrap().is_none());
}

// ---------- malformed requests ----------

async fn raw(s: &TestServer, content_type: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let res = s
        .client
        .post(s.url(API))
        .bearer_auth(&s.key)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.expect("errors are JSON"))
}

#[tokio::test]
async fn malformed_json_returns_400() {
    let s = TestServer::start().await;
    let (status, body) = raw(&s, "application/json", "{\"action\": ").await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "BadRequest"));
}

#[tokio::test]
async fn a_missing_or_unknown_action_returns_400_naming_the_problem() {
    let s = TestServer::start().await;
    let (status, body) = s.api(json!({"meetingId": "x"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "BadRequest"));
    assert!(body["error"]["message"].as_str().unwrap().contains("action"), "{body}");
    // The message names the field and what it may be, not the caller's value (which may be a name).
    let (status, body) = s.api(json!({"action": "launch-rocket"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "BadRequest"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("action") && message.contains("create-meeting"), "{body}");
    assert!(!message.contains("launch-rocket"), "{body}");
    let (status, _) = s.api(json!(["create-meeting"])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Found by the property tests (props_api.rs): serde's derive also reads an internally tagged enum from an
/// array, so `["get-meeting", "<id>"]` was a get-meeting and `["create-meeting", null, null, null]` made a
/// meeting. The contract's body is an object with an `action`.
#[tokio::test]
async fn the_positional_array_form_is_not_a_request() {
    let s = TestServer::start().await;
    let id = meeting_id(&s.create_meeting().await);
    for body in [json!(["get-meeting", id]), json!(["create-meeting", null, null, null]), json!(["create-attendee", id, "Pat Client", null])] {
        let (status, res) = s.api(body.clone()).await;
        assert_eq!((status, error_code(&res)), (StatusCode::BAD_REQUEST, "BadRequest"), "{body} → {res}");
        assert!(!res["error"]["message"].as_str().unwrap().contains("Pat Client"), "{res}");
    }
    let (_, list) = s.api(json!({"action": "list-attendees", "meetingId": id})).await;
    assert_eq!(list["attendees"], json!([]), "no attendee was made");
}

#[tokio::test]
async fn wrong_types_or_missing_fields_return_400() {
    let s = TestServer::start().await;
    for body in [
        json!({"action": "get-meeting", "meetingId": 5}),
        json!({"action": "get-meeting"}),
        json!({"action": "get-meeting", "meetingId": "not-a-guid"}),
        json!({"action": "create-attendee", "meetingId": MeetingId::new().to_string()}),
        json!({"action": "create-attendee", "meetingId": MeetingId::new().to_string(), "attendeeName": ["Dr"]}),
        json!({"action": "create-meeting", "appointmentId": {"id": 1}}),
        json!({"action": "create-meeting", "externalMeetingId": 42}),
        json!({"action": 7}),
    ] {
        let (status, res) = s.api(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {res}");
        assert_eq!(error_code(&res), "BadRequest");
        assert!(!res["error"]["message"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn get_on_the_api_returns_405_with_a_json_body_and_an_allow_header() {
    let s = TestServer::start().await;
    for method in [reqwest::Method::GET, reqwest::Method::PUT, reqwest::Method::DELETE] {
        let res = s.client.request(method.clone(), s.url(API)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(res.headers()["allow"], "POST");
        let body: Value = res.json().await.unwrap();
        assert_eq!(error_code(&body), "MethodNotAllowed");
    }
}

/// Each route's 405 names the methods that route takes, and a path under /api/ that names no route gets the
/// contract's JSON 404 whatever the method (not the static files' plain one, nor an empty 405).
#[tokio::test]
async fn wrong_methods_name_the_routes_own_methods_and_unknown_api_paths_get_a_json_404() {
    let s = TestServer::start().await;
    let id = uuid::Uuid::new_v4();
    let cases = [
        (reqwest::Method::DELETE, "/api/appointments".to_owned(), "GET, POST"),
        (reqwest::Method::PUT, format!("/api/appointments/{id}"), "GET, PATCH"),
        (reqwest::Method::GET, format!("/api/appointments/{id}/cancel"), "POST"),
        (reqwest::Method::POST, "/api/outbox".to_owned(), "GET"),
        (reqwest::Method::GET, format!("/api/outbox/{id}/retry"), "POST"),
    ];
    for (method, path, allow) in cases {
        let res = s.client.request(method.clone(), s.url(&path)).bearer_auth(&s.key).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(error_code(&body), "MethodNotAllowed");
    }
    for method in [reqwest::Method::GET, reqwest::Method::POST, reqwest::Method::DELETE] {
        let res = s.client.request(method.clone(), s.url("/api/no-such-thing/at/all")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{method}");
        assert!(res.headers().get("allow").is_none());
        let body: Value = res.json().await.unwrap();
        assert_eq!(error_code(&body), "NotFound", "{method}: {body}");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_returns_413() {
    let s = TestServer::start().await;
    let big = json!({"action": "create-meeting", "padding": "x".repeat(70 * 1024)}).to_string();
    let (status, body) = raw(&s, "application/json", big).await;
    assert_eq!((status, error_code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"));
}

#[tokio::test]
async fn a_text_plain_body_returns_415() {
    let s = TestServer::start().await;
    let (status, body) = raw(&s, "text/plain", r#"{"action":"create-meeting"}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType"));
}

// ---------- Chime's limits ----------

#[tokio::test]
async fn create_meeting_returns_422_for_a_one_character_external_id() {
    let s = TestServer::start().await;
    let (status, body) = s.api(json!({"action": "create-meeting", "externalMeetingId": "a"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "UnprocessableEntity"));
    assert!(body["error"]["message"].as_str().unwrap().contains("ExternalMeetingId"));
}

#[tokio::test]
async fn create_meeting_returns_422_for_a_65_character_external_id() {
    let s = TestServer::start().await;
    let (status, body) = s.api(json!({"action": "create-meeting", "externalMeetingId": "x".repeat(65)})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "UnprocessableEntity"));
    let (status, _) = s.api(json!({"action": "create-meeting", "externalMeetingId": "x".repeat(64)})).await;
    assert_eq!(status, StatusCode::OK, "64 characters is the limit, inclusive");
}

#[tokio::test]
async fn create_attendee_returns_422_for_a_one_character_or_65_character_name() {
    let s = TestServer::start().await;
    let id = meeting_id(&s.create_meeting().await);
    for name in ["A".to_owned(), "x".repeat(65), "tab\tname".to_owned()] {
        let (status, body) = s.create_attendee(&id, &name).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "UnprocessableEntity"), "{name:?}");
        assert!(body["error"]["message"].as_str().unwrap().contains("attendeeName"));
    }
    let (status, _) = s.create_attendee(&id, "Al").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_251st_attendee_is_refused_with_422() {
    let s = TestServer::start().await;
    let id = meeting_id(&s.create_meeting().await);
    // 250 creations, 25 at a time: concurrency also exercises the atomic seat check.
    for batch in 0..10 {
        let names: Vec<String> = (0..25).map(|i| format!("Attendee {}", batch * 25 + i)).collect();
        let futures = names.iter().map(|name| s.create_attendee(&id, name));
        for (status, body) in futures::future::join_all(futures).await {
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    let (status, body) = s.create_attendee(&id, "One Too Many").await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "UnprocessableEntity"));
    let (_, list) = s.api(json!({"action": "list-attendees", "meetingId": id})).await;
    assert_eq!(list["attendees"].as_array().unwrap().len(), 250);
}

// ---------- server: restart, HTTPS, static files ----------

#[tokio::test]
async fn a_restart_on_the_same_sqlite_file_keeps_meetings_attendees_keys_and_tokens() {
    let s = TestServer::start().await;
    let created = s.create_meeting().await;
    let id = meeting_id(&created);
    let (_, att) = s.create_attendee(&id, "Dr. Smith").await;
    let key = s.key.clone();
    let dir = s.stop().await;

    let s = TestServer::start_in(dir, |_| {}).await;
    assert_eq!(s.key, key, "the generated API key is reused");
    assert!(s.banner.contains("cat ") && !s.banner.contains(&key), "a reused key is not printed again:\n{}", s.banner);
    let (status, body) = s.api(json!({"action": "get-meeting", "meetingId": id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["meeting"]["MeetingId"], created["meeting"]["MeetingId"]);
    assert_eq!(body["meeting"]["ExternalMeetingId"], created["meeting"]["ExternalMeetingId"]);
    let (_, list) = s.api(json!({"action": "list-attendees", "meetingId": id})).await;
    assert_eq!(list["attendees"][0]["AttendeeId"], att["attendee"]["AttendeeId"]);
    assert!(s.state.auth.verify_join_token(att["attendee"]["JoinToken"].as_str().unwrap()).is_ok(), "the signing secret persisted");
    assert_eq!(s.state.auth.verify_invite(&invite_of(&created)).unwrap().to_string(), id);
}

#[tokio::test]
async fn the_https_listener_answers_and_hands_out_wss_signaling_urls() {
    let s = TestServer::start().await;
    let res = s.client.get(s.https_url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = s
        .client
        .post(s.https_url(API))
        .bearer_auth(&s.key)
        .json(&json!({"action": "create-meeting"}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["meeting"]["MediaPlacement"]["SignalingUrl"], json!(format!("wss://{}/ws", s.https)));
}

#[tokio::test]
async fn app_url_overrides_the_signaling_url() {
    let s = TestServer::start_with(|c| c.app_url = Some("https://clinic.example:9443".into())).await;
    let body = s.create_meeting().await;
    assert_eq!(body["meeting"]["MediaPlacement"]["SignalingUrl"], json!("wss://clinic.example:9443/ws"));
}

#[tokio::test]
async fn the_banner_names_demo_mode_both_urls_and_the_generated_key_once() {
    let s = TestServer::start().await;
    assert!(s.banner.contains("DEMO MODE: local SFU (no AWS credentials)"), "{}", s.banner);
    assert!(s.banner.contains(&format!("http://{}/", s.http)));
    assert!(s.banner.contains(&format!("https://{}/", s.https)));
    assert_eq!(s.banner.matches(&s.key).count(), 2, "the key line and the curl example:\n{}", s.banner);
    assert!(s.banner.contains("curl"));
}

#[tokio::test]
async fn static_files_healthz_and_the_index_are_served() {
    let s = TestServer::start().await;
    let page = s.client.get(s.url("/telehealth-aws.html?meeting=x&invite=y")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("join"));
    let js = s.client.get(s.url("/js/app.js")).send().await.unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    let health: Value = s.client.get(s.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let index = s.client.get(s.url("/")).send().await.unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    assert!(index.text().await.unwrap().contains("/api/aws-chime-video"));
    let missing = s.client.get(s.url("/nope.html")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_chime_sdk_bundle_is_served_by_the_gateway_and_gzipped_for_browsers_that_accept_it() {
    let web: std::path::PathBuf = concat!(env!("CARGO_MANIFEST_DIR"), "/web").into();
    let s = TestServer::start_with(|c| c.web_dir = web.clone()).await;
    let on_disk = std::fs::read(web.join("vendor/amazon-chime-sdk.js")).unwrap();
    let plain = s.client.get(s.url("/vendor/amazon-chime-sdk.js")).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(plain.headers()["content-type"].to_str().unwrap().contains("javascript"));
    assert_eq!(plain.bytes().await.unwrap().as_ref(), on_disk.as_slice());
    let gzipped = s.client.get(s.url("/vendor/amazon-chime-sdk.js")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    let size = gzipped.bytes().await.unwrap().len();
    assert!(size < on_disk.len() / 3, "{size} bytes gzipped of {}", on_disk.len());
    println!("Chime bundle: {} bytes, {size} gzipped", on_disk.len());
}

#[tokio::test]
async fn while_draining_new_meetings_are_refused_with_503() {
    let s = TestServer::start().await;
    s.state.shutdown.trigger();
    let (status, body) = s.api(json!({"action": "create-meeting"})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"));
}
