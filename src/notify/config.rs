//! Notification settings, read through a lookup function (`Config::from_env` passes the environment, tests a
//! map) and validated at start, so a typo in `SMTP_URL` stops the gateway instead of every reminder failing
//! later. Email is on when `SMTP_URL` is set; SMS only with `SMS_ENABLED=true`, because each text costs money and
//! contacts AWS, which an offline clinic must not do by accident.
//!
//! `SMTP_URL` follows lettre's URL form (`smtp://host:port` plain, `smtp://host:port?tls=required` STARTTLS,
//! `smtps://host:port` implicit TLS, `user:password@` allowed) but is parsed here, into parts whose `Debug`
//! hides the password.

use anyhow::{Context, bail};
use chrono_tz::Tz;
use lettre::message::Mailbox;
use lettre::transport::smtp::client::Certificate;
use std::net::IpAddr;
use std::time::Duration;

/// Everything notify/ needs to know at start.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Set when `SMTP_URL` is: emails are sent through it.
    pub smtp: Option<SmtpConfig>,
    /// Set when `SMS_ENABLED=true`: text messages go through Amazon SNS.
    pub sms: Option<SnsConfig>,
    /// `CLINIC_NAME`, signed under every email (default "Our Clinic").
    pub practice_name: String,
    /// `CLINIC_TIMEZONE` (IANA, e.g. `America/New_York`; default UTC): dates and times in messages are written
    /// in it.
    pub timezone: Tz,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self { smtp: None, sms: None, practice_name: DEFAULT_PRACTICE_NAME.into(), timezone: Tz::UTC }
    }
}

const DEFAULT_PRACTICE_NAME: &str = "Our Clinic";

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: no TLS at all (a relay on the same machine).
    Plain,
    /// `smtp://…?tls=required`: STARTTLS, refusing a server that does not offer it.
    StartTls,
    /// `smtp://…?tls=opportunistic`: STARTTLS when offered, plain otherwise.
    Opportunistic,
    /// `smtps://`: TLS from the first byte.
    ImplicitTls,
}

#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// User and password from the URL, percent-decoded.
    pub credentials: Option<(String, String)>,
    /// The URL's path, if any: the name given in EHLO (lettre's convention).
    pub hello_name: Option<String>,
    /// `SMTP_FROM`, e.g. `Riverside Clinic <noreply@clinic.example>`.
    pub from: Mailbox,
    /// `SMTP_TIMEOUT_MS` (default 10000): one delivery attempt's limit, and each network step's within it.
    pub timeout: Duration,
    /// `SMTP_CA_FILE`: a PEM certificate trusted besides the system's (a clinic's relay with a private CA).
    pub extra_root_pem: Option<Vec<u8>>,
}

/// Redacted: the password.
impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("credentials", &self.credentials.as_ref().map(|(user, _)| (user, "<redacted>")))
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .field("extra_root", &self.extra_root_pem.is_some())
            .finish_non_exhaustive()
    }
}

const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_millis(10_000);

