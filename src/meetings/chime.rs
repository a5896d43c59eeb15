//! The Chime backend: Amazon Chime SDK Meetings through `aws-sdk-chimesdkmeetings`, configured by `aws-config`
//! so the standard AWS environment works (keys, session tokens, profiles, `AWS_ENDPOINT_URL…`).
//!
//! Chime's objects reach our callers unchanged, fields we do not know included: the SDK would parse them into
//! its own structs and drop anything newer than itself, so each call also keeps the raw response body (an
//! interceptor that reads it after deserialisation) and the `Meeting` / `Attendee` objects are taken from that.
//!
//! Every call is bounded (the client is built by `crate::aws`, shared with SNS): the SDK's standard retry
//! (throttling, 5xx, timeouts) with `max_attempts`, each try within `attempt_timeout`, the whole call within
//! `call_timeout`, so failover starts after a known time even when Chime hangs.

use super::backend::{BackendError, MeetingBackend, NewMeeting, ProviderErrorKind};
use super::types::{AttendeeDoc, MeetingDoc, Origin};
use crate::config::ChimeConfig;
use crate::ids::{ExternalUserId, Provider};
use crate::store::{AttendeeRecord, MeetingRecord};
use aws_sdk_chimesdkmeetings::Client;
use aws_sdk_chimesdkmeetings::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::AfterDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// Chime's limits on `ExternalUserId`.
const EXTERNAL_USER_ID_MAX: usize = 64;
/// Attendees per `ListAttendees` page (Chime's maximum).
const LIST_PAGE: i32 = 100;
/// A provider's 4xx message is passed to the caller; a longer one is cut.
const MESSAGE_MAX: usize = 300;

pub struct ChimeBackend {
    client: Client,
    media_region: String,
}

impl ChimeBackend {
    /// Builds the client. Nothing is contacted yet; credentials are resolved on the first call.
    pub async fn new(config: &ChimeConfig) -> Self {
        let sdk = crate::aws::sdk_config(&crate::aws::ClientSettings {
            region: config.region.as_deref(),
            endpoint_url: config.endpoint_url.as_deref(),
            credentials: config.credentials.as_ref(),
            max_attempts: config.max_attempts,
            attempt_timeout: config.attempt_timeout,
            call_timeout: config.call_timeout,
        })
        .await;
        let region = sdk.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
        let media_region = config.media_region.clone().unwrap_or(region);
        Self { client: Client::new(&sdk), media_region }
    }
}

/// Keeps the raw body of the response a call was answered with.
#[derive(Debug, Clone, Default)]
struct RawBody(Arc<Mutex<Option<Vec<u8>>>>);

impl RawBody {
    /// The JSON the last try was answered with.
    fn json(&self) -> Result<Value, BackendError> {
        let body = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        let body = body.ok_or_else(|| BackendError::Failed(anyhow::anyhow!("Chime's response body was not kept")))?;
        serde_json::from_slice(&body).map_err(|e| BackendError::Failed(anyhow::anyhow!("Chime's response is not JSON: {e}")))
    }
}

impl Intercept for RawBody {
    fn name(&self) -> &'static str {
        "RawBody"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Non-streaming responses are read into memory before deserialisation, so the bytes are there.
        if let Some(bytes) = context.response().body().bytes() {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes.to_vec());
        }
        Ok(())
    }
}

/// Sends a fluent operation with a `RawBody` attached and evaluates to the response's JSON (`?` on failure).
/// A macro because the SDK's customizable-operation trait is not nameable outside the SDK.
macro_rules! send_raw {
    ($op:expr) => {{
        let raw = RawBody::default();
        $op.customize().interceptor(raw.clone()).send().await.map_err(backend_error)?;
        raw.json()?
    }};
}

/// The named member of a response (`Meeting`, `Attendee`).
fn member(mut body: Value, name: &'static str) -> Result<Value, BackendError> {
    match body.get_mut(name).map(Value::take) {
        Some(v) if v.is_object() => Ok(v),
        _ => Err(BackendError::Failed(anyhow::anyhow!("Chime's response has no {name}"))),
    }
}

