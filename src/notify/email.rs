//! Email over SMTP with lettre, on rustls. One connection per message (no pool): reminders are few, and a
//! fresh connection means one message's failure never leaves a half-used session for the next.
//!
//! Each message carries a `Message-ID` derived from its outbox row, so a retry after an uncertain end (a
//! timeout once the message was handed over) is recognisably the same message, and a `Date`. Every attempt is
//! bounded by the configured timeout as a whole, not only per network step.

use super::SendError;
use super::config::{SmtpConfig, SmtpSecurity};
use super::templates::EmailContent;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::time::Duration;

/// The right-hand side of the Message-IDs we make.
const MESSAGE_ID_DOMAIN: &str = "telehealth-gateway";

pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

impl SmtpSender {
    /// Builds the transport; nothing is contacted until the first `send`. Fails only on TLS setup (the
    /// system's root certificates or `SMTP_CA_FILE`).
    pub fn new(config: &SmtpConfig) -> anyhow::Result<Self> {
        let tls = || -> anyhow::Result<TlsParameters> {
            let mut params = TlsParameters::builder(config.host.clone());
            if let Some(pem) = &config.extra_root_pem {
                params = params.add_root_certificate(Certificate::from_pem(pem)?);
            }
            Ok(params.build_rustls()?)
        };
        let tls = match config.security {
            SmtpSecurity::Plain => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(tls()?),
            SmtpSecurity::Opportunistic => Tls::Opportunistic(tls()?),
            SmtpSecurity::ImplicitTls => Tls::Wrapper(tls()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.as_str())
            .port(config.port)
            .tls(tls)
            .timeout(Some(config.timeout));
        if let Some((user, password)) = &config.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        if let Some(name) = &config.hello_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        Ok(Self { transport: builder.build(), from: config.from.clone(), timeout: config.timeout })
    }

    /// Sends one plain-text email to `to`. `message_id` is either a whole Message-ID (`<left@right>`) or a
    /// bare token such as `outbox-42`, which becomes `<outbox-42@telehealth-gateway>` (see `message_id`).
    pub async fn send(&self, to: &str, content: &EmailContent, message_id: &str) -> Result<(), SendError> {
        let to: Address = to.parse().map_err(|_| SendError::Permanent("invalid recipient address".into()))?;
        let id = header_message_id(message_id)
            .ok_or_else(|| SendError::Permanent("invalid Message-ID (expected a token or <left@right>)".into()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(content.subject.as_str())
            .message_id(Some(id))
            .date_now()
            .header(ContentType::TEXT_PLAIN)
            .body(content.body.clone())
            // lettre's reasons name header values; ours must not.
            .map_err(|_| SendError::Permanent("the message could not be built".into()))?;
        // lettre bounds each network step; this bounds the attempt. Timing out after the server has taken the
        // message may deliver it twice on retry: the stable Message-ID is what lets mail systems tell.
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_) => Err(SendError::Retryable("smtp timeout".into())),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
}

/// The Message-ID of an outbox row's email: `<outbox-{id}@telehealth-gateway>`.
pub fn message_id(outbox_id: impl std::fmt::Display) -> String {
    format!("<outbox-{outbox_id}@{MESSAGE_ID_DOMAIN}>")
}

/// The header value for `send`'s `message_id`, or None when it could break the header (spaces, line breaks,
/// brackets inside).
fn header_message_id(given: &str) -> Option<String> {
    let atom = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() && !"<>@\"\\()[],;:".contains(c));
    if let Some(inner) = given.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
        let (left, right) = inner.split_once('@')?;
        (atom(left) && atom(right)).then(|| given.to_owned())
    } else {
        atom(given).then(|| format!("<{given}@{MESSAGE_ID_DOMAIN}>"))
    }
}

/// SMTP's verdict in our terms. The server's reply text is left out: it often repeats the recipient.
fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    if let Some(code) = e.status() {
        let code = code.to_string();
        // 530/534/535/538: the server refused the gateway's own login, not this message; once an operator
        // fixes the credentials it would go through, so it waits rather than being dropped.
        if e.is_transient() || ["530", "534", "535", "538"].contains(&code.as_str()) {
            return SendError::Retryable(format!("smtp {code}"));
        }
        return SendError::Permanent(format!("smtp {code}"));
    }
    if e.is_timeout() {
        return SendError::Retryable("smtp timeout".into());
    }
    if e.is_tls() {
        return SendError::Retryable("smtp tls failure".into());
    }
    if e.is_response() {
        return SendError::Retryable("smtp unreadable reply".into());
    }
    if e.is_client() {
        return SendError::Retryable("smtp client error".into());
    }
    // Connection and network errors: name the I/O error's kind (e.g. "connection refused") if there is one. A
    // handshake that failed (e.g. an untrusted certificate) reaches lettre as an I/O error wrapping rustls's.
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                return SendError::Retryable("smtp tls failure".into());
            }
            return SendError::Retryable(format!("smtp connection failed: {}", io.kind()));
        }
        source = err.source();
    }
    SendError::Retryable("smtp connection failed".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_and_cannot_break_the_header() {
        assert_eq!(message_id(42), "<outbox-42@telehealth-gateway>");
        assert_eq!(header_message_id("outbox-42").as_deref(), Some("<outbox-42@telehealth-gateway>"));
        let whole = "<outbox-42@telehealth-gateway>";
        assert_eq!(header_message_id(whole).as_deref(), Some(whole));
        for bad in ["", "a b", "a\r\nBcc: x@y", "<a@b", "<ab>", "<a@b@c>", "<@b>", "a@b"] {
            assert_eq!(header_message_id(bad), None, "{bad:?}");
        }
    }
}