impl SmtpConfig {
    /// From an `SMTP_URL` and an `SMTP_FROM`, with the default timeout and no extra root. The error never
    /// repeats the URL (it may hold a password).
    pub fn new(url: &str, from: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(url).map_err(|e| anyhow::anyhow!("SMTP_URL is not a URL: {e}"))?;
        let tls = url.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None) => (SmtpSecurity::Plain, 25),
            ("smtp", Some("required")) => (SmtpSecurity::StartTls, 587),
            ("smtp", Some("opportunistic")) => (SmtpSecurity::Opportunistic, 587),
            ("smtps", None) => (SmtpSecurity::ImplicitTls, 465),
            (scheme, tls) => bail!(
                "SMTP_URL: scheme {scheme:?} with tls={tls:?} is not supported: use smtp://host:port, \
                 smtp://host:port?tls=required (STARTTLS) or smtps://host:port (implicit TLS)"
            ),
        };
        let host = match url.host() {
            // The URL keeps IPv6 literals in brackets; a socket address needs them without.
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => bail!("SMTP_URL has no host"),
        };
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().map(|s| s.into_owned());
        let credentials = match url.password() {
            None if url.username().is_empty() => None,
            None => bail!("SMTP_URL has a user but no password"),
            Some(password) => Some((
                decode(url.username()).context("SMTP_URL's user is not UTF-8")?,
                decode(password).context("SMTP_URL's password is not UTF-8")?,
            )),
        };
        // A password sent without TLS can be read by anyone on the path, and an opportunistic upgrade can be
        // stripped by them; only a relay on this machine is exempt.
        let protected = matches!(security, SmtpSecurity::StartTls | SmtpSecurity::ImplicitTls);
        if credentials.is_some() && !protected && !is_loopback(&host) {
            bail!("SMTP_URL sends a password without TLS to {host}: use smtps:// or ?tls=required");
        }
        let path = url.path().trim_matches('/');
        let from: Mailbox = from
            .parse()
            .map_err(|e| anyhow::anyhow!("SMTP_FROM={from:?} is not an address (\"Name <user@host>\" allowed): {e}"))?;
        Ok(Self {
            port: url.port().unwrap_or(default_port),
            host,
            security,
            credentials,
            hello_name: (!path.is_empty()).then(|| path.to_owned()),
            from,
            timeout: DEFAULT_SMTP_TIMEOUT,
            extra_root_pem: None,
        })
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// SNS's `AWS.SNS.SMS.SMSType`: transactional texts are delivered with priority (what reminders need).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsType {
    Transactional,
    Promotional,
}

impl SmsType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transactional => "Transactional",
            Self::Promotional => "Promotional",
        }
    }
}

/// How text messages reach Amazon SNS. Production leaves `endpoint_url` and `credentials` unset: the AWS SDK
/// then reads the standard environment (`AWS_ACCESS_KEY_ID` …, `AWS_PROFILE`, `AWS_ENDPOINT_URL`,
/// `AWS_ENDPOINT_URL_SNS`). Tests set both to reach a local fake.
#[derive(Clone)]
pub struct SnsConfig {
    /// `SNS_REGION`. Unset: `AWS_REGION` / `AWS_DEFAULT_REGION` / the profile's, else us-east-1.
    pub region: Option<String>,
    /// `SNS_SENDER_ID`: the name shown instead of a number where carriers allow it (1-11 letters and digits).
    pub sender_id: Option<String>,
    /// `SNS_SMS_TYPE`: `Transactional` (default) or `Promotional`.
    pub sms_type: SmsType,
    /// An endpoint to use instead of the SDK's resolution (tests).
    pub endpoint_url: Option<String>,
    /// Static credentials instead of the SDK's default chain (tests): access key id, secret, session token.
    pub credentials: Option<(String, String, Option<String>)>,
    /// `SNS_MAX_ATTEMPTS` (default 3): tries per text, the first included. A try that timed out may still have
    /// been delivered, so more tries can mean a duplicate text; the outbox retries later anyway.
    pub max_attempts: u32,
    /// `SNS_ATTEMPT_TIMEOUT_MS` (default 3000): one try's limit.
    pub attempt_timeout: Duration,
    /// `SNS_TIMEOUT_MS` (default 10000): the whole call's limit, retries included.
    pub call_timeout: Duration,
}

