//! One `Config`, read from the environment (and `.env`), validated at start: the gateway refuses to boot
//! on a bad value rather than limping along. Every variable is documented in README.md and `.env.example`.

use crate::sfu::SfuConfig;
use anyhow::{Context, bail};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderChoice {
    Auto,
    Local,
    Chime,
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
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` both present.
    pub aws_credentials_present: bool,
    /// `AWS_CHIME_REGION`, default us-east-1 (also the `MediaRegion` local meetings report).
    pub media_region: String,
    /// `JOIN_TOKEN_TTL_SECS`: the longest a JoinToken lives (default 24 h).
    pub join_token_ttl: Duration,
    /// `SHUTDOWN_GRACE_SECS`: how long shutdown waits for participants to leave (default 5 s).
    pub shutdown_grace: Duration,
    /// `MAX_BODY_BYTES`: the API's request size limit (default 64 KiB).
    pub max_body_bytes: usize,
    pub sfu: SfuConfig,
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
            join_token_ttl: Duration::from_secs(24 * 3600),
            shutdown_grace: Duration::from_secs(5),
            max_body_bytes: 64 * 1024,
            sfu: SfuConfig::default(),
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
        if provider == ProviderChoice::Chime {
            bail!("TELEHEALTH_PROVIDER=chime is not available in this build yet; use auto or local");
        }
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
        };
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
            join_token_ttl: Duration::from_secs(parse_var("JOIN_TOKEN_TTL_SECS", 24 * 3600u64)?),
            shutdown_grace: Duration::from_secs(parse_var("SHUTDOWN_GRACE_SECS", 5u64)?),
            max_body_bytes: parse_var("MAX_BODY_BYTES", 64 * 1024usize)?,
            sfu,
        })
    }
}
