//! A local stand-in for Amazon SNS's `Publish` to a phone number, for tests. It speaks SNS's query protocol:
//! `POST /` with a form body (`Action=Publish&Version=2010-03-31&PhoneNumber=…&Message=…&MessageAttributes.entry.N…`),
//! answers with the XML `PublishResponse`, and fails the way SNS does (`ErrorResponse` XML with a `Code`).
//! Every request must carry a valid SigV4 signature for service `sns` in the configured region, checked by the
//! same code as the Chime fake's.
//!
//! What it accepted is recorded (`published`), and it can be told to fail the next requests (`fail_next`).

use super::{Credentials, lock, percent_decode, verify_sigv4};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const XMLNS: &str = "http://sns.amazonaws.com/doc/2010-03-31/";

/// A text SNS accepted.
#[derive(Debug, Clone)]
pub struct Published {
    pub phone: String,
    pub message: String,
    /// Message attributes: name → string value (`AWS.SNS.SMS.SMSType` → `Transactional`).
    pub attributes: BTreeMap<String, String>,
    pub message_id: String,
}

/// How the next requests are made to fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnsFailure {
    /// 400 `Throttling` ("Rate exceeded"), the generic AWS throttling answer.
    Throttling,
    /// 429 `Throttled`, SNS's own throttling exception.
    Throttled,
    /// 500 `InternalError`.
    InternalError,
    /// 400 `InvalidParameter`, as for a number SNS cannot text.
    InvalidParameter,
    /// Never answer.
    Hang,
}

/// One request as the fake saw it, accepted or not.
#[derive(Debug, Clone)]
pub struct SnsRequest {
    pub action: String,
    /// None when the SigV4 signature checked out; otherwise why not.
    pub signature_problem: Option<String>,
}

struct Shared {
    credentials: Credentials,
    published: Mutex<Vec<Published>>,
    requests: Mutex<Vec<SnsRequest>>,
    /// (remaining, failure), applied in order.
    failures: Mutex<VecDeque<(u32, SnsFailure)>>,
}