/// Redacted: it may hold a secret key.
impl std::fmt::Debug for SnsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnsConfig")
            .field("region", &self.region)
            .field("sender_id", &self.sender_id)
            .field("sms_type", &self.sms_type)
            .field("endpoint_url", &self.endpoint_url)
            .field("credentials", &self.credentials.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Default for SnsConfig {
    fn default() -> Self {
        Self {
            region: None,
            sender_id: None,
            sms_type: SmsType::Transactional,
            endpoint_url: None,
            credentials: None,
            max_attempts: 3,
            attempt_timeout: Duration::from_millis(3000),
            call_timeout: Duration::from_millis(10_000),
        }
    }
}

/// Reads the settings through `get` (a variable's value, or None when unset). Blank values count as unset.
pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<NotifyConfig> {
    let var = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let millis = |name: &str, default: Duration| -> anyhow::Result<Duration> {
        match var(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
                _ => bail!("{name}={v:?} is invalid: expected milliseconds above 0"),
            },
        }
    };

    let smtp = match var("SMTP_URL") {
        None => None,
        Some(url) => {
            let from = var("SMTP_FROM").context("SMTP_FROM is required when SMTP_URL is set")?;
            let mut smtp = SmtpConfig::new(&url, &from)?;
            smtp.timeout = millis("SMTP_TIMEOUT_MS", DEFAULT_SMTP_TIMEOUT)?;
            if let Some(path) = var("SMTP_CA_FILE") {
                let pem = std::fs::read(&path).with_context(|| format!("SMTP_CA_FILE={path:?} cannot be read"))?;
                // An empty or key-only file parses as "no certificates"; it must hold at least one.
                let has_cert = pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----");
                if !has_cert || Certificate::from_pem(&pem).is_err() {
                    bail!("SMTP_CA_FILE={path:?} is not a PEM certificate");
                }
                smtp.extra_root_pem = Some(pem);
            }
            Some(smtp)
        }
    };

    let sms_enabled = match var("SMS_ENABLED").map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false" | "0" | "no" | "off") => false,
        Some("true" | "1" | "yes" | "on") => true,
        Some(other) => bail!("SMS_ENABLED={other:?} is invalid: expected true or false"),
    };
    let sms = if !sms_enabled {
        None
    } else {
        let defaults = SnsConfig::default();
        let sms_type = match var("SNS_SMS_TYPE").as_deref() {
            None | Some("Transactional") => SmsType::Transactional,
            Some("Promotional") => SmsType::Promotional,
            Some(other) => bail!("SNS_SMS_TYPE={other:?} is invalid: expected Transactional or Promotional"),
        };
        let sender_id = var("SNS_SENDER_ID");
        if let Some(id) = &sender_id {
            // SNS's rule: up to 11 letters and digits, at least one letter, no spaces.
            let ok = (1..=11).contains(&id.len())
                && id.chars().all(|c| c.is_ascii_alphanumeric())
                && id.chars().any(|c| c.is_ascii_alphabetic());
            if !ok {
                bail!("SNS_SENDER_ID={id:?} is invalid: 1-11 letters and digits, at least one letter");
            }
        }
        let max_attempts = match var("SNS_MAX_ATTEMPTS") {
            None => defaults.max_attempts,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => bail!("SNS_MAX_ATTEMPTS={v:?} is invalid: expected a whole number above 0"),
            },
        };
        Some(SnsConfig {
            region: var("SNS_REGION"),
            sender_id,
            sms_type,
            max_attempts,
            attempt_timeout: millis("SNS_ATTEMPT_TIMEOUT_MS", defaults.attempt_timeout)?,
            call_timeout: millis("SNS_TIMEOUT_MS", defaults.call_timeout)?,
            ..defaults
        })
    };

    let timezone = match var("CLINIC_TIMEZONE") {
        None => Tz::UTC,
        Some(name) => name
            .parse::<Tz>()
            .map_err(|_| anyhow::anyhow!("CLINIC_TIMEZONE={name:?} is not an IANA time zone (e.g. America/New_York)"))?,
    };

    let practice_name = var("CLINIC_NAME").unwrap_or_else(|| DEFAULT_PRACTICE_NAME.into());
    if practice_name.chars().count() > 100 || practice_name.chars().any(char::is_control) {
        bail!("CLINIC_NAME must be at most 100 printable characters");
    }
    Ok(NotifyConfig { smtp, sms, practice_name, timezone })
}

