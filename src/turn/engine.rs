//! The TURN protocol state of every listener, without sockets: one turn-server-proto `TurnServer` per listener
//! (it serves one transport on one address), the gate in front of each, and the table of relay sockets. What
//! it decides to send, bind or close goes through the `Io` the caller gives it, so the network side (`net`)
//! stays a thin loop.
//!
//! Relaying is only ever to and from the SFU's own media addresses: the embedded server exists to get patients
//! behind firewalls to *our* SFU, and a relay that reached anything else on the clinic's network would be an
//! open proxy into it. Permissions for other peers can be created, but no packet crosses them.

use super::framing::is_channel_data;
use super::gate::{Gate, Verdict};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use turn_server_proto::api::{SocketAllocateError, TcpConnectError, TurnServerApi, TurnServerPollRet};
use turn_server_proto::server::TurnServer;
use turn_server_proto::stun::Instant;
use turn_server_proto::stun::agent::Transmit;
use turn_server_proto::types::AddressFamily;
use turn_server_proto::types::stun::TransportType;

/// The realm clients see in 401 answers.
pub const REALM: &str = "telehealth-gateway";

/// Where the engine's decisions take effect.
pub trait Io {
    /// Sends `data` from listener `listener` to the client at `to` (a datagram, or one message on its stream).
    fn send_client(&mut self, listener: usize, to: SocketAddr, data: Vec<u8>);
    /// Opens a relay socket for an allocation; its datagrams come back through `Engine::on_peer`.
    fn bind_relay(&mut self, family: AddressFamily) -> std::io::Result<SocketAddr>;
    fn send_peer(&mut self, relay: SocketAddr, to: SocketAddr, data: &[u8]);
    fn close_relay(&mut self, relay: SocketAddr);
    fn close_client(&mut self, listener: usize, client: SocketAddr);
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Udp,
    Tcp,
    Tls,
}

impl Kind {
    fn transport(self) -> TransportType {
        match self {
            Self::Udp => TransportType::Udp,
            Self::Tcp | Self::Tls => TransportType::Tcp,
        }
    }
}

struct Listener {
    kind: Kind,
    addr: SocketAddr,
    server: TurnServer,
    gate: Gate,
    /// Open client streams (TCP, TLS).
    streams: usize,
    wake: Option<Instant>,
}

