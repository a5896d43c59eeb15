//! One `Config`, read from the environment (and `.env`), validated at start: the gateway refuses to boot
//! on a bad value rather than limping along. Every variable is documented in README.md and `.env.example`.

pub mod invites;
pub mod limits;
pub mod turn;

use crate::ids::Provider;
use crate::notify::config::NotifyConfig;
use crate::notify::OutboxConfig;
use crate::sfu::{SfuConfig, SrtpProfiles};
use anyhow::{Context, bail};
pub use invites::InviteLifetime;
pub use limits::{LimitsConfig, RateLimit};
pub use turn::{TurnConfig, TurnListenConfig};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderChoice {
    Auto,
    Local,
    Chime,
}

/// How the Chime backend reaches Chime. Production leaves `endpoint_url` and `credentials` unset: the AWS SDK
/// then reads the standard environment (`AWS_ACCESS_KEY_ID` …, `AWS_SESSION_TOKEN`, `AWS_PROFILE`,
/// `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_CHIME_SDK_MEETINGS`). Tests set both to reach a local fake.
#[derive(Clone)]
pub struct ChimeConfig {
    /// `AWS_CHIME_REGION` (the seed's name). Unset: `AWS_REGION` / `AWS_DEFAULT_REGION` / the profile's, else
    /// us-east-1.
    pub region: Option<String>,
    /// `CHIME_MEDIA_REGION`: where Chime hosts the media. Unset: the region above.
    pub media_region: Option<String>,
    /// An endpoint to use instead of the SDK's resolution (tests).
    pub endpoint_url: Option<String>,
    /// Static credentials instead of the SDK's default chain (tests): access key id, secret, session token.
    pub credentials: Option<(String, String, Option<String>)>,
    /// `CHIME_MAX_ATTEMPTS`: tries per call, the first included (the SDK's standard retry, with backoff).
    pub max_attempts: u32,
    /// `CHIME_ATTEMPT_TIMEOUT_MS`: one try's limit.
    pub attempt_timeout: Duration,
    /// `CHIME_TIMEOUT_MS`: the whole call's limit, retries included; failover starts after it at the latest.
    pub call_timeout: Duration,
}

/// Redacted: it may hold a secret key.
impl std::fmt::Debug for ChimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChimeConfig")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("credentials", &self.credentials.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Default for ChimeConfig {
    fn default() -> Self {
        Self {
            region: None,
            media_region: None,
            endpoint_url: None,
            credentials: None,
            max_attempts: 3,
            attempt_timeout: Duration::from_millis(2000),
            call_timeout: Duration::from_millis(5000),
        }
    }
}

