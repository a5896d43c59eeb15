//! TURN, parsed once at start. Two ways to give patients behind firewalls a relay, which can be combined:
//!
//! - an external TURN server (coturn with `use-auth-secret`): `TURN_URLS` + `TURN_SECRET`;
//! - the embedded one: `TURN_UDP_ADDR`, `TURN_TCP_ADDR`, `TURN_TLS_ADDR` (any of them turns it on). Its URLs are
//!   derived from its listeners unless `TURN_URLS` names them (a DNS name the certificate carries, a port
//!   forwarded on a router), and its secret is `TURN_SECRET` or, unset, a random one for this start (the
//!   credentials never leave this process then; pages get new ones when they rejoin after a restart).
//!
//! Nothing listens or is contacted unless configured.

use anyhow::{Context, bail};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The TURN servers handed to participants, and the secret their credentials are derived from.
#[derive(Clone)]
pub struct TurnConfig {
    /// `turn:` / `turns:` URLs, as RTCPeerConnection's `iceServers` takes them. Empty only while the embedded
    /// server's own URLs are not yet known (the server derives them once its listeners are bound).
    pub urls: Vec<String>,
    pub secret: Vec<u8>,
    /// How long a credential stays valid.
    pub ttl: Duration,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig").field("urls", &self.urls).field("secret", &"<redacted>").field("ttl", &self.ttl).finish()
    }
}

/// The embedded TURN server's listeners and relays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnListenConfig {
    /// `TURN_UDP_ADDR`, e.g. `0.0.0.0:3478`.
    pub udp: Option<SocketAddr>,
    /// `TURN_TCP_ADDR`, e.g. `0.0.0.0:3478`: for networks that drop UDP.
    pub tcp: Option<SocketAddr>,
    /// `TURN_TLS_ADDR`, e.g. `0.0.0.0:443` or `0.0.0.0:5349`: TURN inside TLS, with the HTTPS listener's
    /// certificate, for networks that only let TLS out.
    pub tls: Option<SocketAddr>,
    /// `TURN_RELAY_IP`: the address relay sockets bind to (default: the SFU's first bind address). Relays only
    /// ever talk to the SFU, so this traffic stays on the machine.
    pub relay_ip: Option<IpAddr>,
    /// `TURN_MAX_ALLOCATIONS` (default 1000): relays open at once, and client streams at most.
    pub max_allocations: usize,
}

