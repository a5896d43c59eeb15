//! A local stand-in for Amazon Chime SDK Meetings, for tests: it speaks the service's rest-json protocol
//! (`POST /meetings`, `POST|GET /meetings/{MeetingId}/attendees`, `GET|DELETE /meetings/{MeetingId}`), answers
//! errors the way Chime does (its HTTP statuses, the `x-amzn-ErrorType` header, `{"Code","Message"}` bodies),
//! and checks that every request carries a valid SigV4 signature for service `chime` in the configured region.
//!
//! It can be told to fail (throttle, 503, 500, any Chime error) or hang, for some operations and some number
//! of times. Its meetings' `MediaPlacement.SignalingUrl` is a WebSocket on the fake itself
//! (`/control/{MeetingId}`) that records who connected, so a browser test can see amazon-chime-sdk-js reach it
//! without anything leaving the machine. Its objects carry a field Chime does not have (`FakeFutureField`), to
//! show that fields a client does not know reach its callers.
//!
//! `FakeSns` (module `sns`) does the same for Amazon SNS's `Publish`, with the same SigV4 check for `sns`.
//!
//! Used in-process by the Rust tests (`FakeChime::start`) and as a binary by the browser test (`main.rs`,
//! controlled over `/_fake/…`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

mod sns;
pub use sns::{FakeSns, Published, SnsFailure, SnsRequest};

/// The credentials and region requests must be signed with.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            access_key_id: "AKIAFAKECHIMETEST0001".into(),
            secret_access_key: "fake-chime-secret-key-for-tests-only-000".into(),
            region: "us-east-1".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    CreateMeeting,
    CreateAttendee,
    GetMeeting,
    ListAttendees,
    DeleteMeeting,
}

impl Operation {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "CreateMeeting" => Self::CreateMeeting,
            "CreateAttendee" => Self::CreateAttendee,
            "GetMeeting" => Self::GetMeeting,
            "ListAttendees" => Self::ListAttendees,
            "DeleteMeeting" => Self::DeleteMeeting,
            _ => return None,
        })
    }
}

/// How a request is made to fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A Chime error: HTTP status and exception type (`ThrottlingException` …).
    Error { status: u16, error_type: String },
    /// Never answer.
    Hang,
}

impl Failure {
    pub fn error(status: u16, error_type: &str) -> Self {
        Failure::Error { status, error_type: error_type.into() }
    }
    pub fn throttling() -> Self {
        Self::error(429, "ThrottlingException")
    }
    pub fn unavailable() -> Self {
        Self::error(503, "ServiceUnavailableException")
    }
    pub fn service_failure() -> Self {
        Self::error(500, "ServiceFailureException")
    }
    /// `throttling`, `unavailable`, `failure`, `hang`, or `STATUS:ExceptionType`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "throttling" => Self::throttling(),
            "unavailable" => Self::unavailable(),
            "failure" => Self::service_failure(),
            "hang" => Failure::Hang,
            other => {
                let (status, error_type) = other.split_once(':')?;
                Self::error(status.parse().ok()?, error_type)
            }
        })
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub operation: Operation,
    pub path: String,
    pub body: Value,
    /// None when the SigV4 signature checked out; otherwise why not.
    pub signature_problem: Option<String>,
}

/// A WebSocket opened on a meeting's `SignalingUrl`.
#[derive(Debug, Clone)]
pub struct SignalingConnection {
    pub meeting_id: String,
    pub query: String,
    pub protocols: String,
    pub frames_received: usize,
}

struct Rule {
    operation: Option<Operation>,
    failure: Failure,
    /// None: until cleared.
    remaining: Option<u32>,
}

#[derive(Default)]
struct Meeting {
    json: Value,
    attendees: Vec<Value>,
}

