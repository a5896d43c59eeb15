//! The notification transports against real servers: `SmtpSender` through a real SMTP server (aiosmtpd, see
//! `support/smtp.rs`) with and without STARTTLS, `SnsSender` through the SigV4-checking fake SNS. Each failure
//! is classified (retry later or give up), and no error text carries the recipient, the name or the message.

#[path = "support/smtp.rs"]
mod smtp;

use chrono::{TimeZone, Utc};
use fake_chime::{Credentials, FakeSns, SnsFailure};
use smtp::{SinkOptions, SmtpSink};
use std::time::{Duration, Instant};
use telehealth_gateway::notify::templates::{self, EmailContent, Notice, NoticeKind};
use telehealth_gateway::notify::{SendError, SmsType, SmtpConfig, SmtpSender, SnsConfig, SnsSender};

const PATIENT: &str = "Jane Doe";
const EMAIL: &str = "jane.doe@patient.example";
const PHONE: &str = "+15551234567";
const LINK: &str = "https://clinic.example/telehealth-aws.html?meeting=7f1c6b0e-3a52-4c1e-9d57-2b8f3c4d5e6f";

fn notice() -> Notice<'static> {
    Notice {
        kind: NoticeKind::Reminder,
        client_name: PATIENT,
        starts_at: Utc.with_ymd_and_hms(2026, 12, 3, 21, 30, 0).unwrap(),
        duration_minutes: 50,
        telehealth: true,
        link: Some(LINK),
        practice_name: "Riverside Family Practice",
        tz: chrono_tz::America::New_York,
    }
}

/// The error names neither whom the message was for nor what it said.
fn assert_no_patient_data(e: &SendError, recipient: &str) {
    let text = format!("{e} {e:?}");
    for secret in [recipient, PATIENT, LINK, "Dear", "reminder that"] {
        assert!(!text.contains(secret), "{text:?} contains {secret:?}");
    }
    let local_part = recipient.split('@').next().unwrap();
    assert!(!text.contains(local_part), "{text:?} contains {local_part:?}");
}

// ---------- email ----------

fn smtp_config(sink: &SmtpSink) -> SmtpConfig {
    let mut config = SmtpConfig::new(&sink.url(), "Riverside Family Practice <noreply@clinic.example>").unwrap();
    config.timeout = Duration::from_secs(10);
    config
}

async fn send(config: &SmtpConfig, to: &str, content: &EmailContent) -> Result<(), SendError> {
    SmtpSender::new(config).unwrap().send(to, content, "outbox-42").await
}

#[tokio::test]
async fn an_email_reaches_a_real_smtp_server_with_its_subject_body_addresses_message_id_and_date() {
    let Some(sink) = SmtpSink::start_or_skip().await else { return };
    let content = templates::email(&notice());
    let before = Utc::now();
    send(&smtp_config(&sink), EMAIL, &content).await.unwrap();

    let mail = sink.wait_for(1, Duration::from_secs(5)).await.remove(0);
    assert_eq!((mail.mail_from.as_str(), mail.rcpt_to.as_slice()), ("noreply@clinic.example", [EMAIL.to_owned()].as_slice()));
    assert_eq!(mail.subject.as_deref(), Some("Appointment Reminder - Thursday, December 3, 2026 (Telehealth)"));
    assert_eq!(mail.from_name.as_deref(), Some("Riverside Family Practice"));
    assert_eq!(mail.from_address.as_deref(), Some("noreply@clinic.example"));
    assert_eq!(mail.to_address.as_deref(), Some(EMAIL));
    assert_eq!(mail.message_id.as_deref(), Some("<outbox-42@telehealth-gateway>"));
    let date = chrono::DateTime::parse_from_rfc3339(mail.date.as_deref().expect("a Date header")).unwrap();
    assert!((date.timestamp() - before.timestamp()).abs() <= 5, "Date {date} is now");
    // The seed's text, intact, with CRLF line ends on the wire (the last line's included, nothing more).
    assert_eq!(mail.body.replace("\r\n", "\n"), format!("{}\n", content.body));
    let raw = String::from_utf8(mail.raw).unwrap();
    assert!(!raw.replace("\r\n", "").contains('\n'), "every line ends with CRLF");
    assert!(raw.to_ascii_lowercase().contains("content-type: text/plain"), "{raw}");
}