impl Listener {
    /// A listener's engine and gate as new: they know no one.
    fn new(kind: Kind, addr: SocketAddr, secret: &[u8]) -> Self {
        Self {
            kind,
            addr,
            server: TurnServer::new(kind.transport(), addr, REALM.to_owned()),
            gate: Gate::new(secret.to_vec()),
            streams: 0,
            wake: None,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    pub allocations: usize,
    /// Packets a relay did not carry because the peer is not the SFU.
    pub refused_peer_packets: u64,
    /// Requests naming an expired or malformed credential.
    pub refused_credentials: u64,
}

/// The counters, shared with `/metrics`: the engine updates them where they change, a scrape reads them.
#[derive(Debug, Default)]
pub struct TurnStats {
    allocations: AtomicUsize,
    refused_peer_packets: AtomicU64,
    refused_credentials: AtomicU64,
}

impl TurnStats {
    pub fn load(&self) -> EngineStats {
        EngineStats {
            allocations: self.allocations.load(Ordering::Relaxed),
            refused_peer_packets: self.refused_peer_packets.load(Ordering::Relaxed),
            refused_credentials: self.refused_credentials.load(Ordering::Relaxed),
        }
    }
}

pub struct Engine {
    listeners: Vec<Listener>,
    secret: Vec<u8>,
    /// Relay address → the listener whose client owns it.
    relays: HashMap<SocketAddr, usize>,
    allowed_peers: HashSet<SocketAddr>,
    max_allocations: usize,
    base: std::time::Instant,
    stats: Arc<TurnStats>,
}

/// A bound on poll loops: the engine returns to `WaitUntil` long before this, unless it misbehaves.
const MAX_POLLS: usize = 4096;

impl Engine {
    /// `listeners`: what each listener serves and its bound address. `allowed_peers`: the SFU's media addresses.
    pub fn new(
        listeners: &[(Kind, SocketAddr)],
        secret: Vec<u8>,
        allowed_peers: HashSet<SocketAddr>,
        max_allocations: usize,
    ) -> Self {
        let listeners = listeners.iter().map(|&(kind, addr)| Listener::new(kind, addr, &secret)).collect();
        Self {
            listeners,
            secret,
            relays: HashMap::new(),
            allowed_peers,
            max_allocations,
            base: std::time::Instant::now(),
            stats: Arc::default(),
        }
    }

    #[cfg(test)]
    pub fn stats(&self) -> EngineStats {
        self.stats.load()
    }

    /// The counters, for `/metrics`.
    pub fn stats_handle(&self) -> Arc<TurnStats> {
        Arc::clone(&self.stats)
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(i64::try_from(self.base.elapsed().as_nanos()).unwrap_or(i64::MAX))
    }

    /// When `tick` must next run.
    pub fn next_wake(&self) -> Option<std::time::Instant> {
        self.listeners
            .iter()
            .filter_map(|l| l.wake)
            .min()
            .map(|w| w.to_std(self.base))
    }

    /// One message from a client of `listener`: a UDP datagram, or one frame off its stream.
    pub fn on_client(&mut self, io: &mut dyn Io, listener: usize, from: SocketAddr, data: &[u8]) {
        let Some(l) = self.listeners.get_mut(listener) else { return };
        match l.gate.check(data, unix_now()) {
            Verdict::Drop => {
                self.stats.refused_credentials.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Verdict::Register { username, password } => l.server.add_user(username, password),
            Verdict::Pass => {}
        }
        let transmit = Transmit::new(data, l.kind.transport(), from, l.addr);
        // ChannelData is relayed and changes no state: the engine has nothing else to do after it.
        self.feed(io, listener, transmit, !is_channel_data(data));
    }

    /// A datagram that arrived on relay socket `relay` from `from`: relayed to its client, no state changed.
    pub fn on_peer(&mut self, io: &mut dyn Io, relay: SocketAddr, from: SocketAddr, data: &[u8]) {
        let Some(&listener) = self.relays.get(&relay) else { return };
        if !self.allowed_peers.contains(&from) {
            self.stats.refused_peer_packets.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.feed(io, listener, Transmit::new(data, TransportType::Udp, from, relay), false);
    }

    /// Hands `transmit` to `listener`'s engine and sends what it answers; with `settle`, then carries out what
    /// the message may have started (allocations, closes, queued answers, the next timer).
    fn feed(&mut self, io: &mut dyn Io, listener: usize, transmit: Transmit<&[u8]>, settle: bool) {
        let now = self.now();
        if let Some(out) = self.listeners[listener].server.recv(transmit, now) {
            self.route(io, listener, out.build());
        }
        if settle {
            self.drive(io, listener);
        }
    }

    /// A client's stream opened.
    pub fn stream_opened(&mut self, listener: usize) {
        if let Some(l) = self.listeners.get_mut(listener) {
            l.streams += 1;
        }
    }

    /// A client's stream closed: the engine forgets its buffer, unless a newer stream from the same address is
    /// `current`ly open. (Its allocations live on until they expire, as turn-server-proto keeps them; their relays
    /// then close through `drive`.)
    pub fn stream_closed(&mut self, io: &mut dyn Io, listener: usize, from: SocketAddr, current: bool) {
        let Some(l) = self.listeners.get_mut(listener) else { return };
        l.streams = l.streams.saturating_sub(1);
        if current {
            let addr = l.addr;
            self.feed(io, listener, Transmit::new(&[], TransportType::Tcp, from, addr), true);
        }
    }

    /// Runs every listener's timers (allocation, permission and channel expiry; retransmits).
    pub fn tick(&mut self, io: &mut dyn Io) {
        for i in 0..self.listeners.len() {
            self.drive(io, i);
        }
    }

    /// turn-server-proto cannot forget a user, so the names of expired credentials pile up in its table. A
    /// listener with expired names and nothing in flight (no allocation, no open stream: a quiet night) gets
    /// a fresh engine instead, which knows no one. Returns how many were renewed.
    pub fn renew_idle(&mut self) -> usize {
        let now = unix_now();
        let mut renewed = 0;
        for (i, l) in self.listeners.iter_mut().enumerate() {
            let busy = l.streams > 0 || self.relays.values().any(|&owner| owner == i);
            if busy || l.gate.expired(now) == 0 {
                continue;
            }
            *l = Listener::new(l.kind, l.addr, &self.secret);
            renewed += 1;
        }
        renewed
    }

    /// Carries out what the engine asks for until it only has a timer left, then sends what it queued.
    fn drive(&mut self, io: &mut dyn Io, listener: usize) {
        let now = self.now();
        for _ in 0..MAX_POLLS {
            let l = &mut self.listeners[listener];
            match l.server.poll(now) {
                TurnServerPollRet::WaitUntil(at) => {
                    l.wake = Some(at);
                    break;
                }
                TurnServerPollRet::AllocateSocket { transport, listen_addr, client_addr, allocation_transport, family } => {
                    let result = if allocation_transport != TransportType::Udp {
                        // RFC 6062 TCP relays are not offered: browsers relay UDP, and the SFU speaks UDP.
                        Err(SocketAllocateError::InsufficientCapacity)
                    } else if self.relays.len() >= self.max_allocations {
                        Err(SocketAllocateError::InsufficientCapacity)
                    } else {
                        match io.bind_relay(family) {
                            Ok(addr) => {
                                self.relays.insert(addr, listener);
                                self.stats.allocations.store(self.relays.len(), Ordering::Relaxed);
                                Ok(addr)
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                                Err(SocketAllocateError::AddressFamilyNotSupported)
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "TURN: cannot open a relay socket");
                                Err(SocketAllocateError::InsufficientCapacity)
                            }
                        }
                    };
                    let l = &mut self.listeners[listener];
                    l.server.allocated_socket(transport, listen_addr, client_addr, allocation_transport, family, result, now);
                }
                TurnServerPollRet::TcpConnect { relayed_addr, peer_addr, listen_addr, client_addr } => {
                    l.server.tcp_connected(relayed_addr, peer_addr, listen_addr, client_addr, Err(TcpConnectError::Forbidden), now);
                }
                TurnServerPollRet::TcpClose { local_addr, remote_addr } => {
                    if local_addr == l.addr {
                        io.close_client(listener, remote_addr);
                    }
                }
                TurnServerPollRet::SocketClose { listen_addr, .. } => {
                    if self.relays.remove(&listen_addr).is_some() {
                        self.stats.allocations.store(self.relays.len(), Ordering::Relaxed);
                        io.close_relay(listen_addr);
                    }
                }
            }
        }
        for _ in 0..MAX_POLLS {
            let Some(out) = self.listeners[listener].server.poll_transmit(now) else { break };
            self.route(io, listener, out);
        }
    }

    /// Sends one transmit of `listener`'s engine: to a client from the listener, or to a peer from a relay.
    fn route(&mut self, io: &mut dyn Io, listener: usize, out: Transmit<Vec<u8>>) {
        let l = &self.listeners[listener];
        if out.from == l.addr && out.transport == l.kind.transport() {
            io.send_client(listener, out.to, out.data);
        } else if self.relays.contains_key(&out.from) {
            if self.allowed_peers.contains(&out.to) {
                io.send_peer(out.from, out.to, &out.data);
            } else {
                self.stats.refused_peer_packets.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Seconds since the epoch, what TURN REST expiries are written in.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

/// The relay family a request asks for, as an address family of `ip`.
pub fn family_of(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() { AddressFamily::IPV4 } else { AddressFamily::IPV6 }
}

/// The engine against turn-server-proto's sibling client (turn-client-proto), both sans-IO: every message goes
/// from one to the other in memory, so these tests see exactly what a client would get.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::turn::credential;
    use turn_client_proto::api::{TurnConfig as ClientConfig, TurnEvent, TurnPollRet, TurnRecvRet};
    use turn_client_proto::prelude::*;
    use turn_client_proto::types::TurnCredentials;
    use turn_client_proto::udp::TurnClientUdp;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[derive(Default)]
    struct FakeIo {
        to_clients: Vec<(SocketAddr, Vec<u8>)>,
        to_peers: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
        next_port: u16,
        closed: Vec<SocketAddr>,
    }

    impl Io for FakeIo {
        fn send_client(&mut self, _listener: usize, to: SocketAddr, data: Vec<u8>) {
            self.to_clients.push((to, data));
        }
        fn bind_relay(&mut self, _family: AddressFamily) -> std::io::Result<SocketAddr> {
            self.next_port += 1;
            Ok(SocketAddr::new([10, 0, 0, 1].into(), 50_000 + self.next_port))
        }
        fn send_peer(&mut self, relay: SocketAddr, to: SocketAddr, data: &[u8]) {
            self.to_peers.push((relay, to, data.to_vec()));
        }
        fn close_relay(&mut self, relay: SocketAddr) {
            self.closed.push(relay);
        }
        fn close_client(&mut self, _listener: usize, _client: SocketAddr) {}
    }

    struct Rig {
        engine: Engine,
        io: FakeIo,
        client: TurnClientUdp,
        events: Vec<TurnEvent>,
        received: Vec<(SocketAddr, Vec<u8>)>,
        base: std::time::Instant,
        /// How far the client's clock runs ahead of the wall clock.
        skew: Duration,
    }

    const SERVER: &str = "10.0.0.1:3478";
    const CLIENT: &str = "192.0.2.7:50000";
    const SFU: &str = "10.0.0.1:40000";

    impl Rig {
        fn new(username: &str, password: &str) -> Self {
            let engine = Engine::new(&[(Kind::Udp, addr(SERVER))], SECRET.to_vec(), [addr(SFU)].into(), 10);
            let mut config = ClientConfig::new(TurnCredentials::new(username, password));
            // As browsers do: the name in USERNAME, not hashed (RFC 8489's USERHASH), since the gate reads it.
            config.set_anonymous_username(turn_client_proto::stun::auth::Feature::Disabled);
            let client = TurnClientUdp::allocate(addr(CLIENT), addr(SERVER), config);
            Self { engine, io: FakeIo::default(), client, events: vec![], received: vec![], base: std::time::Instant::now(), skew: Duration::ZERO }
        }

        fn now(&self) -> Instant {
            Instant::from_nanos((self.base.elapsed() + self.skew).as_nanos() as i64)
        }

        /// Moves messages both ways until neither side has anything to say.
        fn pump(&mut self) {
            for _ in 0..50 {
                let now = self.now();
                let mut moved = false;
                let wait = match self.client.poll(now) {
                    TurnPollRet::WaitUntil(at) => at.checked_duration_since(now),
                    _ => None,
                };
                while let Some(t) = self.client.poll_transmit(now) {
                    self.engine.on_client(&mut self.io, 0, addr(CLIENT), t.data.as_ref());
                    moved = true;
                }
                for (to, data) in std::mem::take(&mut self.io.to_clients) {
                    assert_eq!(to, addr(CLIENT));
                    let ret = self.client.recv(Transmit::new(data.as_slice(), TransportType::Udp, addr(SERVER), to), now);
                    if let TurnRecvRet::PeerData(p) = ret {
                        self.received.push((p.peer, p.data().to_vec()));
                    }
                    moved = true;
                }
                while let Some(e) = self.client.poll_event() {
                    self.events.push(e);
                }
                if !moved {
                    // The client paces its requests (a short wait after a 401): let its clock run ahead to its
                    // next deadline rather than sleep, unless that is a refresh minutes away.
                    match wait {
                        Some(w) if w <= Duration::from_secs(1) => self.skew += w.max(Duration::from_millis(1)),
                        _ => return,
                    }
                }
            }
        }

        fn relay(&self) -> Option<SocketAddr> {
            self.events.iter().find_map(|e| match e {
                TurnEvent::AllocationCreated(_, a) => Some(*a),
                _ => None,
            })
        }

        fn send(&mut self, to: SocketAddr, data: &[u8]) {
            let now = self.now();
            if let Some(t) = self.client.send_to(TransportType::Udp, to, data, now).unwrap() {
                let t = t.build();
                self.engine.on_client(&mut self.io, 0, addr(CLIENT), &t.data);
            }
        }
    }

    fn valid_credential(expires_in: u64) -> (String, String) {
        credential(SECRET, unix_now() + expires_in, "0123456789abcdef")
    }

    #[test]
    fn a_valid_credential_gets_a_relay_that_carries_packets_to_and_from_the_sfu() {
        let (user, pass) = valid_credential(600);
        let mut rig = Rig::new(&user, &pass);
        rig.pump();
        let relay = rig.relay().unwrap_or_else(|| panic!("an allocation: {:?}", rig.events));
        assert_eq!(rig.engine.stats().allocations, 1);
        let now = rig.now();
        rig.client.create_permission(TransportType::Udp, addr(SFU).ip(), now).unwrap();
        rig.pump();
        assert!(rig.events.iter().any(|e| matches!(e, TurnEvent::PermissionCreated(_, ip) if *ip == addr(SFU).ip())));

        rig.send(addr(SFU), b"to the sfu");
        assert_eq!(rig.io.to_peers, vec![(relay, addr(SFU), b"to the sfu".to_vec())]);
        rig.engine.on_peer(&mut rig.io, relay, addr(SFU), b"from the sfu");
        rig.pump();
        assert_eq!(rig.received, vec![(addr(SFU), b"from the sfu".to_vec())]);
    }

    #[test]
    fn a_relay_carries_nothing_to_or_from_anyone_but_the_sfu() {
        let (user, pass) = valid_credential(600);
        let mut rig = Rig::new(&user, &pass);
        rig.pump();
        let relay = rig.relay().expect("an allocation");
        let now = rig.now();
        // The same host's other services, and another host on the clinic's network.
        for peer in ["10.0.0.1:6379", "10.0.0.9:40000"] {
            rig.client.create_permission(TransportType::Udp, addr(peer).ip(), now).unwrap();
        }
        rig.pump();
        rig.send(addr("10.0.0.1:6379"), b"FLUSHALL");
        rig.send(addr("10.0.0.9:40000"), b"hello");
        assert!(rig.io.to_peers.is_empty(), "{:?}", rig.io.to_peers);
        rig.engine.on_peer(&mut rig.io, relay, addr("10.0.0.9:40000"), b"unsolicited");
        rig.pump();
        assert!(rig.received.is_empty());
        assert_eq!(rig.engine.stats().refused_peer_packets, 3);
    }

    #[test]
    fn expired_forged_and_foreign_credentials_get_no_relay() {
        let expired = credential(SECRET, unix_now() - 1, "0123456789abcdef");
        let forged = (valid_credential(600).0, "not-the-password".to_owned());
        let foreign = credential(b"another clinic's secret 12345678", unix_now() + 600, "0123456789abcdef");
        for (user, pass) in [expired, forged, foreign] {
            let mut rig = Rig::new(&user, &pass);
            rig.pump();
            assert_eq!(rig.relay(), None, "{user}");
            assert_eq!(rig.engine.stats().allocations, 0);
        }
    }

    /// Waits (bounded) until `user`'s expiry has passed.
    fn until_expired(user: &str) {
        let expiry: u64 = user.split_once(':').unwrap().0.parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(4);
        while unix_now() <= expiry {
            assert!(std::time::Instant::now() < deadline, "the clock did not pass {expiry}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn an_expired_credential_cannot_refresh_and_its_listener_stays_busy() {
        let (user, pass) = valid_credential(1);
        let mut rig = Rig::new(&user, &pass);
        rig.pump();
        assert!(rig.relay().is_some());
        until_expired(&user);
        let now = rig.now();
        rig.client.delete(now).unwrap();
        rig.pump();
        assert!(rig.engine.stats().refused_credentials >= 1, "the refresh (and its retransmits) named an expired credential");
        assert_eq!(rig.engine.stats().allocations, 1);
        assert_eq!(rig.engine.renew_idle(), 0, "an allocation is open");
    }

    #[test]
    fn an_idle_listener_forgets_expired_credentials() {
        let (user, pass) = valid_credential(2);
        let mut rig = Rig::new(&user, &pass);
        rig.pump();
        assert!(rig.relay().is_some());
        let now = rig.now();
        rig.client.delete(now).unwrap();
        rig.pump();
        // The engine closes the relay on its next pass after the allocation's (now zero) lifetime.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while rig.engine.stats().allocations > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            rig.engine.tick(&mut rig.io);
        }
        assert_eq!(rig.engine.stats().allocations, 0, "the relay closed with the allocation");
        assert_eq!(rig.io.closed.len(), 1);
        assert_eq!(rig.engine.renew_idle(), 0, "its credential has not expired yet");
        until_expired(&user);
        assert_eq!(rig.engine.renew_idle(), 1);
        assert_eq!(rig.engine.listeners[0].gate.known(), 0);
    }

    /// A STUN-shaped message (the magic cookie, a length that matches) of any type with any attribute bytes, or
    /// any bytes at all: what a hostile client can send.
    fn hostile_frame() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let stun = (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..24), any::<[u8; 12]>()).prop_map(|(ty, words, tx)| {
            let body: Vec<u8> = words.iter().flat_map(|w| [*w, w.wrapping_mul(7), 0, 4]).collect();
            let mut m = (ty & 0x3FFF).to_be_bytes().to_vec();
            m.extend_from_slice(&(body.len() as u16).to_be_bytes());
            m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
            m.extend_from_slice(&tx);
            m.extend_from_slice(&body);
            m
        });
        prop_oneof![stun, proptest::collection::vec(any::<u8>(), 0..200)]
    }

    proptest::proptest! {
        /// Whatever a client or a peer sends, the engine neither panics nor hands out a relay without a credential.
        #[test]
        fn hostile_input_never_panics_or_allocates(frames in proptest::collection::vec(hostile_frame(), 1..24)) {
            let listeners = [(Kind::Udp, addr(SERVER)), (Kind::Tcp, addr("10.0.0.1:3479"))];
            let mut engine = Engine::new(&listeners, SECRET.to_vec(), [addr(SFU)].into(), 10);
            let mut io = FakeIo::default();
            for f in &frames {
                engine.on_client(&mut io, 0, addr(CLIENT), f);
                engine.on_client(&mut io, 1, addr(CLIENT), f);
                engine.on_peer(&mut io, addr("10.0.0.1:50001"), addr(SFU), f);
            }
            engine.stream_closed(&mut io, 1, addr(CLIENT), true);
            engine.tick(&mut io);
            proptest::prop_assert_eq!(engine.stats().allocations, 0);
            proptest::prop_assert!(io.to_peers.is_empty());
        }
    }
}
