//! The edge's limits, parsed once at start (a bad value refuses to boot): how fast one API key and one client
//! address may call, how many WebSockets may be open, how long a client may take to send its headers and a
//! request. `http::throttle`, `http::sockets`, `http::timeouts` and `server` apply them.

use anyhow::bail;
use ipnet::IpNet;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// A token bucket: `count` requests per `per`, and up to `burst` at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: NonZeroU32,
    pub per: Duration,
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `N/s` or `N/min`, optionally `,burst=B` (default: N); `0` or `off` is no limit (None).
    pub fn parse(s: &str) -> Result<Option<Self>, String> {
        let s = s.trim();
        if s == "off" || s == "0" {
            return Ok(None);
        }
        let expected = || format!("{s:?}: expected N/s or N/min, optionally with ,burst=B (or off)");
        let (rate, burst) = match s.split_once(',') {
            None => (s, None),
            Some((rate, b)) => {
                let b = b.trim().strip_prefix("burst=").ok_or_else(expected)?;
                (rate, Some(b.trim().parse::<NonZeroU32>().map_err(|_| expected())?))
            }
        };
        let (n, unit) = rate.split_once('/').ok_or_else(expected)?;
        let count: u32 = n.trim().parse().map_err(|_| expected())?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "min" => Duration::from_secs(60),
            _ => return Err(expected()),
        };
        let Some(count) = NonZeroU32::new(count) else {
            return if burst.is_none() { Ok(None) } else { Err(expected()) };
        };
        Ok(Some(Self { count, per, burst: burst.unwrap_or(count) }))
    }

    /// How often one token comes back.
    pub fn interval(&self) -> Duration {
        self.per / self.count.get()
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.per == Duration::from_secs(1) { "s" } else { "min" };
        write!(f, "{}/{unit},burst={}", self.count, self.burst)
    }
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// `RATE_LIMIT_API_PER_KEY` (default `100/s`): API calls per API key (a console session counts as its key).
    pub api_per_key: Option<RateLimit>,
    /// `RATE_LIMIT_API_PER_IP` (default `50/s`): API calls and console sign-ins per client address.
    pub api_per_ip: Option<RateLimit>,
    /// `RATE_LIMIT_JOIN_PER_IP` (default `20/s`): `/ws` upgrades per client address.
    pub join_per_ip: Option<RateLimit>,
    /// `LIMIT_EXEMPT_ADDRS` (default `127.0.0.0/8,::1/128`): clients in these ranges are not rate-limited and
    /// have no per-address socket cap. Loopback is the machine itself: the load tester, or a reverse proxy on
    /// the same host, behind which every client shares the proxy's address (limit per client there).
    pub exempt: Vec<IpNet>,
    /// `MAX_WEBSOCKETS` (default 20,000): open signaling sockets on this gateway, whoever holds them.
    pub max_websockets: usize,
    /// `MAX_WEBSOCKETS_PER_IP` (default 200): open signaling sockets per client address.
    pub max_websockets_per_ip: usize,
    /// `HTTP_HEADER_TIMEOUT_MS` (default 10 s): a connection that has not sent a whole request head this long
    /// after it opened, or after its previous response, is closed (slowloris; also ends idle keep-alives).
    pub header_timeout: Duration,
    /// `HTTP_REQUEST_TIMEOUT_MS` (default 30 s): the longest a request (its body included) may take to be
    /// answered; the WebSocket route is not cut by it.
    pub request_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            api_per_key: RateLimit::parse(DEFAULT_API_PER_KEY).expect("a valid default"),
            api_per_ip: RateLimit::parse(DEFAULT_API_PER_IP).expect("a valid default"),
            join_per_ip: RateLimit::parse(DEFAULT_JOIN_PER_IP).expect("a valid default"),
            exempt: parse_exempt(DEFAULT_EXEMPT).expect("valid default ranges"),
            max_websockets: 20_000,
            max_websockets_per_ip: 200,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

const DEFAULT_API_PER_KEY: &str = "100/s";
const DEFAULT_API_PER_IP: &str = "50/s";
const DEFAULT_JOIN_PER_IP: &str = "20/s";
const DEFAULT_EXEMPT: &str = "127.0.0.0/8,::1/128";

/// Comma-separated ranges (`10.0.0.0/8`) or single addresses; `none` is the empty list.
fn parse_exempt(s: &str) -> Result<Vec<IpNet>, String> {
    if s.trim() == "none" {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{p:?} is not an address or a range like 10.0.0.0/8"))
        })
        .collect()
}