#[tokio::test]
async fn a_full_message_id_is_kept_as_given() {
    let Some(sink) = SmtpSink::start_or_skip().await else { return };
    let sender = SmtpSender::new(&smtp_config(&sink)).unwrap();
    let id = telehealth_gateway::notify::email::message_id(7);
    sender.send(EMAIL, &templates::email(&notice()), &id).await.unwrap();
    let mail = sink.wait_for(1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(mail.message_id.as_deref(), Some("<outbox-7@telehealth-gateway>"));
}

#[tokio::test]
async fn a_stopped_server_is_retryable_and_the_same_sender_delivers_once_it_is_back() {
    let Some(mut sink) = SmtpSink::start_or_skip().await else { return };
    let sender = SmtpSender::new(&smtp_config(&sink)).unwrap();
    let content = templates::email(&notice());
    sink.stop();
    let e = sender.send(EMAIL, &content, "outbox-1").await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("connection"), "{e}");
    assert_no_patient_data(&e, EMAIL);

    sink.restart().await;
    sender.send(EMAIL, &content, "outbox-1").await.unwrap();
    assert_eq!(sink.wait_for(1, Duration::from_secs(5)).await.len(), 1);
}

#[tokio::test]
async fn a_refused_recipient_is_permanent_and_a_deferred_one_retryable() {
    let Some(sink) = SmtpSink::start_or_skip().await else { return };
    let config = smtp_config(&sink);
    let content = templates::email(&notice());

    let rejected = "reject-jane.doe@patient.example";
    let e = send(&config, rejected, &content).await.unwrap_err();
    assert_eq!(e, SendError::Permanent("smtp 550".into()));
    assert_no_patient_data(&e, rejected);

    let deferred = "defer-jane.doe@patient.example";
    let e = send(&config, deferred, &content).await.unwrap_err();
    assert_eq!(e, SendError::Retryable("smtp 451".into()));
    assert_no_patient_data(&e, deferred);
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn an_invalid_address_is_permanent_and_never_reaches_the_server() {
    let Some(sink) = SmtpSink::start_or_skip().await else { return };
    let bad = "jane.doe at patient.example";
    let e = send(&smtp_config(&sink), bad, &templates::email(&notice())).await.unwrap_err();
    assert_eq!(e, SendError::Permanent("invalid recipient address".into()));
    assert_no_patient_data(&e, bad);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_server_slower_than_the_timeout_is_retryable_within_the_timeout() {
    let options = SinkOptions { data_delay: Some(Duration::from_secs(5)), ..Default::default() };
    let Some(sink) = SmtpSink::start_with_or_skip(options).await else { return };
    let mut config = smtp_config(&sink);
    config.timeout = Duration::from_millis(800);
    let started = Instant::now();
    let e = send(&config, EMAIL, &templates::email(&notice())).await.unwrap_err();
    assert_eq!(e, SendError::Retryable("smtp timeout".into()));
    assert!(started.elapsed() < Duration::from_secs(3), "gave up after {:?}", started.elapsed());
}

/// A self-signed certificate for 127.0.0.1, written as PEM files; returns the certificate's PEM.
fn certificate(dir: &std::path::Path) -> (Vec<u8>, std::path::PathBuf, std::path::PathBuf) {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    (generated.cert.pem().into_bytes(), cert, key)
}

#[tokio::test]
async fn starttls_delivers_to_a_server_whose_certificate_is_trusted_and_refuses_an_unknown_one() {
    let certs = tempfile::tempdir().unwrap();
    let (pem, cert, key) = certificate(certs.path());
    let options = SinkOptions { tls: Some((cert, key)), ..Default::default() };
    let Some(sink) = SmtpSink::start_with_or_skip(options).await else { return };
    let from = "noreply@clinic.example";
    let mut config = SmtpConfig::new(&format!("{}?tls=required", sink.url()), from).unwrap();
    let content = templates::email(&notice());

    // The system's roots do not know a self-signed certificate.
    let e = send(&config, EMAIL, &content).await.unwrap_err();
    assert_eq!(e, SendError::Retryable("smtp tls failure".into()));
    assert_no_patient_data(&e, EMAIL);

    config.extra_root_pem = Some(pem);
    send(&config, EMAIL, &content).await.unwrap();
    let mail = sink.wait_for(1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(mail.body.replace("\r\n", "\n"), format!("{}\n", content.body));
}

// ---------- SMS ----------

fn sns_config(fake: &FakeSns, secret: &str) -> SnsConfig {
    let c = fake.credentials();
    SnsConfig {
        region: Some(c.region.clone()),
        endpoint_url: Some(fake.url()),
        credentials: Some((c.access_key_id.clone(), secret.to_owned(), None)),
        sender_id: Some("Riverside".into()),
        max_attempts: 1,
        attempt_timeout: Duration::from_secs(5),
        call_timeout: Duration::from_secs(10),
        ..SnsConfig::default()
    }
}

async fn fake_sns() -> FakeSns {
    FakeSns::start(Credentials::default()).await
}

#[tokio::test]
async fn a_text_reaches_sns_signed_for_sns_with_its_number_text_and_sms_attributes() {
    let fake = fake_sns().await;
    let sender = SnsSender::new(&sns_config(&fake, &fake.credentials().secret_access_key)).await;
    let text = templates::sms(&notice());
    let id = sender.send(PHONE, &text).await.unwrap();

    let published = fake.published();
    assert_eq!(published.len(), 1);
    let p = &published[0];
    assert_eq!((p.phone.as_str(), p.message.as_str(), p.message_id.as_str()), (PHONE, text.as_str(), id.as_str()));
    assert_eq!(p.attributes.get("AWS.SNS.SMS.SMSType").map(String::as_str), Some("Transactional"));
    assert_eq!(p.attributes.get("AWS.SNS.SMS.SenderID").map(String::as_str), Some("Riverside"));
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!((requests[0].action.as_str(), requests[0].signature_problem.as_deref()), ("Publish", None));
}

#[tokio::test]
async fn the_sms_type_follows_the_configuration_and_the_sender_id_is_optional() {
    let fake = fake_sns().await;
    let mut config = sns_config(&fake, &fake.credentials().secret_access_key);
    config.sms_type = SmsType::Promotional;
    config.sender_id = None;
    SnsSender::new(&config).await.send(PHONE, "hello").await.unwrap();
    let attributes = &fake.published()[0].attributes;
    assert_eq!(attributes.get("AWS.SNS.SMS.SMSType").map(String::as_str), Some("Promotional"));
    assert!(!attributes.contains_key("AWS.SNS.SMS.SenderID"));
}

#[tokio::test]
async fn a_wrong_secret_fails_the_signature_check_and_nothing_is_sent() {
    let fake = fake_sns().await;
    let sender = SnsSender::new(&sns_config(&fake, "not-the-secret-key-at-all-0000000000000")).await;
    let e = sender.send(PHONE, &templates::sms(&notice())).await.unwrap_err();
    assert_eq!(e, SendError::Retryable("sns SignatureDoesNotMatch (403)".into()));
    assert_no_patient_data(&e, PHONE);
    assert!(fake.published().is_empty());
    assert_eq!(fake.requests()[0].signature_problem.as_deref(), Some("signature mismatch"));
}

#[tokio::test]
async fn throttling_and_server_errors_are_retryable_and_a_refused_number_is_permanent() {
    let fake = fake_sns().await;
    let sender = SnsSender::new(&sns_config(&fake, &fake.credentials().secret_access_key)).await;
    let text = templates::sms(&notice());
    let cases = [
        (SnsFailure::Throttling, SendError::Retryable("sns Throttling (400)".into())),
        (SnsFailure::Throttled, SendError::Retryable("sns Throttled (429)".into())),
        (SnsFailure::InternalError, SendError::Retryable("sns InternalError (500)".into())),
        // SNS's message for this one repeats the number; ours must not.
        (SnsFailure::InvalidParameter, SendError::Permanent("sns InvalidParameter (400)".into())),
    ];
    for (failure, expected) in cases {
        fake.fail_next(1, failure.clone());
        let e = sender.send(PHONE, &text).await.unwrap_err();
        assert_eq!(e, expected, "{failure:?}");
        assert_no_patient_data(&e, PHONE);
    }
    assert!(fake.published().is_empty());
    sender.send(PHONE, &text).await.unwrap();
    assert_eq!(fake.published().len(), 1, "the fake recovers after the failures it was told");
}

#[tokio::test]
async fn the_sdk_retries_a_throttled_text_within_its_attempts() {
    let fake = fake_sns().await;
    let mut config = sns_config(&fake, &fake.credentials().secret_access_key);
    config.max_attempts = 3;
    fake.fail_next(2, SnsFailure::Throttling);
    SnsSender::new(&config).await.send(PHONE, "hello").await.unwrap();
    assert_eq!((fake.requests().len(), fake.published().len()), (3, 1));
}

#[tokio::test]
async fn a_hanging_sns_is_a_retryable_timeout() {
    let fake = fake_sns().await;
    let mut config = sns_config(&fake, &fake.credentials().secret_access_key);
    (config.attempt_timeout, config.call_timeout) = (Duration::from_millis(300), Duration::from_millis(600));
    fake.fail_next(1, SnsFailure::Hang);
    let started = Instant::now();
    let e = SnsSender::new(&config).await.send(PHONE, "hello").await.unwrap_err();
    assert_eq!(e, SendError::Retryable("sns timeout".into()));
    assert!(started.elapsed() < Duration::from_secs(3), "gave up after {:?}", started.elapsed());
}

#[tokio::test]
async fn an_invalid_number_is_permanent_and_never_reaches_sns() {
    let fake = fake_sns().await;
    let sender = SnsSender::new(&sns_config(&fake, &fake.credentials().secret_access_key)).await;
    for bad in ["555-1234", "15551234567", "+1 555 123 4567"] {
        let e = sender.send(bad, "hello").await.unwrap_err();
        assert!(matches!(e, SendError::Permanent(_)), "{bad}: {e}");
        assert_no_patient_data(&e, bad);
    }
    assert!(fake.requests().is_empty());
}

/// `AWS_ENDPOINT_URL_SNS` is read by the SDK itself. The environment is process-wide, so the check runs in a
/// child process (this test binary again, filtered to this test) rather than changing it under other tests.
#[tokio::test]
async fn the_standard_aws_endpoint_url_sns_variable_is_honoured() {
    const CHILD: &str = "NOTIFY_TRANSPORTS_ENDPOINT_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let c = Credentials::default();
        let config = SnsConfig {
            region: Some(c.region.clone()),
            credentials: Some((c.access_key_id, c.secret_access_key, None)),
            max_attempts: 1,
            ..SnsConfig::default()
        };
        SnsSender::new(&config).await.send(PHONE, "via the environment").await.unwrap();
        return;
    }
    let fake = fake_sns().await;
    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "the_standard_aws_endpoint_url_sns_variable_is_honoured", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("AWS_ENDPOINT_URL_SNS", fake.url())
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let published = fake.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].message, "via the environment");
}
