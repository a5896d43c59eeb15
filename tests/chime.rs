//! The production path: the real gateway against a local fake of Chime SDK Meetings (`fake-chime`, rest-json,
//! SigV4-checked), reached through the SDK's endpoint override. Shapes passed through, idempotency, every
//! error mapping, failover (503, throttling, a hang, switched off), capacity overflow, stickiness across a
//! restart, and `auto` choosing by the keys.

mod common;
mod support;

use common::*;
use fake_chime::{Credentials, FakeChime, Failure, Operation};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use telehealth_gateway::config::ProviderChoice;
use telehealth_gateway::ids::MeetingId;

async fn fake() -> FakeChime {
    FakeChime::start(Credentials::default()).await
}

fn all_signed(fake: &FakeChime) {
    let requests = fake.requests();
    assert!(!requests.is_empty(), "the fake saw requests");
    for r in requests {
        assert_eq!(r.signature_problem, None, "{:?} {} is SigV4-signed for chime in us-east-1", r.operation, r.path);
    }
}

async fn create(s: &TestServer, body: Value) -> Value {
    let (status, body) = s.api(body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn id_of(v: &Value) -> MeetingId {
    MeetingId::parse(v["meeting"]["MeetingId"].as_str().unwrap()).unwrap()
}

// ---------- auto, shapes, idempotency ----------

#[tokio::test]
async fn auto_with_both_aws_keys_creates_the_meeting_at_chime_and_passes_its_object_through_unchanged() {
    let fake = fake().await;
    let s = TestServer::with_chime(&fake, |_| {}).await;
    let body = create(&s, json!({"action": "create-meeting", "appointmentId": 12345})).await;
    assert_eq!((&body["provider"], &body["demoMode"]), (&json!("chime"), &json!(false)));
    assert!(body.get("failover").is_none());
    let m = &body["meeting"];
    let id = m["MeetingId"].as_str().unwrap();
    assert!(fake.meeting_exists(id), "the MeetingId is Chime's");
    assert_eq!(m["ExternalMeetingId"], json!("appointment-12345"));
    assert_eq!(m["FakeFutureField"], json!({"Nested": [1, 2, 3]}), "a field we do not know survives");
    assert_eq!(m["TenantIds"], json!([]));
    assert!(m["MediaPlacement"]["SignalingUrl"].as_str().unwrap().starts_with("ws://127.0.0.1:"));
    assert!(body["link"].as_str().unwrap().starts_with(&format!("/telehealth-aws.html?meeting={id}&invite=")));

    let sent = &fake.requests()[0];
    assert_eq!(sent.operation, Operation::CreateMeeting);
    assert_eq!(sent.body["MediaRegion"], json!("us-east-1"));
    assert_eq!(sent.body["ExternalMeetingId"], json!("appointment-12345"));
    let token = sent.body["ClientRequestToken"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(token).is_ok(), "an idempotency token: {token}");
    all_signed(&fake);
}

#[tokio::test]
async fn auto_without_aws_keys_is_local_demo_mode_and_never_calls_chime() {
    let fake = fake().await;
    let s = TestServer::with_chime(&fake, |c| c.aws_credentials_present = false).await;
    let body = create(&s, json!({"action": "create-meeting"})).await;
    assert_eq!((&body["provider"], &body["demoMode"]), (&json!("local"), &json!(true)));
    assert!(fake.requests().is_empty(), "no call reached Chime");
    assert!(s.banner.contains("DEMO MODE"));

    // `chime` chosen explicitly works without the keys' rule (credentials from the SDK's own chain).
    let s = TestServer::with_chime(&fake, |c| {
        c.aws_credentials_present = false;
        c.provider = ProviderChoice::Chime;
    })
    .await;
    let body = create(&s, json!({"action": "create-meeting"})).await;
    assert_eq!(body["provider"], json!("chime"));
    assert!(!s.banner.contains("DEMO MODE"), "{}", s.banner);
    assert!(s.banner.contains("new meetings go to chime, failover on"), "{}", s.banner);
}

#[tokio::test]
async fn create_attendee_returns_chimes_attendee_its_meeting_and_a_presence_token_through_an_invite() {
    let fake = fake().await;
    let s = TestServer::with_chime(&fake, |_| {}).await;
    let created = create(&s, json!({"action": "create-meeting"})).await;
    let id = meeting_id(&created);
    let invite = invite_of(&created);
    let (status, body) = s
        .api_with(None, json!({"action": "create-attendee", "meetingId": id, "attendeeName": "Zoë Łukasz", "invite": invite}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((&body["provider"], &body["demoMode"]), (&json!("chime"), &json!(false)));
    let a = &body["attendee"];
    let external = a["ExternalUserId"].as_str().unwrap();
    let (prefix, name) = external.split_once('#').expect("prefix#name");
    assert_eq!((prefix.len(), name), (8, "Zoë Lukasz"), "Chime's characters only");
    assert!(a["JoinToken"].as_str().unwrap().starts_with("fake-join-token-"), "Chime's own JoinToken");
    assert_eq!(a["FakeFutureField"], json!("attendee"));
    assert_eq!(body["meeting"], created["meeting"], "the join page gets the meeting without an API key");
    assert_eq!(fake.count(Operation::GetMeeting), 0, "the stored meeting is used, not another call");
    let presence = body["presence"]["token"].as_str().expect("a presence token");
    assert_eq!(body["presence"]["heartbeatSecs"], json!(30));
    let claims = s.state.auth.verify_presence_token(presence).unwrap();
    assert_eq!(claims.attendee_id.to_string(), a["AttendeeId"].as_str().unwrap());
    let sent = fake.requests().into_iter().find(|r| r.operation == Operation::CreateAttendee).unwrap();
    assert_eq!(sent.path, format!("/meetings/{id}/attendees"));
    all_signed(&fake);
}

#[tokio::test]
async fn get_list_and_delete_of_a_chime_meeting_go_to_chime() {
    let fake = fake().await;
    let s = TestServer::with_chime(&fake, |_| {}).await;
    let id = meeting_id(&create(&s, json!({"action": "create-meeting"})).await);
    for name in ["Dr. Smith", "Pat Client"] {
        assert_eq!(s.create_attendee(&id, name).await.0, StatusCode::OK);
    }
    let (status, got) = s.api(json!({"action": "get-meeting", "meetingId": id})).await;
    assert_eq!((status, &got["provider"]), (StatusCode::OK, &json!("chime")));
    assert_eq!(got["meeting"]["FakeFutureField"], json!({"Nested": [1, 2, 3]}));
    assert_eq!(fake.count(Operation::GetMeeting), 1);

    let (status, list) = s.api(json!({"action": "list-attendees", "meetingId": id})).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let list = list["attendees"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for a in list {
        assert!(a.get("JoinToken").is_none(), "listings hand out no JoinTokens: {a}");
        assert_eq!(a["FakeFutureField"], json!("attendee"));
    }

    let (status, body) = s.api(json!({"action": "delete-meeting", "meetingId": id})).await;
    assert_eq!((status, &body["provider"]), (StatusCode::OK, &json!("chime")), "{body}");
    assert!(!fake.meeting_exists(&id), "deleted at Chime");
    let (status, _) = s.api(json!({"action": "get-meeting", "meetingId": id})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let log = s.state.store.audit_for_meeting(MeetingId::parse(&id).unwrap()).await.unwrap();
    let actions: Vec<(&str, Option<&str>)> = log.iter().map(|l| (l.action.as_str(), l.detail.as_deref())).collect();
    assert_eq!(actions[0], ("meeting.created", Some("provider=chime")));
    assert_eq!(actions.last().unwrap(), &("meeting.deleted", Some("provider=chime")));
    all_signed(&fake);
}

#[tokio::test]
async fn listing_more_than_a_page_of_chime_attendees_follows_next_token() {
    let fake = fake().await;
    let s = TestServer::with_chime(&fake, |_| {}).await;
    let id = meeting_id(&create(&s, json!({"action": "create-meeting"})).await);
    let creates = (0..120).map(|i| {
        let (s, id) = (&s, id.clone());
        async move { s.create_attendee(&id, &format!("Guest {i}")).await.0 }
    });
    assert!(futures::future::join_all(creates).await.iter().all(|st| *st == StatusCode::OK));
    let (_, list) = s.api(json!({"action": "list-attendees", "meetingId": id})).await;
    assert_eq!(list["attendees"].as_array().unwrap().len(), 120);
    assert_eq!(fake.count(Operation::ListAttendees), 2, "two pages of at most 100");
}

#[tokio::test]
async fn a_repeated_create_meeting_for_an_appointment_returns_the_live_meeting_on_both_providers() {
    let fake = fake().await;
    for chime in [true, false] {
        let s = TestServer::with_chime(&fake, |c| c.aws_credentials_present = chime).await;
        let appointment = format!("appt-{}", uuid::Uuid::new_v4().simple());
        let body = json!({"action": "create-meeting", "appointmentId": appointment});
        let first = create(&s, body.clone()).await;
        // Retries, some at once: still one meeting.
        let again = futures::future::join_all((0..5).map(|_| create(&s, body.clone()))).await;
        for other in &again {
            assert_eq!(meeting_id(other), meeting_id(&first), "chime={chime}");
            assert_eq!(other["provider"], first["provider"]);
        }
        if chime {
            assert_eq!(fake.count(Operation::CreateMeeting), 1, "one meeting at Chime");
        }
        let log = s.state.store.audit_for_meeting(id_of(&first)).await.unwrap();
        assert_eq!(log.iter().filter(|l| l.action == "meeting.created").count(), 1);

        // Once it is deleted, the appointment gets a new one.
        s.api(json!({"action": "delete-meeting", "meetingId": meeting_id(&first)})).await;
        let next = create(&s, body).await;
        assert_ne!(meeting_id(&next), meeting_id(&first));
    }
}

#[tokio::test]
async fn an_appointments_meeting_that_chime_already_ended_is_replaced_by_a_new_one() {
    let fake = fake().await;
    let s = TestServer::with_chime(&fake, |_| {}).await;
    let body = json!({"action": "create-meeting", "appointmentId": 77});
    let first = create(&s, body.clone()).await;
    fake.end_meeting(&meeting_id(&first));
    let second = create(&s, body).await;
    assert_ne!(meeting_id(&second), meeting_id(&first));
    assert!(s.state.store.find_live_meeting(id_of(&first)).await.unwrap().is_none(), "the ended one is marked deleted");
    let log = s.state.store.audit_for_meeting(id_of(&first)).await.unwrap();
    assert_eq!(log.last().unwrap().detail.as_deref(), Some("provider=chime reason=gone"));
}

// ---------- errors ----------

#[tokio::test]
async fn every_chime_error_maps_onto_the_contracts_code_and_status_and_a_5xx_carries_no_aws_internals() {
    let fake = fake().await;
    let s = TestServer::with_chime(&fake, |c| c.chime.max_attempts = 1).await;
    let cases = [
        (400, "BadRequestException", 400, "BadRequest"),
        (401, "UnauthorizedException", 401, "Unauthorized"),
        (403, "ForbiddenException", 403, "Forbidden"),
        (404, "NotFoundException", 404, "NotFound"),
        (409, "ConflictException", 409, "Conflict"),
        (422, "UnprocessableEntityException", 422, "UnprocessableEntity"),
        (429, "ThrottlingException", 429, "Throttling"),
        (400, "LimitExceededException", 429, "Throttling"),
        (503, "ServiceUnavailableException", 503, "ServiceUnavailable"),
        (500, "ServiceFailureException", 500, "ServiceFailure"),
    ];
    for (chime_status, error_type, status, code) in cases {
        let id = meeting_id(&create(&s, json!({"action": "create-meeting"})).await);
        fake.fail(Some(Operation::CreateAttendee), Failure::error(chime_status, error_type), None);
        let (got, body) = s.create_attendee(&id, "Pat Client").await;
        fake.recover();
        assert_eq!((got.as_u16(), error_code(&body)), (status, code), "{error_type}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        if status >= 500 {
            for internal in ["internal", "arn:", "fake", "Exception", "request 42"] {
                assert!(!message.contains(internal), "{error_type}: the 5xx says {message:?}");
            }
        }
    }
}

// ---------- failover ----------

/// Creates a meeting while Chime fails its CreateMeeting with `failure`; returns the response and how long it took.
async fn create_while_chime_fails(failure: Failure, failover: bool) -> (StatusCode, Value, Duration, FakeChime, TestServer) {
    let fake = fake().await;
    let s = TestServer::with_chime(&fake, |c| c.failover = failover).await;
    fake.fail(Some(Operation::CreateMeeting), failure, None);
    let started = Instant::now();
    let (status, body) = s.api(json!({"action": "create-meeting", "appointmentId": 5})).await;
    (status, body, started.elapsed(), fake, s)
}

async fn assert_failed_over(body: &Value, s: &TestServer, reason: &str) {
    assert_eq!(body["provider"], json!("local"), "{body}");
    assert_eq!(body["failover"], json!({"from": "chime", "reason": reason}));
    assert!(body["meeting"]["MediaPlacement"]["SignalingUrl"].as_str().unwrap().ends_with("/ws"), "our own SFU");
    let log = s.state.store.audit_for_meeting(id_of(body)).await.unwrap();
    let expected = format!("provider=local failover_from=chime reason={reason}");
    assert_eq!(log[0].detail.as_deref(), Some(expected.as_str()));
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let series = format!("telehealth_failovers_total{{from=\"chime\",reason=\"{reason}\",to=\"local\"}} 1");
    assert!(metrics.contains(&series), "{series} in\n{metrics}");
}

#[tokio::test]
async fn a_chime_503_fails_over_to_the_local_sfu_after_the_sdks_retries() {
    let (status, body, took, fake, s) = create_while_chime_fails(Failure::unavailable(), true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_failed_over(&body, &s, "ServiceUnavailable").await;
    assert_eq!(fake.count(Operation::CreateMeeting), 3, "three tries (CHIME_MAX_ATTEMPTS)");
    println!("failover after Chime 503: {} ms", took.as_millis());
    // A later call for the meeting stays on its provider.
    let (status, got) = s.api(json!({"action": "get-meeting", "meetingId": meeting_id(&body)})).await;
    assert_eq!((status, &got["provider"]), (StatusCode::OK, &json!("local")));
    assert_eq!(fake.count(Operation::GetMeeting), 0);
}

#[tokio::test]
async fn chime_throttling_fails_over_to_the_local_sfu() {
    let (status, body, _, _, s) = create_while_chime_fails(Failure::throttling(), true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_failed_over(&body, &s, "Throttling").await;
}

#[tokio::test]
async fn a_hanging_chime_fails_over_within_the_call_timeout() {
    let (status, body, took, _, s) = create_while_chime_fails(Failure::Hang, true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_failed_over(&body, &s, "Timeout").await;
    println!("failover after a Chime hang: {} ms", took.as_millis());
    assert!(took < Duration::from_millis(1500 + 1500), "CHIME_TIMEOUT_MS (1.5 s here) bounds the wait: {took:?}");
}

#[tokio::test]
async fn with_failover_off_a_failing_chime_is_the_callers_error_and_nothing_is_stored() {
    for (failure, status, code) in [
        (Failure::unavailable(), 503, "ServiceUnavailable"),
        (Failure::throttling(), 429, "Throttling"),
        (Failure::Hang, 503, "ServiceUnavailable"),
    ] {
        let (got, body, _, fake, s) = create_while_chime_fails(failure, false).await;
        assert_eq!((got.as_u16(), error_code(&body)), (status, code), "{body}");
        assert_eq!(fake.live_meetings(), 0);
        let m = s.state.store.find_live_meeting_for_appointment("5").await.unwrap();
        assert!(m.is_none(), "no meeting stored");
    }
}

#[tokio::test]
async fn a_single_chime_503_is_retried_by_the_sdk_and_stays_on_chime() {
    let fake = fake().await;
    let s = TestServer::with_chime(&fake, |_| {}).await;
    fake.fail(Some(Operation::CreateMeeting), Failure::unavailable(), Some(1));
    let body = create(&s, json!({"action": "create-meeting"})).await;
    assert_eq!(body["provider"], json!("chime"));
    assert!(body.get("failover").is_none());
    assert_eq!(fake.count(Operation::CreateMeeting), 2);
}

#[tokio::test]
async fn a_bad_request_from_chime_does_not_fail_over() {
    let (status, body, _, _, _) = create_while_chime_fails(Failure::error(400, "BadRequestException"), true).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "BadRequest"), "{body}");
}

#[tokio::test]
async fn a_full_local_sfu_sends_new_meetings_to_chime_or_answers_503_without_it() {
    let fake = fake().await;
    // Full by meetings, then by participants; with Chime configured as the overflow, then without.
    for (by_meetings, chime) in [(true, true), (false, true), (true, false), (false, false)] {
        let s = TestServer::with_chime(&fake, |c| {
            c.provider = ProviderChoice::Local;
            c.aws_credentials_present = chime;
            if by_meetings {
                c.local_max_meetings = Some(1);
            } else {
                c.local_max_participants = Some(1);
            }
        })
        .await;
        let first = s.create_meeting().await;
        assert_eq!(first["provider"], json!("local"));
        // Someone connected: the local SFU now holds its one meeting and its one participant.
        let (_, att) = s.create_attendee(&meeting_id(&first), "Dr. Smith").await;
        let url = first["meeting"]["MediaPlacement"]["SignalingUrl"].as_str().unwrap();
        let mut client = signaling::SignalingClient::connect(url).await.unwrap();
        let token = att["attendee"]["JoinToken"].as_str().unwrap().to_owned();
        client.send(&signaling::ClientMessage::Join { token, audio_muted: true, video_muted: true }).await.unwrap();
        support::ws::next(&mut client, Duration::from_secs(5)).await;

        let (status, body) = s.api(json!({"action": "create-meeting"})).await;
        if chime {
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["provider"], json!("chime"));
            assert_eq!(body["failover"], json!({"from": "local", "reason": "AtCapacity"}));
        } else {
            assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"), "{body}");
        }
    }
}

// ---------- stickiness ----------

#[tokio::test]
async fn each_meeting_keeps_its_provider_across_a_restart() {
    let fake = fake().await;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let s = TestServer::start_in(dir.clone(), |c| chime_config(c, &fake)).await;
    let chime_meeting = meeting_id(&create(&s, json!({"action": "create-meeting"})).await);
    fake.fail(Some(Operation::CreateMeeting), Failure::unavailable(), None);
    let local_meeting = meeting_id(&create(&s, json!({"action": "create-meeting"})).await);
    fake.recover();
    let dir = s.stop().await;

    // Restarted with the local SFU as the primary: the Chime meeting still goes to Chime.
    let s = TestServer::start_in(dir.clone(), |c| {
        chime_config(c, &fake);
        c.provider = ProviderChoice::Local;
    })
    .await;
    let gets = fake.count(Operation::GetMeeting);
    let (status, body) = s.api(json!({"action": "get-meeting", "meetingId": chime_meeting})).await;
    assert_eq!((status, &body["provider"]), (StatusCode::OK, &json!("chime")), "{body}");
    assert_eq!(fake.count(Operation::GetMeeting), gets + 1);
    let (status, att) = s.create_attendee(&chime_meeting, "Pat Client").await;
    assert_eq!((status, &att["provider"]), (StatusCode::OK, &json!("chime")));
    let (_, body) = s.api(json!({"action": "get-meeting", "meetingId": local_meeting})).await;
    assert_eq!(body["provider"], json!("local"));
    let dir = s.stop().await;

    // Restarted without Chime at all: its meeting is not lost, only unreachable.
    let s = TestServer::start_in(dir, |_| {}).await;
    let (status, body) = s.api(json!({"action": "get-meeting", "meetingId": chime_meeting})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"), "{body}");
    let (status, _) = s.api(json!({"action": "get-meeting", "meetingId": local_meeting})).await;
    assert_eq!(status, StatusCode::OK);
}

// ---------- the standard AWS environment, in the real binary ----------

#[tokio::test]
async fn the_binary_reaches_chime_through_the_standard_aws_environment() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let c = fake.credentials();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_telehealth-gateway"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("HTTPS_ADDR", "off")
        .env("DATA_DIR", dir.path().join("data"))
        .env("TELEHEALTH_API_KEYS", "binary-test-key-0123456789")
        .env("AWS_ACCESS_KEY_ID", &c.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &c.secret_access_key)
        .env("AWS_SESSION_TOKEN", "a-session-token-from-sts")
        .env("AWS_REGION", &c.region)
        .env("AWS_ENDPOINT_URL_CHIME_SDK_MEETINGS", fake.url())
        .env("RTC_BIND_IPS", "127.0.0.1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.trim().strip_prefix("http:  ") {
                return rest.trim_end_matches('/').to_owned();
            }
        }
        panic!("no http line in the banner")
    })
    .await
    .unwrap();
    let res = reqwest::Client::new()
        .post(format!("{url}/api/aws-chime-video"))
        .bearer_auth("binary-test-key-0123456789")
        .json(&json!({"action": "create-meeting"}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!((&body["provider"], &body["demoMode"]), (&json!("chime"), &json!(false)), "{body}");
    assert!(fake.meeting_exists(&meeting_id(&body)));
    all_signed(&fake);
    let _ = child.start_kill();
}

#[tokio::test]
async fn the_fake_refuses_a_request_signed_with_another_secret_or_for_another_region() {
    let fake = fake().await;
    for (secret, region) in [("not-the-secret-key-000000000000000000000", "us-east-1"), (
        fake.credentials().secret_access_key.as_str(),
        "eu-west-1",
    )] {
        let s = TestServer::with_chime(&fake, |c| {
            let creds = c.chime.credentials.as_mut().unwrap();
            creds.1 = secret.to_owned();
            c.chime.region = Some(region.to_owned());
            c.failover = false;
        })
        .await;
        let (status, body) = s.api(json!({"action": "create-meeting"})).await;
        assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "Forbidden"), "{body}");
    }
    let problems: Vec<String> = fake.requests().into_iter().filter_map(|r| r.signature_problem).collect();
    assert_eq!(problems, ["signature mismatch", "signed for region eu-west-1, expected us-east-1"]);
}