/// A running fake. Dropping it stops the server.
pub struct FakeSns {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSns {
    /// Listens on 127.0.0.1, on an OS-chosen port.
    pub async fn start(credentials: Credentials) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("the fake binds");
        let addr = listener.local_addr().expect("a bound address");
        let shared = Arc::new(Shared {
            credentials,
            published: Mutex::default(),
            requests: Mutex::default(),
            failures: Mutex::default(),
        });
        let app = Router::new().route("/", post(handle)).with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint to give the SDK (`AWS_ENDPOINT_URL_SNS`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn credentials(&self) -> &Credentials {
        &self.shared.credentials
    }

    /// The texts accepted so far, in order.
    pub fn published(&self) -> Vec<Published> {
        lock(&self.shared.published).clone()
    }

    /// Every request so far, failed ones included.
    pub fn requests(&self) -> Vec<SnsRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The next `n` correctly signed requests fail with `failure` (after any failures already queued).
    pub fn fail_next(&self, n: u32, failure: SnsFailure) {
        if n > 0 {
            lock(&self.shared.failures).push_back((n, failure));
        }
    }

    /// Answers normally again.
    pub fn recover(&self) {
        lock(&self.shared.failures).clear();
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

/// An SNS error response (awsQuery's `ErrorResponse`).
fn error(status: u16, fault: &str, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let request_id = uuid::Uuid::new_v4();
    xml(
        status,
        format!(
            "<ErrorResponse xmlns=\"{XMLNS}\">\n  <Error>\n    <Type>{fault}</Type>\n    <Code>{code}</Code>\n    \
             <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
            escape(message)
        ),
    )
}

fn invalid(message: &str) -> Response {
    error(400, "Sender", "InvalidParameter", message)
}

/// `application/x-www-form-urlencoded`: `+` is a space, then percent-escapes.
fn form(body: &[u8]) -> BTreeMap<String, String> {
    let body = String::from_utf8_lossy(body);
    body.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

/// `MessageAttributes.entry.N.Name` / `.Value.DataType` / `.Value.StringValue` → name → (type, value).
fn attributes(params: &BTreeMap<String, String>) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for (key, name) in params {
        let Some(n) = key.strip_prefix("MessageAttributes.entry.").and_then(|rest| rest.strip_suffix(".Name")) else {
            continue;
        };
        let field = |f: &str| params.get(&format!("MessageAttributes.entry.{n}.Value.{f}")).cloned();
        let field = |f: &str| field(f).unwrap_or_default();
        out.insert(name.clone(), (field("DataType"), field("StringValue")));
    }
    out
}

fn is_e164(s: &str) -> bool {
    s.strip_prefix('+')
        .is_some_and(|d| (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0'))
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return invalid("The request body is too large.");
    };
    let signature_problem = verify_sigv4(&s.credentials, "sns", &parts.method, &parts.uri, &parts.headers, &body).err();
    let params = form(&body);
    let action = params.get("Action").cloned().unwrap_or_default();
    lock(&s.requests).push(SnsRequest { action: action.clone(), signature_problem: signature_problem.clone() });
    if let Some(problem) = signature_problem {
        let code =
            if problem.starts_with("unknown access key") { "InvalidClientTokenId" } else { "SignatureDoesNotMatch" };
        return error(403, "Sender", code, &format!("The request signature we calculated does not match: {problem}"));
    }
    if action != "Publish" {
        return error(400, "Sender", "InvalidAction", &format!("Could not find operation {action}"));
    }
    if params.get("Version").map(String::as_str) != Some("2010-03-31") {
        return error(400, "Sender", "InvalidParameterValue", "Version must be 2010-03-31");
    }
    let failure = {
        let mut failures = lock(&s.failures);
        let failure = failures.front_mut().map(|(remaining, f)| {
            *remaining -= 1;
            f.clone()
        });
        if failures.front().is_some_and(|(remaining, _)| *remaining == 0) {
            failures.pop_front();
        }
        failure
    };
    match failure {
        None => {}
        Some(SnsFailure::Hang) => std::future::pending::<()>().await,
        Some(SnsFailure::Throttling) => return error(400, "Sender", "Throttling", "Rate exceeded"),
        Some(SnsFailure::Throttled) => return error(429, "Sender", "Throttled", "Too many requests"),
        Some(SnsFailure::InternalError) => return error(500, "Receiver", "InternalError", "Internal failure (fake)"),
        Some(SnsFailure::InvalidParameter) => {
            let phone = params.get("PhoneNumber").cloned().unwrap_or_default();
            // Like SNS, the reason repeats the number: the client must not pass it on.
            return invalid(&format!("Invalid parameter: PhoneNumber Reason: {phone} is not valid to publish to"));
        }
    }
    let Some(phone) = params.get("PhoneNumber").cloned() else {
        return invalid("Invalid parameter: PhoneNumber is required (the fake texts numbers only)");
    };
    if !is_e164(&phone) {
        return invalid(&format!("Invalid parameter: PhoneNumber Reason: {phone} is not valid to publish to"));
    }
    let message = params.get("Message").cloned().unwrap_or_default();
    if message.is_empty() {
        return invalid("Invalid parameter: Empty message");
    }
    let attributes = attributes(&params);
    for (name, (data_type, value)) in &attributes {
        if data_type != "String" {
            let message = format!("The message attribute '{name}' has an invalid type");
            return error(400, "Sender", "ParameterValueInvalid", &message);
        }
        let valid = match name.as_str() {
            "AWS.SNS.SMS.SMSType" => value == "Transactional" || value == "Promotional",
            "AWS.SNS.SMS.SenderID" => {
                (1..=11).contains(&value.len()) && value.chars().all(|c| c.is_ascii_alphanumeric())
            }
            _ => true,
        };
        if !valid {
            let message = format!("The message attribute '{name}' has an invalid value");
            return error(400, "Sender", "ParameterValueInvalid", &message);
        }
    }
    let message_id = uuid::Uuid::new_v4().to_string();
    lock(&s.published).push(Published {
        phone,
        message,
        attributes: attributes.into_iter().map(|(k, (_, v))| (k, v)).collect(),
        message_id: message_id.clone(),
    });
    xml(
        StatusCode::OK,
        format!(
            "<PublishResponse xmlns=\"{XMLNS}\">\n  <PublishResult>\n    <MessageId>{message_id}</MessageId>\n  \
             </PublishResult>\n  <ResponseMetadata>\n    <RequestId>{}</RequestId>\n  </ResponseMetadata>\n\
             </PublishResponse>\n",
            uuid::Uuid::new_v4()
        ),
    )
}
