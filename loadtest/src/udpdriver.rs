//! One thread that drives many [`ClientPeer`]s over real UDP sockets: epoll (mio) on every peer's socket and a
//! waker for commands, one ordered set of deadlines, and a peer's output sent right after whatever touched it
//! (a datagram, a timer, a signaling message).
//!
//! A pass costs in proportion to the peers it touched, not to the peers the thread holds: readiness comes per
//! socket, due timers come off the front of the set, and only touched peers are asked for datagrams to send and
//! for their next deadline. Signaling stays on the async side; a participant's task hands messages over as
//! commands and awaits the result.

use crate::mediastats::MediaStats;
use crate::peer::ClientPeer;
use bytes::BytesMut;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use signaling::{ClientMessage, ServerMessage};
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use telehealth_gateway::sfu::coalesce::Coalescer;
use tokio::sync::{mpsc as async_mpsc, oneshot};

const WAKER: Token = Token(usize::MAX);
/// How often each peer's counters are published to the run's stats.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Large enough for any datagram on a 1,500-byte path.
const MAX_DATAGRAM: usize = 2048;

enum Command {
    Add { id: u64, peer: Box<ClientPeer>, socket: std::net::UdpSocket, out: async_mpsc::UnboundedSender<ClientMessage> },
    Signal { id: u64, msg: ServerMessage, reply: oneshot::Sender<anyhow::Result<()>> },
    Close { id: u64, done: Option<oneshot::Sender<()>> },
    Shutdown,
}

/// Talks to one driver thread from any thread or task.
#[derive(Clone)]
pub struct DriverHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
    ids: Arc<AtomicU64>,
}

impl DriverHandle {
    fn send(&self, command: Command) -> anyhow::Result<()> {
        self.tx.send(command).map_err(|_| anyhow::anyhow!("the media driver thread has stopped"))?;
        self.waker.wake()?;
        Ok(())
    }

    /// Hands a peer and its (non-blocking) socket to the thread; returns the session id.
    pub fn add(&self, peer: ClientPeer, socket: std::net::UdpSocket, out: async_mpsc::UnboundedSender<ClientMessage>) -> anyhow::Result<u64> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        self.send(Command::Add { id, peer: Box::new(peer), socket, out })?;
        Ok(id)
    }

    pub async fn signal(&self, id: u64, msg: ServerMessage) -> anyhow::Result<()> {
        let (reply, result) = oneshot::channel();
        self.send(Command::Signal { id, msg, reply })?;
        result.await.map_err(|_| anyhow::anyhow!("the media driver thread has stopped"))?
    }

    /// Closes a session and waits until its last counts are published.
    pub async fn close(&self, id: u64) {
        let (done, closed) = oneshot::channel();
        if self.send(Command::Close { id, done: Some(done) }).is_ok() {
            let _ = closed.await;
        }
    }

    pub fn close_detached(&self, id: u64) {
        let _ = self.send(Command::Close { id, done: None });
    }

    pub fn shutdown(&self) {
        let _ = self.send(Command::Shutdown);
    }
}

struct Slot {
    peer: ClientPeer,
    socket: UdpSocket,
    out: async_mpsc::UnboundedSender<ClientMessage>,
    /// The deadline this slot has in the timer set.
    deadline: Option<Instant>,
    /// Connected as last published to the stats.
    connected: bool,
    touched: bool,
}

pub struct Driver {
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    stats: Arc<MediaStats>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    timers: BTreeSet<(Instant, usize)>,
    touched: Vec<usize>,
    buf: Box<[u8; MAX_DATAGRAM]>,
}