struct Shared {
    credentials: Credentials,
    /// `http://127.0.0.1:PORT`.
    base: String,
    meetings: Mutex<HashMap<String, Meeting>>,
    /// ClientRequestToken → MeetingId (Chime's idempotency).
    tokens: Mutex<HashMap<String, String>>,
    rules: Mutex<Vec<Rule>>,
    requests: Mutex<Vec<Recorded>>,
    signaling: Mutex<Vec<SignalingConnection>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake. Dropping it stops the server.
pub struct FakeChime {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeChime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeChime {
    /// Listens on 127.0.0.1, on an OS-chosen port.
    pub async fn start(credentials: Credentials) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), credentials).await
    }

    pub async fn start_on(addr: SocketAddr, credentials: Credentials) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("the fake binds");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            credentials,
            base: format!("http://{addr}"),
            meetings: Mutex::default(),
            tokens: Mutex::default(),
            rules: Mutex::default(),
            requests: Mutex::default(),
            signaling: Mutex::default(),
        });
        let app = router(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint to give the SDK (`AWS_ENDPOINT_URL_CHIME_SDK_MEETINGS`).
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    pub fn credentials(&self) -> &Credentials {
        &self.shared.credentials
    }

    /// Fails `operation` (every operation when None) with `failure`, `times` times (None: until `recover`).
    pub fn fail(&self, operation: Option<Operation>, failure: Failure, times: Option<u32>) {
        lock(&self.shared.rules).push(Rule { operation, failure, remaining: times });
    }

    /// Answers normally again.
    pub fn recover(&self) {
        lock(&self.shared.rules).clear();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests of this operation arrived (failed ones included).
    pub fn count(&self, operation: Operation) -> usize {
        lock(&self.shared.requests).iter().filter(|r| r.operation == operation).count()
    }

    pub fn meeting_exists(&self, meeting_id: &str) -> bool {
        lock(&self.shared.meetings).contains_key(meeting_id)
    }

    pub fn live_meetings(&self) -> usize {
        lock(&self.shared.meetings).len()
    }

    /// Ends a meeting the way Chime does on its own (nobody joined, 24 hours passed): it is simply gone.
    pub fn end_meeting(&self, meeting_id: &str) {
        lock(&self.shared.meetings).remove(meeting_id);
    }

    pub fn signaling_connections(&self) -> Vec<SignalingConnection> {
        lock(&self.shared.signaling).clone()
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/meetings", post(create_meeting))
        .route("/meetings/{id}", get(get_meeting).delete(delete_meeting))
        .route("/meetings/{id}/attendees", post(create_attendee).get(list_attendees))
        .route("/control/{id}", get(signaling))
        // What amazon-chime-sdk-js may call besides signaling: accepted and ignored.
        .route("/events", post(|| async { StatusCode::OK }))
        .route("/turn", post(|| async { axum::Json(json!({})) }).get(|| async { axum::Json(json!({})) }))
        .route("/_fake/fail", post(control_fail))
        .route("/_fake/recover", post(control_recover))
        .route("/_fake/state", get(control_state))
        // amazon-chime-sdk-js posts meeting events from the join page's origin, as to Chime's own endpoint.
        .layer(tower_http::cors::CorsLayer::permissive())
        .with_state(shared)
}

/// A Chime error response.
fn error(status: u16, error_type: &str, message: &str) -> Response {
    let code = error_type.trim_end_matches("Exception");
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = (status, axum::Json(json!({"Code": code, "Message": message}))).into_response();
    let value = format!("{error_type}:http://internal.amazon.com/coral/com.amazonaws.chime/");
    res.headers_mut().insert("x-amzn-ErrorType", value.parse().unwrap());
    res.headers_mut().insert("x-amzn-RequestId", uuid::Uuid::new_v4().to_string().parse().unwrap());
    res
}

fn no_such_meeting() -> Response {
    error(404, "NotFoundException", "The requested resource does not exist.")
}

/// Records the request, checks its signature and applies any failure rule. Ok: the JSON body.
async fn admit(shared: &Shared, operation: Operation, req: Request) -> Result<Value, Response> {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return Err(error(400, "BadRequestException", "The request body is too large."));
    };
    let (uri, body) = (&parts.uri, &body);
    let signature_problem = verify_sigv4(&shared.credentials, "chime", &parts.method, uri, &parts.headers, body).err();
    let json: Value = if body.is_empty() { json!({}) } else { serde_json::from_slice(body).unwrap_or(Value::Null) };
    lock(&shared.requests).push(Recorded {
        operation,
        path: uri.path().to_owned(),
        body: json.clone(),
        signature_problem: signature_problem.clone(),
    });
    if let Some(problem) = signature_problem {
        return Err(error(403, "ForbiddenException", &format!("The request signature is not valid: {problem}")));
    }
    let failure = {
        let mut rules = lock(&shared.rules);
        let hit = rules.iter_mut().find(|r| r.operation.is_none_or(|op| op == operation));
        match hit {
            None => None,
            Some(rule) => {
                let failure = rule.failure.clone();
                if let Some(n) = rule.remaining.as_mut() {
                    *n = n.saturating_sub(1);
                }
                rules.retain(|r| r.remaining != Some(0));
                Some(failure)
            }
        }
    };
    match failure {
        None => Ok(json),
        Some(Failure::Hang) => std::future::pending().await,
        Some(Failure::Error { status, error_type }) => {
            // Internals of the kind a real 5xx carries, which must never reach the gateway's callers.
            let message = format!("fake {error_type} (internal: arn:aws:chime:internal-host-7 request 42)");
            Err(error(status, &error_type, &message))
        }
    }
}

fn meeting_json(shared: &Shared, id: &str, external: &str, region: &str) -> Value {
    let base = &shared.base;
    let host = base.trim_start_matches("http://");
    json!({
        "MeetingId": id,
        "ExternalMeetingId": external,
        "MediaRegion": region,
        "MediaPlacement": {
            "AudioHostUrl": format!("{host}:3478"),
            "AudioFallbackUrl": format!("ws://{host}/audio/{id}"),
            "SignalingUrl": format!("ws://{host}/control/{id}"),
            "TurnControlUrl": format!("{base}/turn"),
            "ScreenDataUrl": format!("ws://{host}/screen/{id}"),
            "ScreenViewingUrl": format!("ws://{host}/screenview/{id}"),
            "ScreenSharingUrl": format!("ws://{host}/screenshare/{id}"),
            "EventIngestionUrl": format!("{base}/events")
        },
        "MeetingFeatures": {"Audio": {"EchoReduction": "AVAILABLE"}},
        "MeetingArn": format!("arn:aws:chime:{region}:123456789012:meeting/{id}"),
        "TenantIds": [],
        "FakeFutureField": {"Nested": [1, 2, 3]}
    })
}

async fn create_meeting(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let req = match admit(&s, Operation::CreateMeeting, req).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    let field = |name: &str| req.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(token), Some(region), Some(external)) =
        (field("ClientRequestToken"), field("MediaRegion"), field("ExternalMeetingId"))
    else {
        return error(400, "BadRequestException", "ClientRequestToken, MediaRegion and ExternalMeetingId are required");
    };
    if !(2..=64).contains(&external.chars().count()) || !(2..=64).contains(&token.chars().count()) {
        return error(400, "BadRequestException", "ExternalMeetingId and ClientRequestToken must be 2-64 characters");
    }
    let existing = lock(&s.tokens).get(&token).cloned();
    if let Some(id) = existing
        && let Some(m) = lock(&s.meetings).get(&id)
    {
        return axum::Json(json!({"Meeting": m.json})).into_response();
    }
    let id = uuid::Uuid::new_v4().to_string();
    let json = meeting_json(&s, &id, &external, &region);
    lock(&s.tokens).insert(token, id.clone());
    lock(&s.meetings).insert(id, Meeting { json: json.clone(), attendees: Vec::new() });
    axum::Json(json!({"Meeting": json})).into_response()
}