fn shape(e: super::types::ShapeError) -> BackendError {
    BackendError::Failed(e.into())
}

/// Chime's exceptions in the contract's terms. The error type names Chime sends (`x-amzn-ErrorType`) decide;
/// an unknown one falls back on the HTTP status.
fn kind_of(code: Option<&str>, status: u16) -> ProviderErrorKind {
    use ProviderErrorKind::*;
    match code.map(|c| c.trim_end_matches("Exception")) {
        Some("BadRequest") => BadRequest,
        Some("Unauthorized") => Unauthorized,
        Some("Forbidden") | Some("AccessDenied") => Forbidden,
        Some("NotFound") | Some("ResourceNotFound") => NotFound,
        Some("Conflict") => Conflict,
        Some("UnprocessableEntity") => UnprocessableEntity,
        Some("Throttling") | Some("Throttled") | Some("LimitExceeded") | Some("TooManyRequests") => Throttling,
        Some("ServiceUnavailable") => ServiceUnavailable,
        Some("ServiceFailure") | Some("InternalFailure") => ServiceFailure,
        _ => match status {
            400 => BadRequest,
            401 => Unauthorized,
            403 => Forbidden,
            404 => NotFound,
            409 => Conflict,
            422 => UnprocessableEntity,
            429 => Throttling,
            503 => ServiceUnavailable,
            _ => ServiceFailure,
        },
    }
}

fn backend_error<E>(e: SdkError<E, HttpResponse>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &e {
        SdkError::TimeoutError(_) => BackendError::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => BackendError::Timeout,
        SdkError::ServiceError(ctx) => match kind_of(ctx.err().code(), ctx.raw().status().as_u16()) {
            ProviderErrorKind::NotFound => BackendError::NotFound,
            kind => {
                let message: String = ctx.err().message().unwrap_or_default().chars().take(MESSAGE_MAX).collect();
                BackendError::Provider { kind, message }
            }
        },
        _ => BackendError::Failed(anyhow::anyhow!("{}", DisplayErrorContext(&e))),
    }
}

/// Chime's `ExternalUserId`: a short unique prefix, `#`, then the display name reduced to the characters Chime
/// allows (other letters transliterated, e.g. `Ł` → `L`; symbols dropped), 64 characters at most. The join page shows what follows the
/// first `#`; the prefix keeps two people of the same name apart.
pub fn external_user_id(name: &ExternalUserId) -> String {
    let prefix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut clean = String::new();
    for c in name.as_str().chars() {
        if allowed_in_user_id(c) {
            clean.push(c);
        } else if c.is_alphabetic()
            && let Some(ascii) = deunicode::deunicode_char(c)
        {
            clean.extend(ascii.chars().filter(|&c| allowed_in_user_id(c)));
        }
    }
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    let room = EXTERNAL_USER_ID_MAX - prefix.len() - 1;
    let mut name: String = clean.chars().take(room).collect();
    if name.trim().is_empty() {
        name = "Guest".into();
    }
    format!("{prefix}#{}", name.trim_end())
}

/// Chime's pattern for `ExternalUserId`: letters and digits (Latin-1 accented letters included), white space and
/// `-_&@+=,(){}[]/«».:|'"#`.
fn allowed_in_user_id(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ' ' || "-_&@+=,(){}[]/«».:|'\"#".contains(c) || ('\u{C0}'..='\u{FF}').contains(&c)
}

#[async_trait::async_trait]
impl MeetingBackend for ChimeBackend {
    fn provider(&self) -> Provider {
        Provider::Chime
    }

    async fn create_meeting(&self, req: &NewMeeting, _origin: &Origin) -> Result<MeetingDoc, BackendError> {
        // Chime requires an ExternalMeetingId: without one from the caller, the request's own token (a GUID).
        let external = req.external_meeting_id.as_ref().map_or(req.client_request_token.as_str(), |e| e.as_str());
        let body = send_raw!(self
            .client
            .create_meeting()
            .client_request_token(&req.client_request_token)
            .media_region(&self.media_region)
            .external_meeting_id(external));
        MeetingDoc::from_json(member(body, "Meeting")?).map_err(shape)
    }