/// When meetings are cleaned up, and what usage costs.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// `MEETING_IDLE_SECS`: a local meeting is deleted this long after its last participant left (default 30 min).
    pub local_idle: Duration,
    /// `MEETING_GRACE_SECS`: a meeting outlives its `endsAt` by this much before it is deleted (default 30 min);
    /// JoinTokens expire then too.
    pub grace: Duration,
    /// `CLEANUP_INTERVAL_SECS`: how often the cleanup runs (default 60 s).
    pub interval: Duration,
    /// US dollars per attendee-minute for the usage report: `CHIME_COST_PER_ATTENDEE_MINUTE` (default the
    /// seed's 0.0017) and `LOCAL_COST_PER_ATTENDEE_MINUTE` (default 0).
    pub chime_cost_per_minute: f64,
    pub local_cost_per_minute: f64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            local_idle: Duration::from_secs(30 * 60),
            grace: Duration::from_secs(30 * 60),
            interval: Duration::from_secs(60),
            chime_cost_per_minute: 0.0017,
            local_cost_per_minute: 0.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Plain HTTP listener (`HTTP_ADDR`, default 127.0.0.1:8080). Browsers treat localhost as secure.
    pub http_addr: SocketAddr,
    /// TLS listener (`HTTPS_ADDR`, default 0.0.0.0:8443) for other devices on the clinic LAN.
    /// `HTTPS_ADDR=off` disables it.
    pub https_addr: Option<SocketAddr>,
    /// `DATABASE_URL`; default `sqlite://data/telehealth.db`.
    pub database_url: String,
    /// Where generated state lives (`DATA_DIR`, default `data/`): SQLite file, generated API key, signing secret.
    pub data_dir: PathBuf,
    /// Where TLS material lives (`CERTS_DIR`, default `certs/`).
    pub certs_dir: PathBuf,
    /// Directory of static browser assets (`WEB_DIR`, default `web/`).
    pub web_dir: PathBuf,
    /// `APP_URL`: the public base URL used to build absolute links (e.g. `telehealth_link`).
    pub app_url: Option<String>,
    pub provider: ProviderChoice,
    /// `TELEHEALTH_API_KEYS`, comma-separated. Empty: a key is generated under `data/` on first start.
    pub api_keys: Vec<String>,
    /// `TELEHEALTH_SIGNING_SECRET`: HMAC key for invite and join tokens (at least 32 characters). Unset: a
    /// random secret is generated under `data_dir` on first start and reused, so tokens survive restarts.
    pub signing_secret: Option<String>,
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` both present: `auto` then means Chime (the seed's rule),
    /// and there is no DEMO MODE banner.
    pub aws_credentials_present: bool,
    /// `AWS_CHIME_REGION`, default us-east-1: the `MediaRegion` local meetings report.
    pub media_region: String,
    pub chime: ChimeConfig,
    /// `TELEHEALTH_FAILOVER` (`on` | `off`, default on): create a meeting on the other provider when the chosen
    /// one cannot.
    pub failover: bool,
    /// `LOCAL_MAX_MEETINGS`: meetings with someone connected that the local SFU takes at most (unset: no limit).
    pub local_max_meetings: Option<usize>,
    /// `LOCAL_MAX_PARTICIPANTS`: participants connected to the local SFU at most (unset: no limit).
    pub local_max_participants: Option<usize>,
    pub lifecycle: LifecycleConfig,
    /// `JOIN_TOKEN_TTL_SECS`: the longest a JoinToken lives (default 24 h).
    pub join_token_ttl: Duration,
    /// `SHUTDOWN_GRACE_SECS`: how long shutdown waits for participants to leave (default 5 s).
    pub shutdown_grace: Duration,
    /// `RESUME_WINDOW_SECS`: how long a participant whose connection dropped keeps its place before the others
    /// see it leave (default 60 s; 0: leave at once).
    pub resume_window: Duration,
    /// `TURN_URLS`, `TURN_SECRET`, `TURN_TTL_SECS`: the TURN servers (coturn with `use-auth-secret`, any that
    /// checks TURN REST credentials, or the embedded one) handed to the join pages, each with a credential valid
    /// `TURN_TTL_SECS` (default 6 h). Unset: none; nothing is contacted unless configured.
    pub turn: Option<TurnConfig>,
    /// `TURN_UDP_ADDR`, `TURN_TCP_ADDR`, `TURN_TLS_ADDR` (+ `TURN_RELAY_IP`, `TURN_MAX_ALLOCATIONS`): the
    /// embedded TURN server's listeners. Unset: it does not run.
    pub turn_server: Option<TurnListenConfig>,
    /// `SOCKET_STALL_SECS`: how long a participant's socket may stay too far behind (news skipped) before it is
    /// detached as not reading (default 10 s).
    pub socket_stall: Duration,
    /// `MAX_BODY_BYTES`: the API's request size limit (default 64 KiB).
    pub max_body_bytes: usize,
    /// Rate limits, socket caps and timeouts at the HTTP edge.
    pub limits: LimitsConfig,
    /// `INVITE_TTL` and `INVITE_GRACE`: how long invite links live.
    pub invites: InviteLifetime,
    pub sfu: SfuConfig,
    pub clinic: ClinicConfig,
    /// `CONSOLE_SESSION_HOURS` (default 12, at most 168): how long a console sign-in lasts, whatever happens in it.
    pub console_session_ttl: Duration,
    /// SMTP and SMS (SNS) for the outbox; both unset in an offline clinic.
    pub notify: NotifyConfig,
}

/// The clinic's own scheduling: when reminders go, how the outbox retries. (Its name and time zone,
/// `CLINIC_NAME` and `CLINIC_TIMEZONE`, are in `NotifyConfig`, which renders every message.)
#[derive(Debug, Clone)]
pub struct ClinicConfig {
    /// `REMINDER_OFFSETS` (default `24h,1h`): reminders go this long before a visit.
    pub reminder_offsets: Vec<chrono::Duration>,
    pub outbox: OutboxConfig,
}

impl Default for ClinicConfig {
    fn default() -> Self {
        Self {
            reminder_offsets: vec![chrono::Duration::hours(24), chrono::Duration::hours(1)],
            outbox: OutboxConfig::default(),
        }
    }
}

/// A console session is a bearer of the practice's data on a shared tablet: a week is the longest it may live.
const MAX_CONSOLE_SESSION_HOURS: u64 = 168;

/// An on/off switch (`on`, `true`, `1` / `off`, `false`, `0`), `default` when unset.
fn on_off(name: &str, default: bool) -> anyhow::Result<bool> {
    match var(name).as_deref() {
        None => Ok(default),
        Some("on" | "true" | "1") => Ok(true),
        Some("off" | "false" | "0") => Ok(false),
        Some(other) => bail!("{name}={other:?} is invalid: expected on or off"),
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// `DATA_DIR`, default `data/`. Also read by the load tester to find a local gateway's generated API key.
pub fn data_dir_from_env() -> PathBuf {
    PathBuf::from(var("DATA_DIR").unwrap_or_else(|| "data".into()))
}

/// `TELEHEALTH_API_KEYS`, comma-separated, blanks dropped (not yet checked for length).
pub fn api_keys_from_env() -> Vec<String> {
    var("TELEHEALTH_API_KEYS")
        .map(|v| v.split(',').map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect())
        .unwrap_or_default()
}

fn parse_var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{name}={v:?} is invalid: {e}")),
    }
}

/// A number that must be above zero.
fn positive<T: std::str::FromStr + PartialOrd + Default + Copy>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    let v = parse_var(name, default)?;
    if v <= T::default() {
        bail!("{name} must be above 0");
    }
    Ok(v)
}

/// Unset (no limit) or a number above zero.
fn optional_positive(name: &str) -> anyhow::Result<Option<usize>> {
    if var(name).is_none() {
        return Ok(None);
    }
    positive(name, 1usize).map(Some)
}

/// A price per attendee-minute: finite and not negative.
fn rate(name: &str, default: f64) -> anyhow::Result<f64> {
    let v = parse_var(name, default)?;
    if !v.is_finite() || v < 0.0 {
        bail!("{name} must be a price of 0 or more (US dollars per attendee-minute)");
    }
    Ok(v)
}

fn parse_ip_list(name: &str) -> anyhow::Result<Vec<IpAddr>> {
    let Some(v) = var(name) else { return Ok(Vec::new()) };
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().with_context(|| format!("{name}: {s:?} is not an IP address")))
        .collect()
}

fn parse_port_range(name: &str) -> anyhow::Result<Option<(u16, u16)>> {
    let Some(v) = var(name) else { return Ok(None) };
    let (lo, hi) = v.split_once('-').with_context(|| format!("{name}={v:?}: expected LOW-HIGH, e.g. 40000-40999"))?;
    let lo: u16 = lo.trim().parse().with_context(|| format!("{name}: bad low port"))?;
    let hi: u16 = hi.trim().parse().with_context(|| format!("{name}: bad high port"))?;
    if lo == 0 || lo > hi {
        bail!("{name}={v:?}: the range must be non-empty and above port 0");
    }
    Ok(Some((lo, hi)))
}

impl Config {
    /// Where new meetings go: `chime` when asked for, or in `auto` mode when both AWS keys are set.
    pub fn primary_provider(&self) -> Provider {
        match self.provider {
            ProviderChoice::Chime => Provider::Chime,
            ProviderChoice::Auto if self.aws_credentials_present => Provider::Chime,
            ProviderChoice::Auto | ProviderChoice::Local => Provider::Local,
        }
    }

    /// Whether a Chime backend exists at all: as the primary, or (with AWS keys set) as the overflow of a local
    /// primary. Meetings stored as Chime's need it to be reached after a restart.
    pub fn chime_enabled(&self) -> bool {
        self.provider == ProviderChoice::Chime || self.aws_credentials_present
    }

    /// The defaults with every generated file under `data_dir`, ignoring the environment. For tests and
    /// embedding: callers then override fields (e.g. bind port 0).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            https_addr: Some(SocketAddr::from(([0, 0, 0, 0], 8443))),
            database_url: format!("sqlite://{}/telehealth.db", data_dir.display()),
            certs_dir: data_dir.join("certs"),
            data_dir,
            web_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/web").into(),
            app_url: None,
            provider: ProviderChoice::Auto,
            api_keys: Vec::new(),
            signing_secret: None,
            aws_credentials_present: false,
            media_region: "us-east-1".into(),
            chime: ChimeConfig::default(),
            failover: true,
            local_max_meetings: None,
            local_max_participants: None,
            lifecycle: LifecycleConfig::default(),
            join_token_ttl: Duration::from_secs(24 * 3600),
            shutdown_grace: Duration::from_secs(5),
            resume_window: Duration::from_secs(60),
            socket_stall: Duration::from_secs(10),
            turn: None,
            turn_server: None,
            max_body_bytes: 64 * 1024,
            limits: LimitsConfig::default(),
            invites: InviteLifetime::default(),
            sfu: SfuConfig::default(),
            clinic: ClinicConfig::default(),
            console_session_ttl: Duration::from_secs(12 * 3600),
            notify: NotifyConfig::default(),
        }
    }

    /// Reads the process environment (after loading `.env` if present).
    pub fn from_env() -> anyhow::Result<Self> {
        let _ = dotenvy::dotenv();
        let data_dir = data_dir_from_env();
        let database_url = var("DATABASE_URL")
            .unwrap_or_else(|| format!("sqlite://{}/telehealth.db", data_dir.display()));
        let https_addr = match var("HTTPS_ADDR").as_deref() {
            Some("off") | Some("none") => None,
            _ => Some(parse_var("HTTPS_ADDR", SocketAddr::from(([0, 0, 0, 0], 8443)))?),
        };
        let provider = match var("TELEHEALTH_PROVIDER").as_deref().unwrap_or("auto") {
            "auto" => ProviderChoice::Auto,
            "local" => ProviderChoice::Local,
            "chime" => ProviderChoice::Chime,
            other => bail!("TELEHEALTH_PROVIDER={other:?} is invalid: expected auto, local or chime"),
        };
        let api_keys = api_keys_from_env();
        if let Some(short) = api_keys.iter().find(|k| k.len() < 16) {
            bail!("TELEHEALTH_API_KEYS: every key must be at least 16 characters (one has {})", short.len());
        }
        let signing_secret = var("TELEHEALTH_SIGNING_SECRET");
        if signing_secret.as_ref().is_some_and(|s| s.len() < 32) {
            bail!("TELEHEALTH_SIGNING_SECRET must be at least 32 characters");
        }
        let sfu = SfuConfig {
            bind_ips: parse_ip_list("RTC_BIND_IPS")?,
            public_ip: match var("RTC_PUBLIC_IP") {
                None => None,
                Some(v) => Some(v.parse().with_context(|| format!("RTC_PUBLIC_IP={v:?} is not an IP address"))?),
            },
            udp_ports: parse_port_range("RTC_UDP_PORTS")?,
            stun_urls: var("RTC_STUN_URLS")
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
            shards: match var("RTC_SHARDS") {
                None => None,
                Some(v) => Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .with_context(|| format!("RTC_SHARDS={v:?} must be a number from 1 to 256"))?,
                ),
            },
            srtp: match var("RTC_SRTP_PROFILES").as_deref().unwrap_or("any") {
                "any" => SrtpProfiles::Any,
                "gcm" => SrtpProfiles::Gcm,
                other => bail!("RTC_SRTP_PROFILES={other:?} is invalid: expected any or gcm"),
            },
            ice_tcp: on_off("RTC_ICE_TCP", true)?,
            memnet: None,
        };
        let console_session_hours = positive("CONSOLE_SESSION_HOURS", 12u64)?;
        if console_session_hours > MAX_CONSOLE_SESSION_HOURS {
            bail!("CONSOLE_SESSION_HOURS must be at most {MAX_CONSOLE_SESSION_HOURS} (one week)");
        }
        let chime = ChimeConfig {
            region: var("AWS_CHIME_REGION"),
            media_region: var("CHIME_MEDIA_REGION"),
            endpoint_url: None,
            credentials: None,
            max_attempts: positive("CHIME_MAX_ATTEMPTS", 3u32)?,
            attempt_timeout: Duration::from_millis(positive("CHIME_ATTEMPT_TIMEOUT_MS", 2000u64)?),
            call_timeout: Duration::from_millis(positive("CHIME_TIMEOUT_MS", 5000u64)?),
        };
        let limits = limits::from_lookup(var)?;
        // A create-meeting that fails over waits out Chime's whole call first: cutting the request before that
        // would turn every failover into a timeout.
        if limits.request_timeout <= chime.call_timeout {
            bail!("HTTP_REQUEST_TIMEOUT_MS must be above CHIME_TIMEOUT_MS ({} ms)", chime.call_timeout.as_millis());
        }
        let meeting_grace = Duration::from_secs(parse_var("MEETING_GRACE_SECS", 30 * 60u64)?);
        let (turn, turn_server) = turn::from_lookup(var)?;
        Ok(Self {
            http_addr: parse_var("HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            https_addr,
            database_url,
            data_dir,
            certs_dir: PathBuf::from(var("CERTS_DIR").unwrap_or_else(|| "certs".into())),
            web_dir: PathBuf::from(var("WEB_DIR").unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/web").into())),
            app_url: var("APP_URL").map(|u| u.trim_end_matches('/').to_owned()),
            provider,
            api_keys,
            signing_secret,
            aws_credentials_present: var("AWS_ACCESS_KEY_ID").is_some() && var("AWS_SECRET_ACCESS_KEY").is_some(),
            media_region: var("AWS_CHIME_REGION").unwrap_or_else(|| "us-east-1".into()),
            chime,
            failover: on_off("TELEHEALTH_FAILOVER", true)?,
            local_max_meetings: optional_positive("LOCAL_MAX_MEETINGS")?,
            local_max_participants: optional_positive("LOCAL_MAX_PARTICIPANTS")?,
            lifecycle: LifecycleConfig {
                local_idle: Duration::from_secs(positive("MEETING_IDLE_SECS", 30 * 60u64)?),
                grace: meeting_grace,
                interval: Duration::from_secs(positive("CLEANUP_INTERVAL_SECS", 60u64)?),
                chime_cost_per_minute: rate("CHIME_COST_PER_ATTENDEE_MINUTE", 0.0017)?,
                local_cost_per_minute: rate("LOCAL_COST_PER_ATTENDEE_MINUTE", 0.0)?,
            },
            join_token_ttl: Duration::from_secs(parse_var("JOIN_TOKEN_TTL_SECS", 24 * 3600u64)?),
            shutdown_grace: Duration::from_secs(parse_var("SHUTDOWN_GRACE_SECS", 5u64)?),
            resume_window: Duration::from_secs(parse_var("RESUME_WINDOW_SECS", 60u64)?),
            socket_stall: Duration::from_secs(parse_var("SOCKET_STALL_SECS", 10u64)?.max(1)),
            turn,
            turn_server,
            max_body_bytes: positive("MAX_BODY_BYTES", 64 * 1024usize)?,
            limits,
            invites: invites::from_lookup(var, meeting_grace)?,
            sfu,
            clinic: ClinicConfig {
                reminder_offsets: parse_offsets(&var("REMINDER_OFFSETS").unwrap_or_else(|| "24h,1h".into()))?,
                outbox: OutboxConfig {
                    max_attempts: positive("OUTBOX_MAX_ATTEMPTS", 12u32)?,
                    retry_base: Duration::from_millis(positive("OUTBOX_RETRY_BASE_MS", 5000u64)?),
                    retry_max: Duration::from_millis(positive("OUTBOX_RETRY_MAX_MS", 300_000u64)?),
                    claim_timeout: Duration::from_millis(positive("OUTBOX_CLAIM_TIMEOUT_MS", 60_000u64)?),
                    poll: Duration::from_millis(positive("OUTBOX_POLL_MS", 5000u64)?),
                },
            },
            notify: crate::notify::config::from_lookup(var)?,
            console_session_ttl: Duration::from_secs(console_session_hours * 3600),
        })
    }
}

/// `REMINDER_OFFSETS`: comma-separated durations such as `24h,1h,30m` (empty: no reminders).
fn parse_offsets(s: &str) -> anyhow::Result<Vec<chrono::Duration>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, unit) = p.split_at(p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len()));
            let n: i64 = n.parse().map_err(|_| anyhow::anyhow!("REMINDER_OFFSETS: {p:?} is not like 24h, 90m or 2d"))?;
            match unit {
                "m" => Ok(chrono::Duration::minutes(n)),
                "h" => Ok(chrono::Duration::hours(n)),
                "d" => Ok(chrono::Duration::days(n)),
                _ => anyhow::bail!("REMINDER_OFFSETS: {p:?} is not like 24h, 90m or 2d"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reminder_offsets_read_like_people_write_them() {
        let hours = |v: &[chrono::Duration]| v.iter().map(|d| d.num_minutes()).collect::<Vec<_>>();
        assert_eq!(hours(&parse_offsets("24h, 1h").unwrap()), [1440, 60]);
        assert_eq!(hours(&parse_offsets("2d,90m").unwrap()), [2880, 90]);
        assert!(parse_offsets("").unwrap().is_empty(), "empty: no reminders");
        for bad in ["24", "1w", "h", "-1h"] {
            assert!(parse_offsets(bad).is_err(), "{bad:?}");
        }
    }


    #[test]
    fn auto_means_chime_exactly_when_both_aws_keys_are_set_and_chime_is_the_overflow_of_local_with_keys() {
        let mut c = Config::with_data_dir("data");
        let cases = [
            // (choice, keys set) → (primary, Chime configured)
            (ProviderChoice::Auto, false, Provider::Local, false),
            (ProviderChoice::Auto, true, Provider::Chime, true),
            (ProviderChoice::Local, false, Provider::Local, false),
            (ProviderChoice::Local, true, Provider::Local, true),
            (ProviderChoice::Chime, false, Provider::Chime, true),
            (ProviderChoice::Chime, true, Provider::Chime, true),
        ];
        for (choice, keys, primary, chime) in cases {
            c.provider = choice;
            c.aws_credentials_present = keys;
            assert_eq!((c.primary_provider(), c.chime_enabled()), (primary, chime), "{choice:?}, keys {keys}");
        }
    }

    #[test]
    fn chime_configuration_hides_its_credentials() {
        let chime = ChimeConfig { credentials: Some(("AKIA".into(), "very-secret".into(), Some("token".into()))), ..Default::default() };
        let shown = format!("{chime:?}");
        assert!(!shown.contains("very-secret") && !shown.contains("token") && shown.contains("<redacted>"), "{shown}");
    }
}