async fn get_meeting(State(s): State<Arc<Shared>>, Path(id): Path<String>, req: Request) -> Response {
    if let Err(res) = admit(&s, Operation::GetMeeting, req).await {
        return res;
    }
    match lock(&s.meetings).get(&id) {
        Some(m) => axum::Json(json!({"Meeting": m.json})).into_response(),
        None => no_such_meeting(),
    }
}

async fn delete_meeting(State(s): State<Arc<Shared>>, Path(id): Path<String>, req: Request) -> Response {
    if let Err(res) = admit(&s, Operation::DeleteMeeting, req).await {
        return res;
    }
    match lock(&s.meetings).remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => no_such_meeting(),
    }
}

/// Chime's pattern for ExternalUserId.
fn valid_external_user_id(s: &str) -> bool {
    let allowed = |c: char| {
        c.is_ascii_alphanumeric()
            || c.is_whitespace()
            || "-_&@+=,(){}[]/«».:|'\"#".contains(c)
            || ('\u{C0}'..='\u{FF}').contains(&c)
    };
    (2..=64).contains(&s.chars().count()) && s.chars().all(allowed)
}

async fn create_attendee(State(s): State<Arc<Shared>>, Path(id): Path<String>, req: Request) -> Response {
    let req = match admit(&s, Operation::CreateAttendee, req).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    let Some(user) = req.get("ExternalUserId").and_then(Value::as_str).map(str::to_owned) else {
        return error(400, "BadRequestException", "ExternalUserId is required");
    };
    if !valid_external_user_id(&user) {
        return error(400, "BadRequestException", "ExternalUserId does not match the required pattern");
    }
    let mut meetings = lock(&s.meetings);
    let Some(m) = meetings.get_mut(&id) else {
        return no_such_meeting();
    };
    if m.attendees.len() >= 250 {
        return error(400, "LimitExceededException", "The meeting has the maximum number of attendees.");
    }
    let attendee = json!({
        "ExternalUserId": user,
        "AttendeeId": uuid::Uuid::new_v4().to_string(),
        "JoinToken": format!("fake-join-token-{}", uuid::Uuid::new_v4().simple()),
        "Capabilities": {"Audio": "SendReceive", "Video": "SendReceive", "Content": "SendReceive"},
        "FakeFutureField": "attendee"
    });
    m.attendees.push(attendee.clone());
    axum::Json(json!({"Attendee": attendee})).into_response()
}

