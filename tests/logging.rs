//! Patient data never reaches a log line: run a whole visit's worth of API calls (including refused ones that
//! carry a name) against the real server with the default `info` filter, on the local path and on the Chime path
//! (against the fake Chime, with failures), capture everything tracing writes, and look for the name, the
//! tokens, the keys and the AWS secrets.

mod common;

use common::*;
use fake_chime::{Credentials, FakeChime, Failure};
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_log_at_the_default_level_contains_no_names_tokens_or_keys() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let name = "Zebulon Quixote-Patient";
    let s = TestServer::start().await;
    let created = s.create_meeting().await;
    let id = meeting_id(&created);
    let invite = invite_of(&created);
    let (_, att) = s
        .api_with(None, json!({"action": "create-attendee", "meetingId": id, "attendeeName": name, "invite": invite}))
        .await;
    let join_token = att["attendee"]["JoinToken"].as_str().expect("attendee created").to_owned();
    // Refused requests that carry the name: the error message echoes it to the caller, never to the log.
    s.api(json!({"action": "create-attendee", "meetingId": id, "attendeeName": [name]})).await;
    s.api(json!({"action": "create-attendee", "meetingId": id, "attendeeName": format!("{name}{}", "x".repeat(64))})).await;
    s.api_with(Some(&invite), json!({"action": "get-meeting", "meetingId": id})).await;
    s.client.get(s.url(&format!("/telehealth-aws.html?meeting={id}&invite={invite}"))).send().await.unwrap();
    s.api(json!({"action": "delete-meeting", "meetingId": id})).await;
    let key = s.key.clone();
    s.stop().await;

    // The same on the Chime path: AWS keys and a session token in the configuration, Chime's JoinToken, our
    // presence token, a failover after Chime errors carrying internals, and usage.
    let fake = FakeChime::start(Credentials::default()).await;
    let session_token = "IQoJb3JpZ2luX2VjEFAKE-session-token-value";
    let s = TestServer::with_chime(&fake, |c| c.chime.credentials.as_mut().unwrap().2 = Some(session_token.into())).await;
    let chime = s.create_meeting().await;
    let chime_id = meeting_id(&chime);
    let chime_invite = invite_of(&chime);
    let (_, att) = s
        .api_with(None, json!({"action": "create-attendee", "meetingId": chime_id, "attendeeName": name, "invite": chime_invite}))
        .await;
    let chime_join_token = att["attendee"]["JoinToken"].as_str().expect("a Chime attendee").to_owned();
    let presence = att["presence"]["token"].as_str().unwrap().to_owned();
    let (_, joined) = s.api_with(None, json!({"action": "attendee-presence", "token": presence, "event": "joined"})).await;
    assert_eq!(joined["success"], json!(true), "{joined}");
    fake.fail(None, Failure::service_failure(), None);
    s.api(json!({"action": "create-meeting"})).await;
    s.create_attendee(&chime_id, name).await;
    fake.recover();
    s.api(json!({"action": "get-usage"})).await;
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    s.stop().await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains(&id), "the capture works and ids are logged:\n{log}");
    assert!(log.contains(&chime_id), "the Chime meeting is logged by id:\n{log}");
    let aws = fake.credentials();
    let secrets = [
        ("name", name),
        ("invite", &invite),
        ("join token", &join_token),
        ("API key", &key),
        ("Chime meeting invite", &chime_invite),
        ("Chime JoinToken", &chime_join_token),
        ("presence token", &presence),
        ("AWS secret key", &aws.secret_access_key),
        ("AWS session token", session_token),
    ];
    for (what, secret) in secrets {
        assert!(!log.contains(secret), "the log contains the {what}:\n{log}");
        assert!(!metrics.contains(secret), "/metrics contains the {what}");
    }
    assert!(!log.contains("Zebulon"), "not even part of the name:\n{log}");
}
