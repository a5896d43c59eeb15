//! Drives many [`ClientPeer`]s from one thread over the in-memory network: one inbox for all of them, one
//! deadline, signaling through in-process room sessions. Used by the forwarding benchmark (and by tests that
//! want real media with no sockets).

use crate::peer::{ClientPeer, MediaOptions, PeerStats};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use telehealth_gateway::room::{Outbound, Session};
use telehealth_gateway::sfu::memnet::{Datagram, Inbox, MemNet};

/// Longest the driver sleeps without looking at signaling.
const MAX_SLEEP: Duration = Duration::from_millis(5);

/// What the driver thread shares while it runs.
#[derive(Default)]
pub struct Progress {
    pub stop: AtomicBool,
    /// Peers connected and receiving every track they expect.
    pub ready: AtomicUsize,
    /// Peers whose connection is up.
    pub connected: AtomicUsize,
    /// The driver thread's kernel id, for reading its CPU time.
    pub tid: AtomicI64,
    /// A peer (by index) that stops dead: it neither reads what arrives for it (dropped, as a full socket buffer
    /// drops) nor sends anything, as a frozen browser. -1: none.
    pub stalled: AtomicI64,
    /// Bumped by the caller to have every peer's stats start afresh (a measurement window).
    pub reset: AtomicUsize,
}

impl Progress {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { stalled: AtomicI64::new(-1), ..Self::default() })
    }
}

struct Client {
    peer: ClientPeer,
    session: Session,
    expect_tracks: usize,
}

/// Runs until `progress.stop`; returns each peer's stats, in the order of `sessions`.
pub fn run(
    net: Arc<MemNet>,
    sessions: Vec<(Session, usize)>,
    first_addr: SocketAddr,
    options: MediaOptions,
    progress: Arc<Progress>,
) -> anyhow::Result<Vec<PeerStats>> {
    progress.tid.store(crate::cpu::current_tid(), Ordering::Relaxed);
    let epoch = Instant::now();
    let inbox = Inbox::new(1 << 16);
    let mut clients = Vec::with_capacity(sessions.len());
    let mut by_addr = HashMap::new();
    for (i, (session, expect_tracks)) in sessions.into_iter().enumerate() {
        let addr = SocketAddr::new(first_addr.ip(), first_addr.port() + i as u16);
        net.bind(addr, &inbox)?;
        let (peer, out) = ClientPeer::new(addr, options.clone(), epoch, Instant::now())?;
        for m in out {
            assert!(session.try_handle(m), "a new participant takes its first messages");
        }
        by_addr.insert(addr, i);
        clients.push(Client { peer, session, expect_tracks });
    }
    let mut datagrams: Vec<Datagram> = Vec::with_capacity(1024);
    let mut reset_seen = 0;
    while !progress.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let reset = progress.reset.load(Ordering::Relaxed);
        if reset != reset_seen {
            reset_seen = reset;
            for c in &mut clients {
                c.peer.stats = PeerStats::default();
            }
        }
        let stalled = usize::try_from(progress.stalled.load(Ordering::Relaxed)).ok();
        for c in &mut clients {
            while let Ok(out) = c.session.outbound.try_recv() {
                if let Outbound::Message(msg) = out {
                    if let signaling::ServerMessage::Error { .. } = &msg {
                        eprintln!("server error: {msg:?}");
                    }
                    for reply in c.peer.on_signal(msg, now)? {
                        if !c.session.try_handle(reply) {
                            anyhow::bail!("the participant's queue is full");
                        }
                    }
                }
            }
        }
        inbox.drain_into(&mut datagrams);
        for d in datagrams.drain(..) {
            if let Some(&i) = by_addr.get(&d.to)
                && stalled != Some(i)
            {
                clients[i].peer.on_datagram(d.from, d.data, now);
            }
        }
        let now = Instant::now();
        let mut next = now + MAX_SLEEP;
        let (mut ready, mut connected) = (0, 0);
        for (i, c) in clients.iter_mut().enumerate() {
            if stalled == Some(i) {
                continue;
            }
            if c.peer.deadline().is_some_and(|d| d <= now) {
                c.peer.tick(now);
            }
            let from = c.peer.local_addr();
            while let Some((to, data)) = c.peer.poll_transmit() {
                net.send(from, to, &data);
            }
            if let Some(d) = c.peer.deadline() {
                next = next.min(d);
            }
            connected += usize::from(c.peer.is_connected());
            ready += usize::from(c.peer.is_connected() && c.peer.tracks_received() >= c.expect_tracks);
        }
        progress.ready.store(ready, Ordering::Relaxed);
        progress.connected.store(connected, Ordering::Relaxed);
        inbox.wait(Some(next));
    }
    let mut stats = Vec::with_capacity(clients.len());
    for c in &mut clients {
        c.peer.close();
        net.unbind(c.peer.local_addr());
        stats.push(std::mem::take(&mut c.peer.stats));
    }
    Ok(stats)
}
