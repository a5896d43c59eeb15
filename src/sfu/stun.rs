//! Server-reflexive candidates for a shard (`RTC_STUN_URLS`): the shard asks the STUN servers, from each of its own
//! sockets, which address its traffic leaves a NAT from, and connections created afterwards advertise that address
//! beside their host candidates. Every connection shares the shard's sockets, so one question per socket serves
//! them all. Asked at start, retried while unanswered, and asked again every `REFRESH` (a NAT's mapping can change).
//! Nothing is sent unless servers are configured: an offline clinic never contacts a public STUN server.

use super::memnet::Datagram;
use bytes::BytesMut;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Getter, Message, TransactionId};
use rtc::stun::xoraddr::XorMappedAddress;
use rustc_hash::FxHashMap as HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

const RETRY: Duration = Duration::from_millis(500);
const REFRESH: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct StunProbe {
    servers: Vec<SocketAddr>,
    /// Requests in flight: transaction id → the local socket it left from.
    pending: HashMap<TransactionId, SocketAddr>,
    /// Local socket → the address the STUN server saw.
    mapped: HashMap<SocketAddr, SocketAddr>,
    next: Option<Instant>,
}

/// `stun:host[:port]` → addresses (port 3478 by default). Names are resolved once, at start.
fn resolve(url: &str) -> Vec<SocketAddr> {
    let host = url.strip_prefix("stun:").unwrap_or(url);
    let with_port = if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        host.to_owned()
    } else {
        format!("{host}:3478")
    };
    match with_port.to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            tracing::warn!(url, error = %e, "STUN server not resolved; no server-reflexive candidate from it");
            Vec::new()
        }
    }
}

impl StunProbe {
    pub fn new(urls: &[String], now: Instant) -> Self {
        let servers: Vec<SocketAddr> = urls.iter().flat_map(|u| resolve(u)).collect();
        let next = (!servers.is_empty()).then_some(now);
        Self { servers, next, ..Self::default() }
    }

    /// When `poll` wants to run next.
    pub fn deadline(&self) -> Option<Instant> {
        self.next
    }

    /// Sends Binding requests from every local socket to every server of the same family when due.
    pub fn poll(&mut self, now: Instant, locals: &[SocketAddr], out: &mut Vec<Datagram>) {
        if self.next.is_none_or(|t| t > now) {
            return;
        }
        self.pending.clear();
        for local in locals {
            for server in self.servers.iter().filter(|s| s.is_ipv4() == local.is_ipv4()) {
                let mut msg = Message::new();
                let id = TransactionId::new();
                if msg.build(&[Box::new(BINDING_REQUEST), Box::new(id)]).is_ok() {
                    self.pending.insert(id, *local);
                    out.push(Datagram { from: *local, to: *server, received: None, data: BytesMut::from(&msg.raw[..]), tcp: false });
                }
            }
        }
        // Again soon while any socket has no answer yet, else at the next refresh.
        let answered = locals.iter().all(|l| self.mapped.contains_key(l));
        self.next = Some(now + if answered { REFRESH } else { RETRY });
    }

    /// Takes the datagram if it answers one of our requests.
    pub fn handle(&mut self, d: &Datagram) -> bool {
        // Cheap test first: a Binding success response starts 0x01 0x01.
        if self.pending.is_empty() || d.data.len() < 20 || d.data[0] != 0x01 || d.data[1] != 0x01 {
            return false;
        }
        let mut msg = Message::new();
        msg.raw = d.data.to_vec();
        if msg.decode().is_err() || msg.typ != BINDING_SUCCESS {
            return false;
        }
        let Some(local) = self.pending.remove(&msg.transaction_id) else { return false };
        let mut xor = XorMappedAddress::default();
        if xor.get_from(&msg).is_ok() {
            let seen = SocketAddr::new(xor.ip, xor.port);
            if self.mapped.insert(local, seen) != Some(seen) {
                tracing::info!(shard_socket = %local.port(), "server-reflexive address learned from STUN");
            }
        }
        true
    }

    /// (address seen from outside, local socket it maps) for every socket a server has answered for.
    pub fn mapped(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.mapped.iter().map(|(local, seen)| (*seen, *local)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::Setter;

    fn answer(request: &Datagram, seen: SocketAddr) -> Datagram {
        let mut req = Message::new();
        req.raw = request.data.to_vec();
        req.decode().unwrap();
        let mut resp = Message::new();
        let xor = XorMappedAddress { ip: seen.ip(), port: seen.port() };
        resp.build(&[Box::new(BINDING_SUCCESS), Box::new(req.transaction_id), Box::new(xor) as Box<dyn Setter>]).unwrap();
        Datagram { from: request.to, to: request.from, data: BytesMut::from(&resp.raw[..]), received: None, tcp: false }
    }

    #[test]
    fn each_socket_learns_its_public_address_and_asks_again_until_answered() {
        let t0 = Instant::now();
        let mut probe = StunProbe::new(&["stun:127.0.0.9:3478".into()], t0);
        let locals: Vec<SocketAddr> = vec!["127.0.0.1:40000".parse().unwrap(), "127.0.0.1:40001".parse().unwrap()];
        let mut out = Vec::new();
        probe.poll(t0, &locals, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|d| d.to == "127.0.0.9:3478".parse::<SocketAddr>().unwrap()));
        assert_eq!(probe.deadline(), Some(t0 + RETRY), "unanswered: ask again soon");
        let seen: SocketAddr = "198.51.100.7:61000".parse().unwrap();
        assert!(probe.handle(&answer(&out[0], seen)));
        assert_eq!(probe.mapped(), vec![(seen, out[0].from)]);
        assert!(!probe.handle(&answer(&out[0], seen)), "an answer counts once");
        let mut again = Vec::new();
        probe.poll(t0 + RETRY, &locals, &mut again);
        assert_eq!(again.len(), 2);
        for d in &again {
            assert!(probe.handle(&answer(d, seen)));
        }
        probe.poll(t0 + RETRY, &locals, &mut Vec::new());
        assert_eq!(probe.mapped().len(), 2);
    }

    #[test]
    fn nothing_is_sent_without_servers_and_foreign_datagrams_are_not_taken() {
        let t0 = Instant::now();
        let mut probe = StunProbe::new(&[], t0);
        let mut out = Vec::new();
        probe.poll(t0, &["127.0.0.1:1".parse().unwrap()], &mut out);
        assert!(out.is_empty() && probe.deadline().is_none());
        let rtp = Datagram { from: "127.0.0.2:1".parse().unwrap(), to: "127.0.0.1:1".parse().unwrap(), data: BytesMut::from(&[0x80u8; 40][..]), received: None, tcp: false };
        assert!(!probe.handle(&rtp));
    }
}
