//! The client address, as the per-address limits see it: the peer of the TCP connection, which both listeners
//! hand to every request as `ConnectInfo<SocketAddr>` (see `server`). Forwarded headers (`X-Forwarded-For`) are
//! not believed: any client can write them. Behind a reverse proxy on the same host every client has the
//! proxy's loopback address, which `LIMIT_EXEMPT_ADDRS` leaves alone by default; limit per client there.
//!
//! An address is patient data: `ClientKey` has no `Debug` or `Display`, so it cannot end up in a log line by
//! accident, and nothing here logs one.

use axum::extract::ConnectInfo;
use axum::http::Extensions;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The peer address of the connection a request came on (None only for a request that did not come through
/// our listeners, e.g. a test calling the router directly).
pub fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_canonical())
}

/// Whether `ip` is in one of the exempt ranges.
pub fn is_exempt(ip: IpAddr, exempt: &[IpNet]) -> bool {
    exempt.iter().any(|net| net.contains(&ip))
}

/// What per-address state is keyed by: an IPv4 address, or an IPv6 address's /64. One subscriber (one home,
/// one phone) is routinely given a whole /64, so keying by the full address would let one client spread over
/// 2^64 keys, each with a fresh bucket and its own socket allowance.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Self(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    #[test]
    fn ipv6_clients_are_grouped_by_their_64_and_mapped_ipv4_is_ipv4() {
        assert!(key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert!(key("2001:db8:1:2::1") != key("2001:db8:1:3::1"));
        assert!(key("::ffff:192.0.2.7") == key("192.0.2.7"));
        assert!(key("192.0.2.7") != key("192.0.2.8"));
    }

    #[test]
    fn loopback_is_exempt_by_the_default_ranges() {
        let exempt = crate::config::LimitsConfig::default().exempt;
        for ip in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_exempt(ip.to_canonical(), &exempt), "{ip}");
        }
        assert!(!is_exempt("192.0.2.7".parse().unwrap(), &exempt));
        assert!(!is_exempt("2001:db8::1".parse().unwrap(), &exempt));
    }
}
