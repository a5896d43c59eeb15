//! `GET /metrics` on the real server: valid Prometheus text, API latencies by action and status, joins and
//! signaling frames over the real WebSocket, SFU counters read live while webrtc-rs peers exchange media,
//! and nothing in the body that identifies a meeting, a person or a machine.

mod common;
mod support;

use common::{TestServer, meeting_id};
use reqwest::StatusCode;
use serde_json::json;
use signaling::{ClientMessage, ServerMessage, SignalingClient};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use support::media_peer::{MediaPeer, VideoCodec, eventually as until_true};
use support::ws::{bridge, closed, next};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(5);

/// One scrape: every sample keyed by `name{label="value",…}` with labels sorted by name.
struct Scrape {
    body: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples.get(&key(name, labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())).copied()
    }

    /// The value, failing the test (with the body) when the series is missing.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| panic!("no series {name} {labels:?} in:\n{}", self.body))
    }
}

fn key(name: &str, labels: BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", pairs.join(","))
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the text exposition format strictly enough that a malformed line fails the test: comments are
/// `# HELP name …` or `# TYPE name <type>`, every other line `name{label="value",…} value`.
fn parse(body: &str) -> Result<HashMap<String, f64>, String> {
    let mut samples = HashMap::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name, rest) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let ok = match kind {
                Some("HELP") => is_metric_name(name),
                Some("TYPE") => is_metric_name(name) && ["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest),
                _ => false,
            };
            if !ok {
                return Err(format!("bad comment line: {line:?}"));
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| format!("no value: {line:?}"))?;
        let value: f64 = value.parse().map_err(|_| format!("bad value: {line:?}"))?;
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').ok_or_else(|| format!("unclosed labels: {line:?}"))?;
                (name, parse_labels(inner).map_err(|e| format!("{e}: {line:?}"))?)
            }
        };
        if !is_metric_name(name) {
            return Err(format!("bad metric name: {line:?}"));
        }
        if samples.insert(key(name, labels), value).is_some() {
            return Err(format!("duplicate series: {line:?}"));
        }
    }
    Ok(samples)
}

