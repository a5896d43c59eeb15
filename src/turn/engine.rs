//! The TURN protocol state of every listener, without sockets: one turn-server-proto `TurnServer` per listener
//! (it serves one transport on one address), the gate in front of each, and the table of relay sockets. What
//! it decides to send, bind or close goes through the `Io` the caller gives it, so the network side (`net`)
//! stays a thin loop.
//!
//! Relaying is only ever to and from the SFU's own media addresses: the embedded server exists to get patients
//! behind firewalls to *our* SFU, and a relay that reached anything else on the clinic's network would be an
//! open proxy into it. Permissions for other peers can be created, but no packet crosses them.

use super::gate::{Gate, Verdict};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
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
    /// Opens a relay socket for an allocation; its datagrams come back through `Engine::from_peer`.
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

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    pub allocations: usize,
    /// Packets a relay did not carry because the peer is not the SFU.
    pub refused_peer_packets: u64,
    /// Requests naming an expired or malformed credential.
    pub refused_credentials: u64,
}

pub struct Engine {
    listeners: Vec<Listener>,
    secret: Vec<u8>,
    /// Relay address → the listener whose client owns it.
    relays: HashMap<SocketAddr, usize>,
    allowed_peers: HashSet<SocketAddr>,
    max_allocations: usize,
    base: std::time::Instant,
    stats: EngineStats,
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
        let listeners = listeners
            .iter()
            .map(|&(kind, addr)| Listener {
                kind,
                addr,
                server: TurnServer::new(kind.transport(), addr, REALM.to_owned()),
                gate: Gate::new(secret.clone()),
                streams: 0,
                wake: None,
            })
            .collect();
        Self {
            listeners,
            secret,
            relays: HashMap::new(),
            allowed_peers,
            max_allocations,
            base: std::time::Instant::now(),
            stats: EngineStats::default(),
        }
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats { allocations: self.relays.len(), ..self.stats }
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
    pub fn from_client(&mut self, io: &mut dyn Io, listener: usize, from: SocketAddr, data: &[u8]) {
        let now = self.now();
        let Some(l) = self.listeners.get_mut(listener) else { return };
        match l.gate.check(data, unix_now()) {
            Verdict::Drop => {
                self.stats.refused_credentials += 1;
                return;
            }
            Verdict::Register { username, password } => l.server.add_user(username, password),
            Verdict::Pass => {}
        }
        let transmit = Transmit::new(data, l.kind.transport(), from, l.addr);
        if let Some(out) = l.server.recv(transmit, now) {
            let out = out.build();
            self.route(io, listener, out);
        }
        self.drive(io, listener);
    }

    /// A datagram that arrived on relay socket `relay` from `from`.
    pub fn from_peer(&mut self, io: &mut dyn Io, relay: SocketAddr, from: SocketAddr, data: &[u8]) {
        let Some(&listener) = self.relays.get(&relay) else { return };
        if !self.allowed_peers.contains(&from) {
            self.stats.refused_peer_packets += 1;
            return;
        }
        let now = self.now();
        if let Some(out) = self.listeners[listener].server.recv(Transmit::new(data, TransportType::Udp, from, relay), now) {
            let out = out.build();
            self.route(io, listener, out);
        }
        self.drive(io, listener);
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
        let now = self.now();
        let Some(l) = self.listeners.get_mut(listener) else { return };
        l.streams = l.streams.saturating_sub(1);
        if !current {
            return;
        }
        let empty: &[u8] = &[];
        if let Some(out) = l.server.recv(Transmit::new(empty, TransportType::Tcp, from, l.addr), now) {
            let out = out.build();
            self.route(io, listener, out);
        }
        self.drive(io, listener);
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
            l.server = TurnServer::new(l.kind.transport(), l.addr, REALM.to_owned());
            l.gate = Gate::new(self.secret.clone());
            l.wake = None;
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
                self.stats.refused_peer_packets += 1;
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