    async fn create_attendee(&self, meeting: &MeetingRecord, name: &ExternalUserId) -> Result<AttendeeDoc, BackendError> {
        let body = send_raw!(self
            .client
            .create_attendee()
            .meeting_id(meeting.id.to_string())
            .external_user_id(external_user_id(name)));
        AttendeeDoc::from_json(member(body, "Attendee")?).map_err(shape)
    }

    async fn get_meeting(&self, meeting: &MeetingRecord, _origin: &Origin) -> Result<MeetingDoc, BackendError> {
        let body = send_raw!(self.client.get_meeting().meeting_id(meeting.id.to_string()));
        MeetingDoc::from_json(member(body, "Meeting")?).map_err(shape)
    }

    async fn list_attendees(
        &self,
        meeting: &MeetingRecord,
        _stored: Vec<AttendeeRecord>,
    ) -> Result<Vec<AttendeeDoc>, BackendError> {
        let mut all = Vec::new();
        let mut next: Option<String> = None;
        // 250 attendees at most, so three pages; the bound guards against a NextToken that never ends.
        for _ in 0..10 {
            let mut body = send_raw!(self
                .client
                .list_attendees()
                .meeting_id(meeting.id.to_string())
                .max_results(LIST_PAGE)
                .set_next_token(next.take()));
            if let Some(Value::Array(page)) = body.get_mut("Attendees").map(Value::take) {
                for a in page {
                    all.push(AttendeeDoc::from_json(a).map_err(shape)?);
                }
            }
            next = body.get("NextToken").and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
        Ok(all)
    }

    async fn delete_meeting(&self, meeting: &MeetingRecord) -> Result<(), BackendError> {
        self.client.delete_meeting().meeting_id(meeting.id.to_string()).send().await.map_err(backend_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_id(name: &str) -> String {
        external_user_id(&ExternalUserId::parse(name).unwrap())
    }

    #[test]
    fn an_external_user_id_is_a_prefix_a_hash_and_the_name() {
        let id = user_id("Dr. Smith");
        let (prefix, name) = id.split_once('#').unwrap();
        assert_eq!(prefix.len(), 8);
        assert!(prefix.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(name, "Dr. Smith");
        assert_ne!(user_id("Dr. Smith"), id, "two people of the same name get different ids");
    }

    #[test]
    fn an_external_user_id_keeps_to_chimes_characters_and_length() {
        assert_eq!(user_id("Zoë Łukasz-Nowak").split_once('#').unwrap().1, "Zoë Lukasz-Nowak");
        assert_eq!(user_id("王小明").split_once('#').unwrap().1, "Wang Xiao Ming");
        assert_eq!(user_id("😀😀").split_once('#').unwrap().1, "Guest", "nothing Chime allows is left");
        let long = user_id(&"é".repeat(64));
        assert_eq!(long.chars().count(), EXTERNAL_USER_ID_MAX);
        for name in ["a\u{200b}b", "<script>", "Ann  Lee", "🙂🙂"] {
            let id = user_id(name);
            assert!((2..=64).contains(&id.chars().count()), "{id}");
            assert!(id.chars().all(allowed_in_user_id), "{id}");
        }
    }

    #[test]
    fn chime_error_types_map_onto_the_contracts_codes() {
        use ProviderErrorKind::*;
        let cases = [
            ("BadRequestException", 400, BadRequest),
            ("UnauthorizedException", 401, Unauthorized),
            ("ForbiddenException", 403, Forbidden),
            ("NotFoundException", 404, NotFound),
            ("ConflictException", 409, Conflict),
            ("UnprocessableEntityException", 422, UnprocessableEntity),
            ("ThrottlingException", 429, Throttling),
            ("LimitExceededException", 400, Throttling),
            ("ServiceUnavailableException", 503, ServiceUnavailable),
            ("ServiceFailureException", 500, ServiceFailure),
        ];
        for (code, status, kind) in cases {
            assert_eq!(kind_of(Some(code), status), kind, "{code}");
        }
        assert_eq!(kind_of(Some("SomethingNew"), 429), Throttling, "unknown types fall back on the status");
        assert_eq!(kind_of(None, 502), ServiceFailure);
    }
}