async fn list_attendees(State(s): State<Arc<Shared>>, Path(id): Path<String>, req: Request) -> Response {
    let query = req.uri().query().unwrap_or("").to_owned();
    if let Err(res) = admit(&s, Operation::ListAttendees, req).await {
        return res;
    }
    let query: HashMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    let max: usize = query.get("max-results").and_then(|v| v.parse().ok()).unwrap_or(100).clamp(1, 100);
    let start: usize = query.get("next-token").and_then(|v| v.strip_prefix("page-")?.parse().ok()).unwrap_or(0);
    let meetings = lock(&s.meetings);
    let Some(m) = meetings.get(&id) else {
        return no_such_meeting();
    };
    let page: Vec<Value> = m.attendees.iter().skip(start).take(max).cloned().collect();
    let mut body = json!({"Attendees": page});
    if start + max < m.attendees.len() {
        body["NextToken"] = json!(format!("page-{}", start + max));
    }
    axum::Json(body).into_response()
}

async fn signaling(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let protocols = headers.get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let index = {
        let mut conns = lock(&s.signaling);
        conns.push(SignalingConnection {
            meeting_id: id,
            query: uri.query().unwrap_or("").to_owned(),
            protocols: protocols.clone(),
            frames_received: 0,
        });
        conns.len() - 1
    };
    // A browser insists that the server picks one of the subprotocols it offered.
    let first: Vec<String> = protocols.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).take(1).collect();
    ws.protocols(first).on_upgrade(move |socket| count_frames(s, index, socket))
}

/// Keeps the socket open and counts what the client sends; it never answers (the test only needs to see the
/// client arrive).
async fn count_frames(s: Arc<Shared>, index: usize, mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        if matches!(msg, Message::Binary(_) | Message::Text(_)) {
            lock(&s.signaling)[index].frames_received += 1;
        }
    }
}

