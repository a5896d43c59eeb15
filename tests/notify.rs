//! Notifications end to end: the real gateway, a real SMTP server (aiosmtpd, `support/smtp.rs`) and a local
//! SNS speaking its query protocol (`fake_chime::FakeSns`, SigV4 for service `sns` checked). Appointments are
//! made through `/api/appointments`; what arrives is read back from the servers.

mod common;
#[path = "support/smtp.rs"]
mod smtp;

use chrono::{DateTime, Duration as Span, Utc};
use common::*;
use fake_chime::{Credentials, FakeSns};
use reqwest::StatusCode;
use serde_json::{Value, json};
use smtp::{SinkOptions, SmtpSink};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use telehealth_gateway::config::Config;
use telehealth_gateway::ids::AppointmentId;
use telehealth_gateway::notify::{SmsType, SmtpConfig, SnsConfig};

const ZONE: chrono_tz::Tz = chrono_tz::America::New_York;
const CLINIC: &str = "Riverside Family Clinic";
const CLIENT: &str = "Jordan Example";

/// Quick retries and polls, so a test sees in a second what takes minutes in production.
fn fast(c: &mut Config) {
    c.clinic.outbox.retry_base = Duration::from_millis(200);
    c.clinic.outbox.retry_max = Duration::from_millis(800);
    c.clinic.outbox.poll = Duration::from_millis(200);
    c.clinic.outbox.claim_timeout = Duration::from_millis(1500);
    c.notify.practice_name = CLINIC.into();
    c.notify.timezone = ZONE;
    c.app_url = Some("https://clinic.example".into());
}

fn with_smtp(c: &mut Config, sink: &SmtpSink) {
    fast(c);
    c.notify.smtp = Some(SmtpConfig::new(&sink.url(), &format!("{CLINIC} <noreply@clinic.example>")).unwrap());
}

async fn schedule(s: &TestServer, minutes_ahead: i64, email: Option<&str>, phone: Option<&str>) -> Value {
    let start = Utc::now() + Span::minutes(minutes_ahead);
    let body = json!({
        "client_name": CLIENT,
        "client_email": email,
        "client_phone": phone,
        "practitioner": "Dr. Rivera",
        "start_time": start.to_rfc3339(),
        "duration_minutes": 30,
        "modality": "telehealth",
    });
    let res = s.client.post(s.url("/api/appointments")).bearer_auth(&s.key).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["appointment"].clone()
}

async fn outbox(s: &TestServer) -> Vec<Value> {
    let res = s.client.get(s.url("/api/outbox")).bearer_auth(&s.key).send().await.unwrap();
    res.json::<Value>().await.unwrap()["messages"].as_array().unwrap().clone()
}

/// The visit's date and time as the clinic's people read them, computed here independently of the templates.
fn local(start: &str) -> (String, String) {
    let t = DateTime::parse_from_rfc3339(start).unwrap().with_timezone(&ZONE);
    (t.format("%A, %B %-d, %Y").to_string(), t.format("%-I:%M %p %Z").to_string())
}