/// `TURN_URLS`, `TURN_SECRET`, `TURN_TTL_SECS` and the embedded server's listeners.
pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<(Option<TurnConfig>, Option<TurnListenConfig>)> {
    let get = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let addr = |name: &str| -> anyhow::Result<Option<SocketAddr>> {
        get(name).map(|v| v.parse().with_context(|| format!("{name}={v:?} is not an address like 0.0.0.0:3478"))).transpose()
    };
    let (udp, tcp, tls) = (addr("TURN_UDP_ADDR")?, addr("TURN_TCP_ADDR")?, addr("TURN_TLS_ADDR")?);
    let embedded = if udp.is_some() || tcp.is_some() || tls.is_some() {
        if tcp.is_some() && tcp == tls {
            bail!("TURN_TCP_ADDR and TURN_TLS_ADDR must differ: one port speaks either TURN or TLS");
        }
        let relay_ip = get("TURN_RELAY_IP")
            .map(|v| v.parse().with_context(|| format!("TURN_RELAY_IP={v:?} is not an IP address")))
            .transpose()?;
        let max_allocations = match get("TURN_MAX_ALLOCATIONS") {
            None => 1000,
            Some(v) => v.parse().ok().filter(|n| (1..=100_000).contains(n)).with_context(|| format!("TURN_MAX_ALLOCATIONS={v:?} must be from 1 to 100000"))?,
        };
        Some(TurnListenConfig { udp, tcp, tls, relay_ip, max_allocations })
    } else {
        if get("TURN_RELAY_IP").is_some() || get("TURN_MAX_ALLOCATIONS").is_some() {
            bail!("TURN_RELAY_IP and TURN_MAX_ALLOCATIONS configure the embedded TURN server: set TURN_UDP_ADDR, TURN_TCP_ADDR or TURN_TLS_ADDR");
        }
        None
    };

    let urls: Vec<String> =
        get("TURN_URLS").map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    if let Some(bad) = urls.iter().find(|u| !(u.starts_with("turn:") || u.starts_with("turns:"))) {
        bail!("TURN_URLS: {bad:?} is not a turn: or turns: URL");
    }
    let secret = get("TURN_SECRET");
    if embedded.is_none() {
        match (urls.is_empty(), secret.is_none()) {
            (true, true) => return Ok((None, None)),
            (false, true) => bail!("TURN_URLS is set but TURN_SECRET is not: the pages' TURN credentials are derived from it"),
            (true, false) => bail!("TURN_SECRET is set but neither TURN_URLS nor an embedded TURN listener (TURN_UDP_ADDR, TURN_TCP_ADDR, TURN_TLS_ADDR) is"),
            (false, false) => {}
        }
    }
    if secret.as_ref().is_some_and(|s| s.len() < 16) {
        bail!("TURN_SECRET must be at least 16 characters");
    }
    let ttl = match get("TURN_TTL_SECS") {
        None => 6 * 3600,
        Some(v) => v.parse::<u64>().with_context(|| format!("TURN_TTL_SECS={v:?} is not a number of seconds"))?,
    };
    if !(60..=7 * 24 * 3600).contains(&ttl) {
        bail!("TURN_TTL_SECS must be from 60 to 604800 (one week)");
    }
    let secret = secret.map(String::into_bytes).unwrap_or_else(|| {
        use rand::RngCore;
        let mut s = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut s);
        s
    });
    Ok((Some(TurnConfig { urls, secret, ttl: Duration::from_secs(ttl) }), embedded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> anyhow::Result<(Option<TurnConfig>, Option<TurnListenConfig>)> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn nothing_is_configured_by_default() {
        let (turn, embedded) = parse(&[]).unwrap();
        assert!(turn.is_none() && embedded.is_none());
    }

    #[test]
    fn an_external_server_needs_urls_and_a_secret() {
        assert!(parse(&[("TURN_URLS", "turn:turn.example.org:3478")]).is_err());
        assert!(parse(&[("TURN_SECRET", "0123456789abcdef")]).is_err());
        assert!(parse(&[("TURN_URLS", "stun:x:3478"), ("TURN_SECRET", "0123456789abcdef")]).is_err());
        let (turn, embedded) = parse(&[("TURN_URLS", "turn:a:3478"), ("TURN_SECRET", "0123456789abcdef")]).unwrap();
        assert_eq!(turn.unwrap().secret, b"0123456789abcdef");
        assert!(embedded.is_none());
    }

    #[test]
    fn an_embedded_listener_turns_the_server_on_with_a_random_secret() {
        let (turn, embedded) = parse(&[("TURN_TCP_ADDR", "127.0.0.1:3478")]).unwrap();
        let turn = turn.unwrap();
        assert!(turn.urls.is_empty(), "derived once the listeners are bound");
        assert_eq!(turn.secret.len(), 32);
        let (again, _) = parse(&[("TURN_TCP_ADDR", "127.0.0.1:3478")]).unwrap();
        assert_ne!(again.unwrap().secret, turn.secret, "a fresh secret each start");
        let embedded = embedded.unwrap();
        assert_eq!(embedded.tcp, Some("127.0.0.1:3478".parse().unwrap()));
        assert_eq!((embedded.udp, embedded.tls, embedded.max_allocations), (None, None, 1000));
    }

    #[test]
    fn bad_embedded_settings_refuse_to_boot() {
        assert!(parse(&[("TURN_UDP_ADDR", "3478")]).is_err());
        assert!(parse(&[("TURN_TCP_ADDR", "0.0.0.0:443"), ("TURN_TLS_ADDR", "0.0.0.0:443")]).is_err());
        assert!(parse(&[("TURN_UDP_ADDR", "0.0.0.0:3478"), ("TURN_MAX_ALLOCATIONS", "0")]).is_err());
        assert!(parse(&[("TURN_RELAY_IP", "127.0.0.1")]).is_err(), "relay settings without a listener");
        assert!(parse(&[("TURN_UDP_ADDR", "0.0.0.0:3478"), ("TURN_SECRET", "short")]).is_err());
    }
}
