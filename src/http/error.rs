//! The one error type of the HTTP surface. Each variant fixes its status; the body is always
//! `{"success":false,"error":{"code":"…","message":"…"}}` with Chime's error codes, plus `reason` where a page
//! must tell two cases of one code apart (an expired invite from a forged one).
//!
//! A 5xx says only that something went wrong; its cause goes to the trace at error level (ids only, never
//! patient data: store errors carry no bound values because statement logging is off and messages are ours).

use crate::ids::Provider;
use crate::meetings::{BackendError, MeetingError, ProviderErrorKind};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    /// Not a Chime code: wrong HTTP method on the API route (sent with an `Allow` header).
    MethodNotAllowed,
    Conflict,
    /// Not a Chime code: the body is over `MAX_BODY_BYTES`.
    PayloadTooLarge,
    /// Not a Chime code: the body is not `application/json`.
    UnsupportedMediaType,
    /// Well-formed but unacceptable: a value outside Chime's limits (names and ExternalMeetingId of 2–64
    /// printable characters, 250 attendees per meeting). A body of the wrong shape is `BadRequest`.
    UnprocessableEntity,
    Throttling,
    ServiceFailure,
    ServiceUnavailable,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnprocessableEntity => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Throttling => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ServiceFailure => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BadRequest",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::MethodNotAllowed => "MethodNotAllowed",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::PayloadTooLarge => "PayloadTooLarge",
            ErrorCode::UnsupportedMediaType => "UnsupportedMediaType",
            ErrorCode::UnprocessableEntity => "UnprocessableEntity",
            ErrorCode::Throttling => "Throttling",
            ErrorCode::ServiceFailure => "ServiceFailure",
            ErrorCode::ServiceUnavailable => "ServiceUnavailable",
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Our addition to Chime's shape: a fixed name refining `code` (`InviteExpired`), for the join page.
    pub reason: Option<&'static str>,
    /// The methods the route takes, for a 405's `Allow` header.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), reason: None, allow: None }
    }
    /// 405 on a route that takes `allow` (e.g. `GET, POST`).
    pub fn method_not_allowed(allow: &'static str, message: impl Into<String>) -> Self {
        Self { allow: Some(allow), ..Self::new(ErrorCode::MethodNotAllowed, message) }
    }
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnprocessableEntity, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// A failure of ours. `cause` is traced, the caller gets a fixed message.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(ErrorCode::ServiceFailure, "the service failed to process the request")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"success": false, "error": {"code": self.code.as_str(), "message": self.message}});
        if let Some(reason) = self.reason {
            body["error"]["reason"] = json!(reason);
        }
        let mut res = (self.code.status(), Json(body)).into_response();
        if let Some(allow) = self.allow {
            res.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        res
    }
}

impl ApiError {
    /// A provider's failure in the contract's terms. A 4xx keeps the provider's message (it explains the
    /// caller's own request); a 5xx says only which way it failed, the cause goes to the trace.
    fn from_backend(provider: Provider, e: BackendError) -> Self {
        let unavailable = |what: &str| {
            tracing::warn!(%provider, error = %e, "provider call failed");
            Self::new(ErrorCode::ServiceUnavailable, format!("the {provider} video service {what}"))
        };
        match &e {
            BackendError::NotFound => Self::not_found("the meeting does not exist or was deleted"),
            BackendError::AtCapacity => Self::new(ErrorCode::ServiceUnavailable, "the video server is at capacity"),
            BackendError::Timeout => unavailable("did not answer in time"),
            BackendError::Failed(_) => unavailable("could not be reached"),
            BackendError::Provider { kind, message } => {
                let code = match kind {
                    ProviderErrorKind::BadRequest => ErrorCode::BadRequest,
                    ProviderErrorKind::Unauthorized => ErrorCode::Unauthorized,
                    ProviderErrorKind::Forbidden => ErrorCode::Forbidden,
                    ProviderErrorKind::NotFound => ErrorCode::NotFound,
                    ProviderErrorKind::Conflict => ErrorCode::Conflict,
                    ProviderErrorKind::UnprocessableEntity => ErrorCode::UnprocessableEntity,
                    ProviderErrorKind::Throttling => ErrorCode::Throttling,
                    ProviderErrorKind::ServiceUnavailable => return unavailable("is unavailable"),
                    ProviderErrorKind::ServiceFailure => {
                        tracing::error!(%provider, error = %e, "provider call failed");
                        return Self::new(ErrorCode::ServiceFailure, "the service failed to process the request");
                    }
                };
                tracing::info!(%provider, code = kind.as_str(), "provider refused the request");
                let message = if message.is_empty() { format!("the {provider} video service refused the request") } else { message.clone() };
                Self::new(code, message)
            }
        }
    }
}

/// axum's JSON extractor failures, mapped onto our codes. Shape errors (wrong types, missing fields,
/// unknown action) are 400 like any other bad input, not axum's 422.
impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(ErrorCode::PayloadTooLarge, "the request body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::new(ErrorCode::UnsupportedMediaType, "the request body must be JSON (Content-Type: application/json)")
            }
            StatusCode::INTERNAL_SERVER_ERROR => Self::internal(&r),
            // Where and what was wrong, never the value (see `json`).
            _ => Self::bad_request(super::json::refusal(&r)),
        }
    }
}

impl From<MeetingError> for ApiError {
    fn from(e: MeetingError) -> Self {
        match e {
            MeetingError::NotFound => Self::not_found("the meeting does not exist or was deleted"),
            MeetingError::AttendeeLimit => Self::new(ErrorCode::UnprocessableEntity, e.to_string()),
            MeetingError::Unavailable | MeetingError::NotConfigured(_) => {
                Self::new(ErrorCode::ServiceUnavailable, e.to_string())
            }
            MeetingError::AppointmentTaken => Self::new(ErrorCode::Conflict, e.to_string()),
            MeetingError::Invalid(message) => Self::bad_request(message),
            MeetingError::Provider { provider, source } => Self::from_backend(provider, source),
            MeetingError::Store(cause) => cause.into(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::NotFound => Self::not_found("not found"),
            StoreError::Conflict(_) => Self::new(ErrorCode::Conflict, "the change conflicts with stored data"),
            StoreError::Unavailable(_) => {
                tracing::error!(error = %e, "the database is unavailable");
                Self::new(ErrorCode::ServiceUnavailable, "the database is unavailable; try again shortly")
            }
            other => Self::internal(&other),
        }
    }
}
