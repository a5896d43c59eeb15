//! The embedded TURN server, for patients whose network lets no UDP out, or only TLS: a browser that cannot
//! reach the SFU directly allocates a relay here over UDP, TCP or TLS and reaches the SFU through it. It speaks
//! TURN (RFC 8656) through turn-server-proto, a sans-IO engine, and admits holders of the TURN REST credentials
//! `auth::turn` mints for each participant (`gate`). Relays only ever talk to the SFU's own media addresses
//! (`engine`), so the server is no open proxy into the clinic's network.
//!
//! - `framing`: where messages end on a stream; `gate`: credentials; `engine`: the protocol state; `net`: the
//!   sockets and the one task that drives the engine.
//!
//! It knows nothing of HTTP, rooms or the store; the server starts it with the SFU's addresses.

mod engine;
mod framing;
mod gate;
mod net;

pub use engine::{EngineStats, TurnStats};

use crate::config::TurnListenConfig;
use anyhow::Context;
use engine::{Engine, Kind};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::task::AbortHandle;

/// What the embedded server needs besides its listeners.
pub struct TurnSetup {
    /// The shared secret credentials are checked against.
    pub secret: Vec<u8>,
    /// Where relay sockets bind.
    pub relay_ip: IpAddr,
    /// The SFU's media addresses: the only peers relays carry packets to and from.
    pub allowed_peers: HashSet<SocketAddr>,
    /// The TLS listener's certificate (required when `TURN_TLS_ADDR` is set).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The running server: its bound addresses and counters. Dropping it stops every task and closes every socket.
pub struct EmbeddedTurn {
    listeners: Vec<(Kind, SocketAddr)>,
    stats: Arc<TurnStats>,
    tasks: Vec<AbortHandle>,
}

impl EmbeddedTurn {
    /// Binds the configured listeners (port 0 works: `udp_addr()` and friends tell the real ones) and starts.
    pub async fn start(listen: &TurnListenConfig, setup: TurnSetup) -> anyhow::Result<Self> {
        let tls = setup.tls.map(tokio_rustls::TlsAcceptor::from);
        let wanted = [(Kind::Udp, listen.udp), (Kind::Tcp, listen.tcp), (Kind::Tls, listen.tls)];
        let mut bound = Vec::new();
        let mut listeners = Vec::new();
        for (kind, addr) in wanted.into_iter().filter_map(|(k, a)| a.map(|a| (k, a))) {
            let (name, acceptor) = match kind {
                Kind::Udp => ("TURN_UDP_ADDR", None),
                Kind::Tcp => ("TURN_TCP_ADDR", None),
                Kind::Tls => ("TURN_TLS_ADDR", Some(tls.clone().context("TURN_TLS_ADDR needs a certificate")?)),
            };
            let b = net::bind(kind, addr, acceptor).await.with_context(|| format!("binding {name}={addr}"))?;
            listeners.push((kind, b.local_addr()?));
            bound.push(b);
        }
        let engine = Engine::new(&listeners, setup.secret, setup.allowed_peers, listen.max_allocations);
        let stats = engine.stats_handle();
        let tasks = net::spawn(engine, bound, setup.relay_ip, listen.max_allocations);
        Ok(Self { listeners, stats, tasks })
    }

    fn addr(&self, kind: Kind) -> Option<SocketAddr> {
        self.listeners.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.addr(Kind::Udp)
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.addr(Kind::Tcp)
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.addr(Kind::Tls)
    }

    pub fn stats(&self) -> EngineStats {
        self.stats.load()
    }

    /// The counters, for `/metrics`.
    pub fn stats_handle(&self) -> Arc<TurnStats> {
        Arc::clone(&self.stats)
    }

    /// The `iceServers` URLs for the listeners, reached at `host` as a URL writes it (a name the TLS certificate
    /// carries, an IPv4 address, or an IPv6 one in brackets).
    pub fn urls(&self, host: &str) -> Vec<String> {
        self.listeners
            .iter()
            .map(|(kind, addr)| match kind {
                Kind::Udp => format!("turn:{host}:{}?transport=udp", addr.port()),
                Kind::Tcp => format!("turn:{host}:{}?transport=tcp", addr.port()),
                Kind::Tls => format!("turns:{host}:{}?transport=tcp", addr.port()),
            })
            .collect()
    }
}

impl Drop for EmbeddedTurn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
