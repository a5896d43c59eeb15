//! Text messages through Amazon SNS: `Publish` straight to a phone number (no topic, no subscription), with
//! SNS's SMS attributes (`AWS.SNS.SMS.SMSType`, and `AWS.SNS.SMS.SenderID` when configured). The client is
//! built like Chime's (`crate::aws`): standard AWS environment, no instance-metadata lookups, bounded retries
//! and timeouts.

use super::SendError;
use super::config::{SmsType, SnsConfig};
use aws_sdk_sns::Client;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;
use aws_smithy_runtime_api::http::Response as HttpResponse;

/// Error codes that say "not now" rather than "never". The credential codes are here because the gateway's
/// setup, not the message, is at fault: once an operator fixes it, the waiting texts should go.
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "Throttled",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "KMSThrottling",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "AuthorizationError",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "ExpiredToken",
    "AccessDenied",
    "UnrecognizedClient",
];

pub struct SnsSender {
    client: Client,
    sms_type: SmsType,
    sender_id: Option<String>,
}

impl SnsSender {
    /// Builds the client. Nothing is contacted yet; credentials are resolved on the first send.
    pub async fn new(config: &SnsConfig) -> Self {
        let sdk = crate::aws::sdk_config(&crate::aws::ClientSettings {
            region: config.region.as_deref(),
            endpoint_url: config.endpoint_url.as_deref(),
            credentials: config.credentials.as_ref(),
            max_attempts: config.max_attempts,
            attempt_timeout: config.attempt_timeout,
            call_timeout: config.call_timeout,
        })
        .await;
        Self { client: Client::new(&sdk), sms_type: config.sms_type, sender_id: config.sender_id.clone() }
    }

    /// Sends `text` to `to_e164` (`+` and 7-15 digits). Returns SNS's MessageId (empty if SNS accepted the text
    /// without naming it: it was sent, so that is not an error).
    pub async fn send(&self, to_e164: &str, text: &str) -> Result<String, SendError> {
        if !is_e164(to_e164) {
            return Err(SendError::Permanent("invalid phone number (expected E.164: + and 7-15 digits)".into()));
        }
        let mut publish = self
            .client
            .publish()
            .phone_number(to_e164)
            .message(text)
            .message_attributes("AWS.SNS.SMS.SMSType", string_attribute(self.sms_type.as_str())?);
        if let Some(id) = &self.sender_id {
            publish = publish.message_attributes("AWS.SNS.SMS.SenderID", string_attribute(id)?);
        }
        match publish.send().await {
            Ok(out) => Ok(out.message_id().unwrap_or_default().to_owned()),
            Err(e) => Err(classify(&e)),
        }
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, SendError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|_| SendError::Permanent("sns message attribute not built".into()))
}

/// `+`, a non-zero digit, and at most 15 digits in all (ITU-T E.164).
fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
    })
}

/// SNS's verdict in our terms. SNS's own message is left out: for a bad number it repeats the number.
fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> SendError {
    let retry = |s: &str| SendError::Retryable(s.to_owned());
    match e {
        SdkError::TimeoutError(_) => retry("sns timeout"),
        SdkError::DispatchFailure(d) if d.is_timeout() => retry("sns timeout"),
        SdkError::DispatchFailure(d) if d.is_io() => retry("sns connection failed"),
        SdkError::DispatchFailure(_) => retry("sns request not sent"),
        SdkError::ResponseError(_) => retry("sns unreadable response"),
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            // Only the code's own characters, in case a proxy put something else there.
            let code = ctx.err().code().unwrap_or("Unknown");
            let code: String = code.chars().filter(char::is_ascii_alphanumeric).take(64).collect();
            let text = format!("sns {code} ({status})");
            if status >= 500 || status == 429 || RETRYABLE_CODES.contains(&code.as_str()) {
                SendError::Retryable(text)
            } else {
                SendError::Permanent(text)
            }
        }
        // Building the request failed (e.g. no credentials could be loaded): the setup, not the text.
        _ => retry("sns request not built"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_must_be_e164() {
        for ok in ["+15551234567", "+447700900123", "+1234567"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in ["15551234567", "+1 555 123 4567", "+0123456789", "+1234567890123456", "+", "", "+1555abc4567"] {
            assert!(!is_e164(bad), "{bad}");
        }
    }
}
