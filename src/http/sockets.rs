//! Caps on open signaling sockets: `MAX_WEBSOCKETS` on this gateway and `MAX_WEBSOCKETS_PER_IP` per client
//! address (a /64 for IPv6, see `client`). Each socket costs a file descriptor, a task and its buffers whether
//! or not it ever joins, so the count starts when the upgrade request is admitted, before any token is read.
//!
//! `admit` runs in front of `GET /ws`: over a cap it answers 503 `ServiceUnavailable` (JSON) and nothing is
//! upgraded; otherwise it puts a `SocketSlot` into the request, which `ws::upgrade` keeps inside the socket's
//! task, so the place is given back when the socket closes (or at once, when the upgrade never happens).
//!
//! Addresses in `LIMIT_EXEMPT_ADDRS` (loopback by default: the signaling load test holds 10,000 sockets from
//! 127.0.0.1) have no per-address cap; the server cap counts everyone. `telehealth_websockets_open` is kept
//! exact here, under the same lock as the counts.

use super::client::{ClientKey, is_exempt, peer_ip};
use super::error::{ApiError, ErrorCode};
use crate::config::LimitsConfig;
use crate::metrics::{Metrics, SocketCap};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct Sockets {
    max: usize,
    max_per_address: usize,
    exempt: Vec<IpNet>,
    metrics: Arc<Metrics>,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// Only addresses with a socket open: an entry goes with its last socket, so this never outgrows `total`.
    by_address: HashMap<ClientKey, usize>,
}

/// One socket's place under the caps; the last clone to go gives it back.
#[derive(Clone)]
pub struct SocketSlot(#[allow(dead_code)] Arc<Held>);

struct Held {
    sockets: Arc<Sockets>,
    address: Option<ClientKey>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.sockets.lock();
        counts.total -= 1;
        if let Some(key) = self.address
            && let Some(n) = counts.by_address.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                counts.by_address.remove(&key);
            }
        }
        self.sockets.metrics.set_sockets_open(counts.total);
    }
}

impl Sockets {
    pub fn new(limits: &LimitsConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            max: limits.max_websockets,
            max_per_address: limits.max_websockets_per_ip,
            exempt: limits.exempt.clone(),
            metrics,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while holding this lock leaves consistent counts (every update is one statement), so a
        // poisoned lock is still good to use.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more socket from `ip` (None: unknown, counted only against the server cap).
    pub fn acquire(self: &Arc<Self>, ip: Option<std::net::IpAddr>) -> Result<SocketSlot, SocketCap> {
        let address = ip.filter(|ip| !is_exempt(*ip, &self.exempt)).map(ClientKey::of);
        let mut counts = self.lock();
        if counts.total >= self.max {
            return Err(SocketCap::Server);
        }
        if let Some(key) = address {
            let n = counts.by_address.entry(key).or_insert(0);
            if *n >= self.max_per_address {
                return Err(SocketCap::Address);
            }
            *n += 1;
        }
        counts.total += 1;
        self.metrics.set_sockets_open(counts.total);
        Ok(SocketSlot(Arc::new(Held { sockets: Arc::clone(self), address })))
    }

    /// Open sockets now.
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

/// In front of `GET /ws`, after the join-rate limit: a place under both caps, or 503 before the upgrade.
pub async fn admit(State(sockets): State<Arc<Sockets>>, mut req: Request, next: Next) -> Response {
    match sockets.acquire(peer_ip(req.extensions())) {
        Ok(slot) => {
            req.extensions_mut().insert(slot);
            next.run(req).await
        }
        Err(cap) => {
            sockets.metrics.socket_refused(cap);
            let message = match cap {
                SocketCap::Server => "the gateway has as many connections open as it allows; try again shortly",
                SocketCap::Address => "too many connections are open from this address; close some and try again",
            };
            ApiError::new(ErrorCode::ServiceUnavailable, message).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn sockets(max: usize, per_address: usize) -> Arc<Sockets> {
        let limits = LimitsConfig { max_websockets: max, max_websockets_per_ip: per_address, ..LimitsConfig::default() };
        let sfu = crate::sfu::SfuConfig { bind_ips: vec!["127.0.0.1".parse().unwrap()], ..Default::default() };
        let rooms = crate::room::Rooms::new(crate::sfu::Sfu::new(sfu).unwrap());
        Sockets::new(&limits, Metrics::new(rooms))
    }

    #[test]
    fn places_come_back_when_the_last_clone_of_a_slot_goes() {
        let s = sockets(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let one = s.acquire(Some(a)).unwrap();
        let two = s.acquire(Some(a)).unwrap();
        assert!(matches!(s.acquire(Some(a)), Err(SocketCap::Address)));
        let three = s.acquire(Some(b)).unwrap();
        assert!(matches!(s.acquire(Some(b)), Err(SocketCap::Server)));
        // Loopback is exempt from the per-address cap, not from the server's.
        assert!(matches!(s.acquire(Some("127.0.0.1".parse().unwrap())), Err(SocketCap::Server)));
        let copy = one.clone();
        drop(one);
        assert_eq!(s.open(), 3, "a clone still holds the place");
        drop(copy);
        assert_eq!(s.open(), 2);
        let again = s.acquire(Some(a)).unwrap();
        drop((two, three, again));
        assert_eq!(s.open(), 0);
        assert!(s.lock().by_address.is_empty(), "no entry outlives its sockets");
    }
}