async fn control_fail(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let operation = req.get("operation").and_then(Value::as_str).and_then(Operation::parse);
    let Some(failure) = req.get("failure").and_then(Value::as_str).and_then(Failure::parse) else {
        return (StatusCode::BAD_REQUEST, "failure: throttling | unavailable | failure | hang | STATUS:Type").into_response();
    };
    let remaining = req.get("times").and_then(Value::as_u64).map(|n| n as u32);
    lock(&s.rules).push(Rule { operation, failure, remaining });
    StatusCode::NO_CONTENT.into_response()
}

async fn control_recover(State(s): State<Arc<Shared>>) -> StatusCode {
    lock(&s.rules).clear();
    StatusCode::NO_CONTENT
}

async fn control_state(State(s): State<Arc<Shared>>) -> axum::Json<Value> {
    let requests: Vec<Value> = lock(&s.requests)
        .iter()
        .map(|r| json!({"operation": format!("{:?}", r.operation), "path": r.path, "signatureProblem": r.signature_problem}))
        .collect();
    let signaling: Vec<Value> = lock(&s.signaling)
        .iter()
        .map(|c| json!({"meetingId": c.meeting_id, "query": c.query, "protocols": c.protocols, "framesReceived": c.frames_received}))
        .collect();
    axum::Json(json!({"requests": requests, "signaling": signaling, "meetings": lock(&s.meetings).len()}))
}

// ---- SigV4 ------------------------------------------------------------------------------------------------

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// AWS's URI encoding: everything but unreserved characters (and `/` in paths) as %XX.
fn aws_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Recomputes the request's SigV4 signature for `service` (`chime`, `sns`) with the configured secret (the
/// algorithm of the AWS General Reference, "Create a signed AWS API request") and compares it with the one it
/// carries.
fn verify_sigv4(
    c: &Credentials,
    expected_service: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or("no Authorization header")?;
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or("not AWS4-HMAC-SHA256")?;
    let mut parts: HashMap<&str, &str> = HashMap::new();
    for p in rest.split(',') {
        let (k, v) = p.trim().split_once('=').ok_or("malformed Authorization")?;
        parts.insert(k, v);
    }
    let credential = parts.get("Credential").ok_or("no Credential")?;
    let signed_headers = parts.get("SignedHeaders").ok_or("no SignedHeaders")?;
    let signature = parts.get("Signature").ok_or("no Signature")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope[..] else { return Err("malformed Credential".into()) };
    if key_id != c.access_key_id {
        return Err(format!("unknown access key {key_id}"));
    }
    if region != c.region {
        return Err(format!("signed for region {region}, expected {}", c.region));
    }
    if service != expected_service || terminator != "aws4_request" {
        return Err(format!("signed for service {service}, expected {expected_service}"));
    }
    let amz_date = headers.get("x-amz-date").and_then(|v| v.to_str().ok()).ok_or("no x-amz-date")?;
    if !amz_date.starts_with(date) {
        return Err("x-amz-date does not match the credential scope".into());
    }
    let mut query: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (aws_encode(&percent_decode(k), false), aws_encode(&percent_decode(v), false))
        })
        .collect();
    query.sort();
    let query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        if values.is_empty() {
            return Err(format!("signed header {name} is missing"));
        }
        let value = values.iter().map(|v| v.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join(",");
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let payload = match headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()) {
        Some(h) => h.to_owned(),
        None => hex(&Sha256::digest(body)),
    };
    // Services other than S3 encode the path twice: once in the request, once here.
    let path = aws_encode(uri.path(), true);
    let canonical = format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{payload}");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = hmac(format!("AWS4{}", c.secret_access_key).as_bytes(), date);
    let key = hmac(&hmac(&hmac(&key, region), service), "aws4_request");
    if hex(&hmac(&key, &to_sign)) != *signature {
        return Err("signature mismatch".into());
    }
    Ok(())
}
