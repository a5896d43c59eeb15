//! Harness of the property tests against the real server (`props_signaling.rs`, `props_api.rs`): one server
//! per property on a runtime of its own, driven case after case from the test's thread, so a property of a
//! hundred cases costs one server start; a count of panics on the server's threads; and the shared input
//! generators.
#![allow(dead_code)]

#[path = "../../signaling/tests/strategies/mod.rs"]
pub mod strategies;

use crate::common::TestServer;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::future::Future;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server's runtime threads are named so a panic on one of them is told apart from the test's own.
const SERVER_THREADS: &str = "prop-server";
static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_server_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some_and(|n| n.starts_with(SERVER_THREADS)) {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Panics so far on any server thread of this test binary. A handler's panic does not stop axum's server
/// (the connection just drops), so this is how a test sees one.
pub fn server_panics() -> usize {
    SERVER_PANICS.load(Ordering::SeqCst)
}

pub struct Harness {
    rt: tokio::runtime::Runtime,
    pub server: TestServer,
}

impl Harness {
    pub fn start() -> Self {
        count_server_panics();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(SERVER_THREADS)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(TestServer::start());
        Self { rt, server }
    }

    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Runs `cases` cases of `property` on inputs from `strategy` (shrinking a failure to its smallest
    /// input), then checks that no server thread panicked and that the server stops cleanly.
    pub fn check<S: Strategy>(self, cases: u32, strategy: S, property: impl Fn(&Self, S::Value) -> Result<(), TestCaseError>) {
        let before = server_panics();
        let config = Config { cases, failure_persistence: None, max_shrink_iters: 256, ..Config::default() };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |input| {
            property(&self, input)?;
            if server_panics() != before {
                return Err(TestCaseError::fail("a server thread panicked (see the output above)"));
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        let Harness { rt, server } = self;
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(20), server.stop()).await.expect("the server stops in time");
        });
        assert_eq!(server_panics(), before, "no server thread panicked");
    }

    /// `GET /healthz` answers `{"status":"ok"}`.
    pub async fn healthy(&self) -> Result<(), TestCaseError> {
        let res = fresh_client().get(self.server.url("/healthz")).send().await;
        let res = res.map_err(|e| TestCaseError::fail(format!("/healthz unreachable: {e}")))?;
        let status = res.status();
        let body: serde_json::Value = res.json().await.map_err(|e| TestCaseError::fail(format!("/healthz: {e}")))?;
        if status != reqwest::StatusCode::OK || body != serde_json::json!({"status": "ok"}) {
            return Err(TestCaseError::fail(format!("/healthz: {status} {body}")));
        }
        Ok(())
    }
}

/// A client that opens a connection per request. The server closes a connection after refusing a body it did not
/// read (413 before the body, 415), and a pooled client could pick that connection for its next request in the
/// moment the close is on its way: an error no real server bug causes.
pub fn fresh_client() -> &'static reqwest::Client {
    static FRESH: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    FRESH.get_or_init(|| reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("a client"))
}

/// Words the server's own messages may use, which a generated input may contain too; anything else of the
/// input found in an error message is an echo.
const VOCABULARY: &[&str] = &[
    "type", "token", "audioMuted", "videoMuted", "sdp", "restart", "candidate", "sdpMid", "sdpMLineIndex", "usernameFragment",
    "join", "offer", "answer", "mediaState", "requestKeyframe", "leave", "ping", "null", "true", "false",
    "action", "create-meeting", "create-attendee", "delete-meeting", "get-meeting", "list-attendees", "get-usage",
    "attendee-presence", "appointmentId", "externalMeetingId", "ExternalMeetingId", "endsAt", "meetingId",
    "attendeeName", "invite", "from", "to", "event", "sessionId", "joined", "heartbeat", "left", "client_name",
    "client_email", "client_phone", "practitioner", "start_time", "duration_minutes", "modality", "in-person",
    "telehealth", "frame", "valid", "message", "JSON", "binary", "frames", "protocol", "column", "line",
];

/// The parts of an input an error message must not repeat: the input itself, every string, key and number in
/// it (when it is JSON), and every word of it, of at least `min` characters (numbers: 7 digits, so a line or
/// column number is not taken for one), except the protocol's vocabulary.
pub fn echo_candidates(input: &str, min: usize) -> Vec<String> {
    let mut out = vec![input.to_owned()];
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(input) {
        collect_strings(&v, &mut out);
    }
    out.extend(input.split(|c: char| !c.is_alphanumeric()).map(str::to_owned));
    out.retain(|s| {
        let n = s.chars().count();
        let number = s.chars().all(|c| c.is_ascii_digit() || "-+.eE".contains(c));
        n >= min && (!number || n >= 7) && !VOCABULARY.iter().any(|w| w.contains(s.as_str()))
    });
    out.sort();
    out.dedup();
    out
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Number(n) => out.push(n.to_string()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                out.push(k.clone());
                collect_strings(v, out);
            }
        }
        _ => {}
    }
}

/// Fails if `message` repeats any part of `input` (see `echo_candidates`).
pub fn no_echo(message: &str, input: &str, min: usize) -> Result<(), TestCaseError> {
    for part in echo_candidates(input, min) {
        if message.contains(&part) {
            return Err(TestCaseError::fail(format!("the error message {message:?} repeats the input's {part:?}")));
        }
    }
    Ok(())
}