/// How the outbox worker retries (`OUTBOX_*`, read in `Config::from_env`).
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// `OUTBOX_MAX_ATTEMPTS`: a message that failed this many times (retryably) is `failed`.
    pub max_attempts: u32,
    /// `OUTBOX_RETRY_BASE_MS`: the wait after the first failed attempt; it doubles with each further one…
    pub retry_base: std::time::Duration,
    /// `OUTBOX_RETRY_MAX_MS`: …up to this.
    pub retry_max: std::time::Duration,
    /// A claim older than this is abandoned (its process stopped mid-send): longer than any send may take.
    pub claim_timeout: std::time::Duration,
    /// How often the worker looks when it has not been woken.
    pub poll: std::time::Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            retry_base: std::time::Duration::from_secs(5),
            retry_max: std::time::Duration::from_secs(300),
            claim_timeout: std::time::Duration::from_secs(60),
            poll: std::time::Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> anyhow::Result<NotifyConfig> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        from_lookup(|name| map.get(name).cloned())
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        format!("{:#}", read(pairs).expect_err("rejected"))
    }

    #[test]
    fn nothing_set_means_no_transports_a_default_name_and_utc() {
        let c = read(&[]).unwrap();
        assert!(c.smtp.is_none() && c.sms.is_none());
        assert_eq!((c.practice_name.as_str(), c.timezone), ("Our Clinic", Tz::UTC));
        let c = read(&[("CLINIC_NAME", "Riverside"), ("CLINIC_TIMEZONE", "America/New_York")]).unwrap();
        assert_eq!((c.practice_name.as_str(), c.timezone), ("Riverside", chrono_tz::America::New_York));
    }

    #[test]
    fn smtp_urls_take_lettres_three_forms_with_their_default_ports() {
        let cases = [
            ("smtp://mail.example", SmtpSecurity::Plain, 25),
            ("smtp://mail.example:2525", SmtpSecurity::Plain, 2525),
            ("smtp://mail.example?tls=required", SmtpSecurity::StartTls, 587),
            ("smtp://mail.example:26?tls=opportunistic", SmtpSecurity::Opportunistic, 26),
            ("smtps://mail.example", SmtpSecurity::ImplicitTls, 465),
        ];
        for (url, security, port) in cases {
            let c = read(&[("SMTP_URL", url), ("SMTP_FROM", "noreply@clinic.example")]).unwrap();
            let smtp = c.smtp.unwrap();
            assert_eq!((smtp.host.as_str(), smtp.security, smtp.port), ("mail.example", security, port), "{url}");
            assert_eq!(smtp.timeout, Duration::from_secs(10));
        }
        let c = read(&[("SMTP_URL", "smtp://[::1]:2525/gw.example"), ("SMTP_FROM", "a@b.example"), ("SMTP_TIMEOUT_MS", "1500")]);
        let smtp = c.unwrap().smtp.unwrap();
        assert_eq!((smtp.host.as_str(), smtp.hello_name.as_deref(), smtp.timeout), ("::1", Some("gw.example"), Duration::from_millis(1500)));
    }

    #[test]
    fn the_from_address_may_carry_a_display_name_and_is_required() {
        let c = read(&[("SMTP_URL", "smtp://localhost"), ("SMTP_FROM", "Riverside Clinic <noreply@clinic.example>")]).unwrap();
        let from = c.smtp.unwrap().from;
        assert_eq!((from.name.as_deref(), from.email.to_string().as_str()), (Some("Riverside Clinic"), "noreply@clinic.example"));
        assert!(error(&[("SMTP_URL", "smtp://localhost")]).contains("SMTP_FROM is required"));
        assert!(error(&[("SMTP_URL", "smtp://localhost"), ("SMTP_FROM", "not an address")]).contains("SMTP_FROM"));
    }

    #[test]
    fn bad_smtp_settings_are_refused_without_repeating_the_password() {
        let from = ("SMTP_FROM", "a@b.example");
        for (url, expected) in [
            ("http://mail.example", "scheme \"http\""),
            ("smtp://mail.example?tls=sometimes", "tls=Some(\"sometimes\")"),
            ("smtps://mail.example?tls=required", "not supported"),
            ("smtp://user:hunter2@mail.example:587", "password without TLS"),
            ("smtp://user:hunter2@mail.example?tls=opportunistic", "password without TLS"),
            ("smtp://user@mail.example?tls=required", "no password"),
            ("not a url", "not a URL"),
        ] {
            let e = error(&[("SMTP_URL", url), from]);
            assert!(e.contains(expected), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(error(&[("SMTP_URL", "smtp://mail.example"), from, ("SMTP_TIMEOUT_MS", "0")]).contains("SMTP_TIMEOUT_MS"));
        assert!(error(&[("SMTP_URL", "smtp://mail.example"), from, ("SMTP_CA_FILE", "/nonexistent/ca.pem")]).contains("SMTP_CA_FILE"));
        assert!(error(&[("CLINIC_TIMEZONE", "Mars/Olympus")]).contains("CLINIC_TIMEZONE"));
    }

    #[test]
    fn a_password_is_decoded_allowed_over_tls_or_loopback_and_never_shown() {
        let from = ("SMTP_FROM", "a@b.example");
        let c = read(&[("SMTP_URL", "smtps://clinic%40mail:p%40ss%3Aw0rd@mail.example"), from]).unwrap();
        let smtp = c.smtp.unwrap();
        assert_eq!(smtp.credentials, Some(("clinic@mail".into(), "p@ss:w0rd".into())));
        let shown = format!("{smtp:?}");
        assert!(!shown.contains("p@ss") && !shown.contains("w0rd") && shown.contains("<redacted>"), "{shown}");
        for url in ["smtp://u:pw@127.0.0.1:2525", "smtp://u:pw@localhost", "smtp://u:pw@mail.example?tls=required"] {
            assert!(read(&[("SMTP_URL", url), from]).is_ok(), "{url}");
        }
    }

    #[test]
    fn sms_is_off_unless_explicitly_enabled_and_reads_the_sns_settings() {
        assert!(read(&[("SNS_REGION", "eu-west-1")]).unwrap().sms.is_none());
        assert!(read(&[("SMS_ENABLED", "false")]).unwrap().sms.is_none());
        let sns = read(&[("SMS_ENABLED", "true")]).unwrap().sms.unwrap();
        assert_eq!((sns.region, sns.sender_id, sns.sms_type, sns.max_attempts), (None, None, SmsType::Transactional, 3));
        let sns = read(&[
            ("SMS_ENABLED", "true"),
            ("SNS_REGION", "eu-west-1"),
            ("SNS_SENDER_ID", "Riverside"),
            ("SNS_SMS_TYPE", "Promotional"),
            ("SNS_MAX_ATTEMPTS", "1"),
            ("SNS_TIMEOUT_MS", "2500"),
        ])
        .unwrap()
        .sms
        .unwrap();
        assert_eq!(sns.region.as_deref(), Some("eu-west-1"));
        assert_eq!((sns.sender_id.as_deref(), sns.sms_type, sns.max_attempts), (Some("Riverside"), SmsType::Promotional, 1));
        assert_eq!(sns.call_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn bad_sms_settings_are_refused() {
        assert!(error(&[("SMS_ENABLED", "maybe")]).contains("SMS_ENABLED"));
        let on = ("SMS_ENABLED", "true");
        assert!(error(&[on, ("SNS_SMS_TYPE", "transactional-ish")]).contains("SNS_SMS_TYPE"));
        for id in ["Riverside Clinic", "123456", "TwelveLetter"] {
            assert!(error(&[on, ("SNS_SENDER_ID", id)]).contains("SNS_SENDER_ID"), "{id}");
        }
        assert!(error(&[on, ("SNS_MAX_ATTEMPTS", "0")]).contains("SNS_MAX_ATTEMPTS"));
    }

    #[test]
    fn sns_configuration_hides_its_credentials() {
        let sns = SnsConfig { credentials: Some(("AKIA".into(), "very-secret".into(), None)), ..Default::default() };
        let shown = format!("{sns:?}");
        assert!(!shown.contains("very-secret") && shown.contains("<redacted>"), "{shown}");
    }
}