#[tokio::test]
async fn a_visit_half_an_hour_ahead_sends_the_confirmation_and_the_due_reminder_in_the_seeds_format() {
    let Some(sink) = SmtpSink::start_or_skip().await else { return };
    let s = TestServer::start_with(|c| with_smtp(c, &sink)).await;
    let a = schedule(&s, 30, Some("jordan@example.com"), None).await;
    let link = a["telehealth_link"].as_str().unwrap().to_owned();
    let (date, time) = local(a["start_time"].as_str().unwrap());

    let mails = sink.wait_for(2, Duration::from_secs(20)).await;
    let subject = |kind: &str| format!("Appointment {kind} - {date} (Telehealth)");
    let reminder = mails.iter().find(|m| m.subject.as_deref() == Some(&subject("Reminder"))).expect("the reminder");
    let confirmation = mails.iter().find(|m| m.subject.as_deref() == Some(&subject("Confirmation"))).expect("the confirmation");
    // The seed's reminder, word for word.
    let expected = format!(
        "Dear {CLIENT},\n\nThis is a reminder that you have an appointment scheduled for:\n\nDate: {date}\nTime: {time}\n\
         Type: Telehealth (Video)\n\nJoin your video session here:\n{link}\n\nPlease join 5 minutes early to test your connection.\n\n\
         Best regards,\n{CLINIC}"
    );
    assert_eq!(reminder.body.replace("\r\n", "\n").trim_end(), expected);
    assert!(confirmation.body.contains(&link) && confirmation.body.contains("Type: Telehealth (Video)"));
    for m in [reminder, confirmation] {
        assert_eq!(m.rcpt_to, ["jordan@example.com"]);
        assert_eq!(m.from_address.as_deref(), Some("noreply@clinic.example"));
        assert!(m.message_id.as_deref().is_some_and(|id| id.starts_with("<outbox-")));
    }

    // The link works: the join page is served, and its invite admits the patient.
    let path = link.strip_prefix("https://clinic.example").unwrap();
    let page = s.client.get(s.url(path)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let invite = path.split("invite=").nth(1).unwrap();
    let (status, joined) = s
        .api_with(None, json!({"action": "create-attendee", "meetingId": a["telehealth_room_id"], "attendeeName": CLIENT, "invite": invite}))
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");

    let states: Vec<_> = outbox(&s).await.iter().map(|m| m["state"].as_str().unwrap().to_owned()).collect();
    assert_eq!(states, ["sent", "sent"]);
    s.stop().await;
}

#[tokio::test]
async fn with_smtp_down_messages_wait_and_go_out_exactly_once_when_it_is_back() {
    let Some(mut sink) = SmtpSink::start_or_skip().await else { return };
    sink.stop();
    let s = TestServer::start_with(|c| with_smtp(c, &sink)).await;
    schedule(&s, 30, Some("jordan@example.com"), None).await;
    // Tried, failed, waiting.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let msgs = outbox(&s).await;
        if msgs.len() == 2 && msgs.iter().all(|m| m["state"] == "pending" && m["attempts"].as_u64() >= Some(2)) {
            assert!(msgs.iter().all(|m| m["last_error"].as_str().is_some_and(|e| !e.contains("jordan"))));
            break;
        }
        assert!(Instant::now() < deadline, "{msgs:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = Instant::now();
    sink.restart().await;
    sink.wait_for(2, Duration::from_secs(15)).await;
    let delay = back.elapsed();
    eprintln!("outbox delivery delay after SMTP came back: {} ms", delay.as_millis());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mails = sink.messages();
    assert_eq!(mails.len(), 2, "each exactly once");
    let ids: HashSet<_> = mails.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(ids.len(), 2);
    assert!(outbox(&s).await.iter().all(|m| m["state"] == "sent"));
    s.stop().await;
}

#[tokio::test]
async fn text_messages_go_through_sns_publish_signed_for_sns() {
    let creds = Credentials::default();
    let sns = FakeSns::start(creds.clone()).await;
    let s = TestServer::start_with(|c| {
        fast(c);
        c.notify.sms = Some(SnsConfig {
            region: Some(creds.region.clone()),
            endpoint_url: Some(sns.url()),
            credentials: Some((creds.access_key_id.clone(), creds.secret_access_key.clone(), None)),
            sms_type: SmsType::Transactional,
            ..SnsConfig::default()
        });
    })
    .await;
    let a = schedule(&s, 30, None, Some("+1 (415) 555-0123")).await;
    let link = a["telehealth_link"].as_str().unwrap();
    let (date, _) = local(a["start_time"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    while sns.published().len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", sns.requests().len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let texts: Vec<_> = sns.published();
    assert!(texts.iter().all(|t| t.phone == "+14155550123"));
    assert!(texts.iter().all(|t| t.attributes.get("AWS.SNS.SMS.SMSType").map(String::as_str) == Some("Transactional")));
    let seed = format!("Appointment Reminder - {date} (Telehealth)\n\nJoin your video session: {link}\n\nPlease join 5 minutes early.");
    assert!(texts.iter().any(|t| t.message == seed), "the seed's SMS, word for word: {texts:#?}");
    s.stop().await;
}

/// The real binary, run as a separate process so it can be killed with SIGKILL.
struct Gateway {
    child: std::process::Child,
    url: String,
}

const KEY: &str = "outbox-test-key-0123456789abcdef";

impl Gateway {
    async fn start(data: &std::path::Path, port: u16, smtp_url: &str, run: u32) -> Self {
        let log = data.join(format!("gateway-{run}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_telehealth-gateway"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATA_DIR", data)
            .env("CERTS_DIR", data.join("certs"))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("HTTPS_ADDR", "off")
            .env("RTC_BIND_IPS", "127.0.0.1")
            .env("TELEHEALTH_API_KEYS", KEY)
            .env("SMTP_URL", smtp_url)
            .env("SMTP_FROM", "noreply@clinic.example")
            .env("CLINIC_NAME", CLINIC)
            .env("OUTBOX_RETRY_BASE_MS", "200")
            .env("OUTBOX_RETRY_MAX_MS", "800")
            .env("OUTBOX_POLL_MS", "200")
            .env("OUTBOX_CLAIM_TIMEOUT_MS", "1500")
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.get(format!("{url}/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the gateway did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, url }
    }

    fn kill(&mut self) {
        // SIGKILL: no shutdown, no flush, nothing.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

#[tokio::test]
async fn a_gateway_killed_mid_delivery_loses_nothing_and_sends_nothing_twice() {
    let slow = SinkOptions { data_delay: Some(Duration::from_secs(3)), ..Default::default() };
    let Some(mut sink) = SmtpSink::start_with_or_skip(slow).await else { return };
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut gw = Gateway::start(data.path(), port, &sink.url(), 1).await;
    let client = reqwest::Client::new();
    let mut links = Vec::new();
    for i in 0..3 {
        let body = json!({
            "client_name": format!("{CLIENT} {i}"), "client_email": format!("patient{i}@example.com"),
            "practitioner": "Dr. Rivera", "start_time": (Utc::now() + Span::minutes(30)).to_rfc3339(),
            "duration_minutes": 30, "modality": "telehealth",
        });
        let res = client.post(format!("{}/api/appointments", gw.url)).bearer_auth(KEY).json(&body).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        links.push(res.json::<Value>().await.unwrap()["appointment"]["telehealth_link"].as_str().unwrap().to_owned());
    }
    // The first message is on the server, which has not answered yet: kill the gateway now.
    sink.wait_for(1, Duration::from_secs(15)).await;
    gw.kill();
    sink.restart_with(SinkOptions::default()).await;

    let mut gw = Gateway::start(data.path(), port, &sink.url(), 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let settled = loop {
        let res = client.get(format!("{}/api/outbox", gw.url)).bearer_auth(KEY).send().await.unwrap();
        let msgs = res.json::<Value>().await.unwrap()["messages"].as_array().unwrap().clone();
        if msgs.len() == 6 && msgs.iter().all(|m| m["state"] == "sent" || m["state"] == "unknown") {
            break msgs;
        }
        assert!(Instant::now() < deadline, "{msgs:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mails = sink.messages();
    let ids: Vec<_> = mails.iter().map(|m| m.message_id.clone().unwrap()).collect();
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!((mails.len(), unique.len()), (6, 6), "every message arrived, none twice: {ids:?}");
    let unknown = settled.iter().filter(|m| m["state"] == "unknown").count();
    assert!(unknown <= 1, "only the message in flight at the kill is uncertain: {settled:#?}");
    gw.kill();

    // Neither run logged a client's name, address, or link.
    for run in 1..=2 {
        let log = std::fs::read_to_string(data.path().join(format!("gateway-{run}.log"))).unwrap();
        for (i, link) in links.iter().enumerate() {
            for secret in [format!("{CLIENT} {i}"), format!("patient{i}@example.com"), link.clone()] {
                assert!(!log.contains(&secret), "run {run} logged patient data");
            }
        }
        assert!(!log.contains("invite="), "run {run} logged an invite");
    }
}

#[tokio::test]
async fn a_refused_address_or_the_last_attempt_fails_visibly_and_retry_sends_it_once() {
    let Some(mut sink) = SmtpSink::start_or_skip().await else { return };
    sink.stop();
    let s = TestServer::start_with(|c| {
        with_smtp(c, &sink);
        c.clinic.outbox.max_attempts = 2;
    })
    .await;
    // Down for both attempts: failed after the second.
    let waiting = schedule(&s, 30, Some("jordan@example.com"), None).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let failed = loop {
        let msgs = outbox(&s).await;
        let mine: Vec<_> = msgs.iter().filter(|m| m["appointment_id"] == waiting["id"]).cloned().collect();
        if mine.len() == 2 && mine.iter().all(|m| m["state"] == "failed") {
            assert!(mine.iter().all(|m| m["attempts"] == 2), "{mine:#?}");
            break mine;
        }
        assert!(Instant::now() < deadline, "{msgs:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sink.restart().await;
    // Refused for good by the server (550): failed at the first attempt.
    let refused = schedule(&s, 3 * 24 * 60, Some("reject-me@example.com"), None).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let msgs = outbox(&s).await;
        let theirs: Vec<_> = msgs.iter().filter(|m| m["appointment_id"] == refused["id"] && m["kind"] == "confirmation").collect();
        if theirs.len() == 1 && theirs[0]["state"] == "failed" {
            assert_eq!(theirs[0]["last_error"], "smtp 550");
            break;
        }
        assert!(Instant::now() < deadline, "{msgs:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(sink.messages().is_empty(), "failed messages are not sent by themselves");

    // A person presses Retry on each failed one: each goes out exactly once.
    for m in &failed {
        let res = s.client.post(s.url(&format!("/api/outbox/{}/retry", m["id"].as_str().unwrap()))).bearer_auth(&s.key).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    sink.wait_for(2, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.messages().len(), 2);
    let log = s.state.store.audit_for_appointment(AppointmentId::parse(waiting["id"].as_str().unwrap()).unwrap()).await.unwrap();
    assert_eq!(log.iter().filter(|l| l.action == "notification.retried").count(), 2);
    s.stop().await;
}