fn parse_labels(mut s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    while !s.is_empty() {
        let (name, rest) = s.split_once("=\"").ok_or("label without =\"")?;
        if !is_metric_name(name) || name.contains(':') {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.to_owned(), value);
        s = &rest[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
    Ok(labels)
}

async fn scrape(server: &TestServer) -> Scrape {
    let res = server.client.get(server.url("/metrics")).send().await.expect("request reaches the server");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(content_type.as_deref(), Some("text/plain; version=0.0.4; charset=utf-8"));
    let body = res.text().await.unwrap();
    let samples = parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    Scrape { body, samples }
}

/// Scrapes until `cond` holds for the series, or fails after `limit` (some counters move just after the
/// client has seen the effect, e.g. `joined` is counted once its send has returned).
async fn eventually(server: &TestServer, name: &str, labels: &[(&str, &str)], cond: impl Fn(f64) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = scrape(server).await;
        if s.get(name, labels).is_some_and(&cond) {
            return s;
        }
        assert!(Instant::now() < deadline, "{name} {labels:?} never reached the expected value:\n{}", s.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Guest {
    name: &'static str,
    attendee_id: String,
    token: String,
}

async fn meeting_with_guests(server: &TestServer, names: &[&'static str]) -> (serde_json::Value, String, Vec<Guest>) {
    let meeting = server.create_meeting().await;
    let id = meeting_id(&meeting);
    let mut guests = Vec::new();
    for &name in names {
        let (status, body) = server.create_attendee(&id, name).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        guests.push(Guest {
            name,
            attendee_id: body["attendee"]["AttendeeId"].as_str().unwrap().to_owned(),
            token: body["attendee"]["JoinToken"].as_str().unwrap().to_owned(),
        });
    }
    let url = meeting["meeting"]["MediaPlacement"]["SignalingUrl"].as_str().unwrap().to_owned();
    (meeting, url, guests)
}

async fn join(url: &str, token: &str) -> (SignalingClient, ServerMessage) {
    let mut client = SignalingClient::connect(url).await.expect("websocket connects");
    client.send(&ClientMessage::Join { token: token.into(), audio_muted: false, video_muted: false }).await.unwrap();
    let first = next(&mut client, T).await;
    (client, first)
}

const JOIN_RESULTS: [&str; 7] = ["ok", "unauthorized", "not_found", "full", "shutting_down", "unavailable", "timeout"];
const ACTIONS: [&str; 8] = [
    "create-meeting",
    "create-attendee",
    "delete-meeting",
    "get-meeting",
    "list-attendees",
    "get-usage",
    "attendee-presence",
    "invalid",
];
const OPERATIONS: [&str; 5] = ["create_meeting", "create_attendee", "get_meeting", "list_attendees", "delete_meeting"];

#[tokio::test]
async fn metrics_is_prometheus_text_with_every_documented_metric() {
    let server = TestServer::start().await;
    server.create_meeting().await;
    // A tenth of a second of CPU, so `process_cpu_seconds_total` has something to show below one second.
    let spin = Instant::now();
    while spin.elapsed() < Duration::from_millis(100) {
        std::hint::black_box(spin.elapsed());
    }
    let s = scrape(&server).await;
    for gauge in ["telehealth_meetings", "telehealth_participants", "telehealth_peer_connections"] {
        assert_eq!(s.value(gauge, &[]), 0.0, "{gauge}");
        assert!(s.body.contains(&format!("# TYPE {gauge} gauge\n")), "{gauge}");
    }
    for counter in [
        "telehealth_sfu_packets_received_total",
        "telehealth_sfu_packets_forwarded_total",
        "telehealth_sfu_bytes_forwarded_total",
        "telehealth_sfu_packets_skipped_total",
    ] {
        assert_eq!(s.value(counter, &[]), 0.0, "{counter}");
        assert!(s.body.contains(&format!("# TYPE {counter} counter\n")), "{counter}");
    }
    for source in ["viewer", "relayed"] {
        assert_eq!(s.value("telehealth_sfu_keyframe_requests_total", &[("source", source)]), 0.0);
    }
    for result in JOIN_RESULTS {
        assert_eq!(s.value("telehealth_joins_total", &[("result", result)]), 0.0, "{result}");
    }
    for direction in ["in", "out"] {
        assert_eq!(s.value("telehealth_signaling_messages_total", &[("direction", direction)]), 0.0);
    }
    assert!(s.body.contains("# TYPE telehealth_join_duration_seconds histogram\n"));
    assert_eq!(s.value("telehealth_join_duration_seconds_count", &[]), 0.0);
    assert_eq!(s.value("telehealth_join_duration_seconds_bucket", &[("le", "0.0005")]), 0.0);
    assert!(s.body.contains("# TYPE telehealth_api_request_duration_seconds histogram\n"));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(s.value("telehealth_build_info", &[("version", version)]), 1.0);
    // The provider counters: the create-meeting above was one local call; every series exists from the start.
    assert_eq!(s.value("telehealth_provider_requests_total", &[("provider", "local"), ("operation", "create_meeting")]), 1.0);
    assert_eq!(s.value("telehealth_provider_requests_total", &[("provider", "chime"), ("operation", "get_meeting")]), 0.0);
    assert_eq!(s.value("telehealth_meetings_cleaned_total", &[("provider", "local"), ("reason", "idle")]), 0.0);

    // The process collector (Linux). CPU is to the clock tick (10 ms), not truncated to whole seconds as
    // prometheus' own collector does: this process has used well under a second, and must not read 0.
    let cpu = s.value("process_cpu_seconds_total", &[]);
    assert!(cpu >= 0.05, "process_cpu_seconds_total {cpu}");
    assert!(s.body.contains("# TYPE process_cpu_seconds_total counter\n"));
    assert!(s.value("process_resident_memory_bytes", &[]) > 1_000_000.0);
    assert!(s.value("process_virtual_memory_bytes", &[]) > 0.0);
    assert!(s.value("process_open_fds", &[]) > 0.0);
    assert!(s.value("process_max_fds", &[]) > 0.0);
    assert!(s.value("process_start_time_seconds", &[]) > 1_600_000_000.0);
}

#[tokio::test]
async fn api_requests_are_timed_by_action_and_status() {
    let server = TestServer::start().await;
    let id = meeting_id(&server.create_meeting().await);
    let (status, _) = server.api_with(None, json!({"action": "create-meeting"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server.api(json!({"action": "get-meeting", "meetingId": uuid::Uuid::new_v4().to_string()})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.api(json!({"action": "list-attendees", "meetingId": id})).await;
    assert_eq!(status, StatusCode::OK);
    // An action nobody knows is `invalid`: the client's text never becomes a label value.
    let (status, _) = server.api(json!({"action": "export-patient-records"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let res = server.client.get(server.url(common::API)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);

    let s = scrape(&server).await;
    let count = |action: &str, status: &str| {
        s.get("telehealth_api_request_duration_seconds_count", &[("action", action), ("status", status)]).unwrap_or(0.0)
    };
    assert_eq!(count("create-meeting", "200"), 1.0, "{}", s.body);
    assert_eq!(count("create-meeting", "401"), 1.0, "{}", s.body);
    assert_eq!(count("get-meeting", "404"), 1.0, "{}", s.body);
    assert_eq!(count("list-attendees", "200"), 1.0, "{}", s.body);
    assert_eq!(count("invalid", "400"), 1.0, "{}", s.body);
    assert_eq!(count("invalid", "405"), 1.0, "{}", s.body);
    assert_eq!(count("create-attendee", "200"), 0.0);
    let sum = s.value("telehealth_api_request_duration_seconds_sum", &[("action", "create-meeting"), ("status", "200")]);
    assert!(sum > 0.0 && sum < 5.0, "create-meeting took {sum} s?");
    let all = s.value(
        "telehealth_api_request_duration_seconds_bucket",
        &[("action", "create-meeting"), ("status", "200"), ("le", "+Inf")],
    );
    assert_eq!(all, 1.0);
    assert!(!s.body.contains("export-patient-records"));
}

#[tokio::test]
async fn a_join_and_a_leave_move_participants_joins_and_signaling_counters() {
    let server = TestServer::start().await;
    let (_, url, guests) = meeting_with_guests(&server, &["Pat Client"]).await;
    let s = scrape(&server).await;
    assert_eq!(s.value("telehealth_participants", &[]), 0.0);
    assert_eq!(s.value("telehealth_signaling_messages_total", &[("direction", "in")]), 0.0);

    let (mut client, first) = join(&url, &guests[0].token).await;
    assert!(matches!(first, ServerMessage::Joined { .. }), "{first:?}");
    let s = eventually(&server, "telehealth_joins_total", &[("result", "ok")], |v| v == 1.0).await;
    assert_eq!(s.value("telehealth_participants", &[]), 1.0);
    assert_eq!(s.value("telehealth_meetings", &[]), 1.0);
    assert_eq!(s.value("telehealth_join_duration_seconds_count", &[]), 1.0);
    let took = s.value("telehealth_join_duration_seconds_sum", &[]);
    assert!(took > 0.0 && took < 5.0, "the join took {took} s?");
    assert_eq!(s.value("telehealth_join_duration_seconds_bucket", &[("le", "+Inf")]), 1.0);
    assert_eq!(s.value("telehealth_signaling_messages_total", &[("direction", "in")]), 1.0, "the join");
    let out = s.value("telehealth_signaling_messages_total", &[("direction", "out")]);
    assert!(out >= 1.0, "the joined");

    client.send(&ClientMessage::Ping { ts: Some(1) }).await.unwrap();
    assert_eq!(next(&mut client, T).await, ServerMessage::Pong { ts: Some(1) });
    let s = eventually(&server, "telehealth_signaling_messages_total", &[("direction", "out")], |v| v >= out + 1.0).await;
    assert_eq!(s.value("telehealth_signaling_messages_total", &[("direction", "in")]), 2.0, "join + ping");

    client.send(&ClientMessage::Leave).await.unwrap();
    assert!(closed(&mut client, T).await);
    let s = eventually(&server, "telehealth_participants", &[], |v| v == 0.0).await;
    assert_eq!(s.value("telehealth_meetings", &[]), 0.0);
    assert_eq!(s.value("telehealth_signaling_messages_total", &[("direction", "in")]), 3.0, "join + ping + leave");
    assert_eq!(s.value("telehealth_joins_total", &[("result", "ok")]), 1.0);
}

#[tokio::test]
async fn refused_joins_are_counted_by_result_and_not_timed() {
    let server = TestServer::start().await;
    let (meeting, url, guests) = meeting_with_guests(&server, &["Pat Client"]).await;
    let (_, first) = join(&url, "not-a-token").await;
    assert!(matches!(first, ServerMessage::Error { .. }), "{first:?}");
    let (status, _) = server.api(json!({"action": "delete-meeting", "meetingId": meeting_id(&meeting)})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, first) = join(&url, &guests[0].token).await;
    assert!(matches!(first, ServerMessage::Error { .. }), "{first:?}");

    let s = eventually(&server, "telehealth_joins_total", &[("result", "not_found")], |v| v == 1.0).await;
    assert_eq!(s.value("telehealth_joins_total", &[("result", "unauthorized")]), 1.0);
    assert_eq!(s.value("telehealth_joins_total", &[("result", "ok")]), 0.0);
    assert_eq!(s.value("telehealth_join_duration_seconds_count", &[]), 0.0);
    assert_eq!(s.value("telehealth_participants", &[]), 0.0);
    assert_eq!(s.value("telehealth_signaling_messages_total", &[("direction", "in")]), 2.0, "two join frames");
    assert_eq!(s.value("telehealth_signaling_messages_total", &[("direction", "out")]), 2.0, "two errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_through_the_sfu_shows_in_the_sfu_counters_at_scrape_time() {
    let server = TestServer::start().await;
    let (_, url, guests) = meeting_with_guests(&server, &["Dr. Smith", "Pat Client"]).await;
    let mut peers = Vec::new();
    for g in &guests {
        let (client, first) = join(&url, &g.token).await;
        assert!(matches!(first, ServerMessage::Joined { .. }), "{first:?}");
        let (tx, rx) = bridge(client);
        let (others, _) = mpsc::unbounded_channel();
        peers.push(MediaPeer::start(tx, rx, others, VideoCodec::Vp8).await.expect("peer starts"));
    }
    let s = eventually(&server, "telehealth_peer_connections", &[], |v| v == 2.0).await;
    assert_eq!(s.value("telehealth_participants", &[]), 2.0);
    assert_eq!(s.value("telehealth_meetings", &[]), 1.0);
    let (a, b) = (&guests[0].attendee_id, &guests[1].attendee_id);
    let flowing = until_true(Duration::from_secs(15), || {
        ["audio", "video"].iter().all(|k| peers[0].received.count(b, k) > 20 && peers[1].received.count(a, k) > 20)
    })
    .await;
    assert!(flowing, "media did not flow both ways");
    let s = scrape(&server).await;
    let (received, forwarded) =
        (s.value("telehealth_sfu_packets_received_total", &[]), s.value("telehealth_sfu_packets_forwarded_total", &[]));
    assert!(received > 80.0 && forwarded > 80.0, "{received} in, {forwarded} out");
    assert!(s.value("telehealth_sfu_bytes_forwarded_total", &[]) > forwarded * 12.0, "at least an RTP header each");
    // The exposition is the SFU's own counters, read when scraped, not a copy that could drift.
    let direct = server.state.rooms.sfu().stats.snapshot();
    assert!(direct.packets_in as f64 >= received && direct.packets_out as f64 >= forwarded);

    assert!(peers[1].send_pli().await > 0);
    eventually(&server, "telehealth_sfu_keyframe_requests_total", &[("source", "viewer")], |v| v >= 1.0).await;
    eventually(&server, "telehealth_sfu_keyframe_requests_total", &[("source", "relayed")], |v| v >= 1.0).await;

    for p in &peers {
        p.send(ClientMessage::Leave);
    }
    let s = eventually(&server, "telehealth_peer_connections", &[], |v| v == 0.0).await;
    assert_eq!(s.value("telehealth_participants", &[]), 0.0);
    for p in &peers {
        p.close().await;
    }
}

#[tokio::test]
async fn the_exposition_holds_no_ids_names_tokens_or_addresses() {
    let server = TestServer::start().await;
    let (meeting, url, guests) = meeting_with_guests(&server, &["Pat Client", "Dr. Smith"]).await;
    let (_a, first) = join(&url, &guests[0].token).await;
    assert!(matches!(first, ServerMessage::Joined { .. }), "{first:?}");
    let s = eventually(&server, "telehealth_participants", &[], |v| v == 1.0).await;

    let invite = common::invite_of(&meeting);
    let mut secrets = vec![meeting_id(&meeting), invite, server.key.clone(), "127.0.0.1".to_owned()];
    for g in &guests {
        secrets.extend([g.attendee_id.clone(), g.token.clone(), g.name.to_owned()]);
    }
    for secret in &secrets {
        assert!(!s.body.contains(secret.as_str()), "{secret:?} appears in /metrics");
    }
    // Beyond known values: every label is one of ours, with a value from its fixed set.
    let version = env!("CARGO_PKG_VERSION");
    for series in s.samples.keys() {
        let Some((_, labels)) = series.split_once('{') else { continue };
        let labels = parse_labels(labels.strip_suffix('}').unwrap()).unwrap();
        for (name, value) in &labels {
            let allowed = match name.as_str() {
                "result" => JOIN_RESULTS.contains(&value.as_str()),
                "action" => ACTIONS.contains(&value.as_str()),
                "direction" => ["in", "out"].contains(&value.as_str()),
                "source" => ["viewer", "relayed"].contains(&value.as_str()),
                "profile" => telehealth_gateway::sfu::stats::SRTP_PROFILES.contains(&value.as_str()),
                "provider" | "from" | "to" => ["local", "chime"].contains(&value.as_str()),
                "operation" => OPERATIONS.contains(&value.as_str()),
                "reason" => ["idle", "window", "gone"].contains(&value.as_str()),
                "scope" => ["api_key", "api_ip", "join_ip"].contains(&value.as_str()),
                "cap" => ["server", "address"].contains(&value.as_str()),
                "status" => value.len() == 3 && value.chars().all(|c| c.is_ascii_digit()),
                "le" => value == "+Inf" || value.parse::<f64>().is_ok(),
                "version" => value == version,
                _ => false,
            };
            assert!(allowed, "label {name}={value:?} in {series}");
        }
    }
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    assert!(parse("# TYPE a counter\na 1\nb{x=\"y\",z=\"w\\\"\"} 2.5\nc{le=\"+Inf\"} +Inf\n").is_ok());
    for bad in ["a", "a b", "1a 1", "a{x=y} 1", "a{x=\"y\" 1", "# TYPE a thing", "# HELLO a", "a 1\na 2"] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}