/// Reads the limits through `get` (the environment in production).
pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<LimitsConfig> {
    let var = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let rate = |name: &str, default: &str| -> anyhow::Result<Option<RateLimit>> {
        let v = var(name).unwrap_or_else(|| default.to_owned());
        RateLimit::parse(&v).map_err(|e| anyhow::anyhow!("{name}={e}"))
    };
    let positive = |name: &str, default: u64| -> anyhow::Result<u64> {
        match var(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("{name}={v:?} is invalid: expected a whole number above 0"),
            },
        }
    };
    let d = LimitsConfig::default();
    let exempt = match var("LIMIT_EXEMPT_ADDRS") {
        None => d.exempt,
        Some(v) => parse_exempt(&v).map_err(|e| anyhow::anyhow!("LIMIT_EXEMPT_ADDRS: {e}"))?,
    };
    Ok(LimitsConfig {
        api_per_key: rate("RATE_LIMIT_API_PER_KEY", DEFAULT_API_PER_KEY)?,
        api_per_ip: rate("RATE_LIMIT_API_PER_IP", DEFAULT_API_PER_IP)?,
        join_per_ip: rate("RATE_LIMIT_JOIN_PER_IP", DEFAULT_JOIN_PER_IP)?,
        exempt,
        max_websockets: positive("MAX_WEBSOCKETS", d.max_websockets as u64)? as usize,
        max_websockets_per_ip: positive("MAX_WEBSOCKETS_PER_IP", d.max_websockets_per_ip as u64)? as usize,
        header_timeout: Duration::from_millis(positive("HTTP_HEADER_TIMEOUT_MS", d.header_timeout.as_millis() as u64)?),
        request_timeout: Duration::from_millis(positive("HTTP_REQUEST_TIMEOUT_MS", d.request_timeout.as_millis() as u64)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, per_secs: u64, burst: u32) -> Option<RateLimit> {
        Some(RateLimit {
            count: NonZeroU32::new(count).unwrap(),
            per: Duration::from_secs(per_secs),
            burst: NonZeroU32::new(burst).unwrap(),
        })
    }

    #[test]
    fn rates_read_like_people_write_them() {
        assert_eq!(RateLimit::parse("20/s"), Ok(rate(20, 1, 20)));
        assert_eq!(RateLimit::parse(" 600/min , burst=50 "), Ok(rate(600, 60, 50)));
        assert_eq!(RateLimit::parse("off"), Ok(None));
        assert_eq!(RateLimit::parse("0"), Ok(None));
        assert_eq!(RateLimit::parse("0/s"), Ok(None));
        for bad in ["20", "20/h", "x/s", "-1/s", "20/s,burst=0", "20/s,50", "20/s,burst=x", "", "0/s,burst=5"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(rate(600, 60, 50).unwrap().interval(), Duration::from_millis(100));
        assert_eq!(rate(600, 60, 50).unwrap().to_string(), "600/min,burst=50");
    }

    #[test]
    fn exempt_ranges_take_cidrs_and_single_addresses() {
        let r = parse_exempt("10.0.0.0/8, 192.168.1.7,::1").unwrap();
        assert_eq!(r.len(), 3);
        assert!(r[1].contains(&"192.168.1.7".parse::<std::net::IpAddr>().unwrap()));
        assert!(parse_exempt("none").unwrap().is_empty());
        assert!(parse_exempt("10.0.0.0/33").is_err());
        assert!(parse_exempt("clinic").is_err());
    }

    #[test]
    fn bad_limits_are_refused_and_named() {
        for (name, value) in [
            ("RATE_LIMIT_API_PER_KEY", "lots"),
            ("RATE_LIMIT_JOIN_PER_IP", "5/h"),
            ("MAX_WEBSOCKETS", "0"),
            ("MAX_WEBSOCKETS_PER_IP", "-3"),
            ("HTTP_HEADER_TIMEOUT_MS", "0"),
            ("HTTP_REQUEST_TIMEOUT_MS", "soon"),
            ("LIMIT_EXEMPT_ADDRS", "localhost"),
        ] {
            let err = from_lookup(|n: &str| (n == name).then(|| value.to_owned())).unwrap_err().to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
        let ok = from_lookup(|n: &str| match n {
            "RATE_LIMIT_API_PER_IP" => Some("off".to_owned()),
            "MAX_WEBSOCKETS" => Some("5".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!((ok.api_per_ip, ok.max_websockets, ok.api_per_key), (None, 5, rate(100, 1, 100)));
    }
}