impl Driver {
    /// Starts driver thread number `index`.
    pub fn spawn(index: usize, stats: Arc<MediaStats>) -> anyhow::Result<DriverHandle> {
        let poll = Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        let (tx, commands) = mpsc::channel();
        let driver = Self {
            poll,
            commands,
            stats,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            timers: BTreeSet::new(),
            touched: Vec::new(),
            buf: Box::new([0; MAX_DATAGRAM]),
        };
        std::thread::Builder::new().name(format!("media-driver-{index}")).spawn(move || driver.run())?;
        Ok(DriverHandle { tx, waker, ids: Arc::new(AtomicU64::new(1)) })
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_flush = Instant::now() + FLUSH_INTERVAL;
        // Busy, the thread lets datagrams gather after a pass that had some, as the SFU's shards do: one wake-up
        // for many packets instead of one each.
        let mut coalesce = Coalescer::new(Instant::now());
        let mut linger = None;
        loop {
            let now = Instant::now();
            let wake_at = self.timers.first().map_or(next_flush, |&(t, _)| t.min(next_flush));
            let timeout = match linger.take() {
                Some(linger) => {
                    std::thread::sleep(wake_at.min(now + linger).saturating_duration_since(now));
                    Duration::ZERO
                }
                None => wake_at.saturating_duration_since(now),
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                eprintln!("media driver: poll failed: {e}");
                break;
            }
            let now = Instant::now();
            let mut received = 0;
            for event in events.iter() {
                if event.token() != WAKER {
                    received += self.receive(event.token().0, now);
                }
            }
            linger = coalesce.after_pass(received, now);
            if !self.commands(now) {
                break;
            }
            while let Some(&(t, i)) = self.timers.first()
                && t <= now
            {
                self.timers.pop_first();
                if let Some(slot) = self.slots[i].as_mut() {
                    slot.deadline = None;
                    slot.peer.tick(now);
                }
                self.touch(i);
            }
            self.transmit();
            if now >= next_flush {
                next_flush = now + FLUSH_INTERVAL;
                for slot in self.slots.iter_mut().flatten() {
                    publish(&self.stats, slot);
                }
            }
        }
        let ids: Vec<u64> = self.by_id.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    /// Runs every queued command; false on shutdown (or when every handle is gone).
    fn commands(&mut self, now: Instant) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Add { id, peer, socket, out }) => self.add(id, *peer, socket, out),
                Ok(Command::Signal { id, msg, reply }) => {
                    let result = match self.by_id.get(&id).copied() {
                        Some(i) => {
                            let slot = self.slots[i].as_mut().expect("by_id names live slots");
                            let result = slot.peer.on_signal(msg, now).map(|replies| {
                                for r in replies {
                                    let _ = slot.out.send(r);
                                }
                            });
                            self.touch(i);
                            result
                        }
                        None => Err(anyhow::anyhow!("no such media session")),
                    };
                    let _ = reply.send(result);
                }
                Ok(Command::Close { id, done }) => {
                    self.close(id);
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    fn add(&mut self, id: u64, peer: ClientPeer, socket: std::net::UdpSocket, out: async_mpsc::UnboundedSender<ClientMessage>) {
        let i = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let mut socket = UdpSocket::from_std(socket);
        if let Err(e) = self.poll.registry().register(&mut socket, Token(i), Interest::READABLE) {
            eprintln!("media driver: cannot watch a socket: {e}");
            self.free.push(i);
            return;
        }
        self.slots[i] = Some(Slot { peer, socket, out, deadline: None, connected: false, touched: false });
        self.by_id.insert(id, i);
        self.touch(i);
    }

    fn close(&mut self, id: u64) {
        let Some(i) = self.by_id.remove(&id) else { return };
        let Some(mut slot) = self.slots[i].take() else { return };
        if let Some(t) = slot.deadline {
            self.timers.remove(&(t, i));
        }
        slot.peer.close();
        send_all(&mut slot);
        publish(&self.stats, &mut slot);
        self.stats.set_connected(slot.connected, false);
        let _ = self.poll.registry().deregister(&mut slot.socket);
        self.free.push(i);
    }

    /// Reads everything queued on slot `i`'s socket (epoll is edge-triggered: all of it, now); returns how many.
    fn receive(&mut self, i: usize, now: Instant) -> usize {
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else { return 0 };
        let mut count = 0;
        loop {
            match slot.socket.recv_from(&mut self.buf[..]) {
                Ok((n, from)) => {
                    count += 1;
                    slot.peer.on_datagram(from, BytesMut::from(&self.buf[..n]), now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // An ICMP error from an earlier send (the server went away): not this socket's failure.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::Interrupted) => {}
                Err(_) => break,
            }
        }
        self.touch(i);
        count
    }

    fn touch(&mut self, i: usize) {
        if let Some(slot) = self.slots[i].as_mut()
            && !slot.touched
        {
            slot.touched = true;
            self.touched.push(i);
        }
    }

    /// Sends what the touched peers have queued and files their next deadline.
    fn transmit(&mut self) {
        for i in std::mem::take(&mut self.touched) {
            let Some(slot) = self.slots[i].as_mut() else { continue };
            slot.touched = false;
            send_all(slot);
            let next = slot.peer.deadline();
            if next != slot.deadline {
                if let Some(t) = slot.deadline {
                    self.timers.remove(&(t, i));
                }
                if let Some(t) = next {
                    self.timers.insert((t, i));
                }
                slot.deadline = next;
            }
        }
    }
}

/// Sends every datagram the peer has queued. A full socket buffer drops the datagram, as UDP would.
fn send_all(slot: &mut Slot) {
    while let Some((to, data)) = slot.peer.poll_transmit() {
        if slot.socket.send_to(&data, to).is_err() {
            slot.peer.stats.write_errors += 1;
        }
    }
}

/// Moves the peer's counters into the run's stats.
fn publish(stats: &MediaStats, slot: &mut Slot) {
    let delta = std::mem::take(&mut slot.peer.stats);
    stats.add(&delta);
    let connected = slot.peer.is_connected();
    stats.set_connected(slot.connected, connected);
    slot.connected = connected;
}
