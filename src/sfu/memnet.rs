//! An in-memory datagram network, so a benchmark or a test can run real ICE, DTLS and SRTP between the SFU and
//! client peers without the kernel: what it measures is the media plane, not the loopback device.
//!
//! Addresses are plain `SocketAddr`s, bound to an [`Inbox`]; several addresses may share one inbox (a client
//! thread serving many peers drains them all at once). A datagram sent to an address nobody bound is dropped,
//! as UDP would; an inbox that is full drops too (a socket's receive buffer), and both are counted.

use bytes::BytesMut;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::task::Waker;
use std::time::Instant;

/// Datagrams an inbox holds before it drops (about a 4 MB socket buffer of full-size packets).
pub const DEFAULT_INBOX_CAPACITY: usize = 4096;

#[derive(Debug)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: BytesMut,
    /// When it arrived: the kernel's receive timestamp for a UDP datagram, the push for the in-memory network;
    /// None for one we are sending. What the forwarding-delay histogram measures from.
    pub received: Option<Instant>,
    /// Carried in an ICE-TCP stream (RFC 4571 framing) rather than as a UDP datagram.
    pub tcp: bool,
}

#[derive(Debug, Default)]
pub struct MemNet {
    hosts: RwLock<HashMap<SocketAddr, Arc<Inbox>>>,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

impl MemNet {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Delivers `to` datagrams sent to `addr`.
    pub fn bind(&self, addr: SocketAddr, inbox: &Arc<Inbox>) -> io::Result<()> {
        let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
        if hosts.contains_key(&addr) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("{addr} is bound already")));
        }
        hosts.insert(addr, Arc::clone(inbox));
        Ok(())
    }

    pub fn unbind(&self, addr: SocketAddr) {
        self.hosts.write().unwrap_or_else(|e| e.into_inner()).remove(&addr);
    }

    /// Sends one datagram (copied, as a socket copies). False if it was dropped.
    pub fn send(&self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> bool {
        let inbox = self.hosts.read().unwrap_or_else(|e| e.into_inner()).get(&to).cloned();
        let delivered = inbox.is_some_and(|inbox| inbox.push(Datagram { from, to, received: Some(Instant::now()), data: BytesMut::from(data), tcp: false }));
        let counter = if delivered { &self.delivered } else { &self.dropped };
        counter.fetch_add(1, Ordering::Relaxed);
        delivered
    }

    /// Sends a batch (datagrams keep their own `from` and `to`) and empties it. Runs for the same inbox are
    /// queued under one lock with one wake-up, as one `sendmmsg` costs one system call.
    pub fn send_batch(&self, batch: &mut Vec<Datagram>) {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        let mut run: Option<(Arc<Inbox>, Vec<Datagram>)> = None;
        let (mut delivered, mut dropped) = (0u64, 0u64);
        let flush = |run: &mut Option<(Arc<Inbox>, Vec<Datagram>)>, delivered: &mut u64, dropped: &mut u64| {
            if let Some((inbox, datagrams)) = run.take() {
                let n = datagrams.len() as u64;
                let ok = inbox.push_all(datagrams.into_iter());
                *delivered += ok;
                *dropped += n - ok;
            }
        };
        for d in batch.drain(..) {
            let Some(inbox) = hosts.get(&d.to) else {
                dropped += 1;
                continue;
            };
            if run.as_ref().is_some_and(|(i, _)| !Arc::ptr_eq(i, inbox)) {
                flush(&mut run, &mut delivered, &mut dropped);
            }
            // Copied, as a socket copies (and as `send` does), so the benchmark charges the sender for it.
            let copy = Datagram { from: d.from, to: d.to, data: BytesMut::from(&d.data[..]), received: Some(Instant::now()), tcp: false };
            run.get_or_insert_with(|| (Arc::clone(inbox), Vec::new())).1.push(copy);
        }
        flush(&mut run, &mut delivered, &mut dropped);
        self.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Where datagrams for one or more addresses wait. A thread blocks on it with [`Inbox::wait`]; an async socket
/// registers a waker with [`Inbox::pop_or_register`].
#[derive(Debug)]
pub struct Inbox {
    state: Mutex<InboxState>,
    ready: Condvar,
    capacity: usize,
}

#[derive(Debug, Default)]
struct InboxState {
    queue: VecDeque<Datagram>,
    waker: Option<Waker>,
    /// Set by `wake`: the next `wait` returns at once.
    woken: bool,
    /// Threads blocked in `wait`. A push only signals the condition variable when one is (std's `notify_one`
    /// is a system call whether or not anyone waits, as a socket does not wake a reader that is not asleep).
    sleepers: usize,
}

impl Inbox {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(InboxState::default()), ready: Condvar::new(), capacity })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, datagram: Datagram) -> bool {
        self.push_all(std::iter::once(datagram)) == 1
    }

    /// Queues datagrams (as many as fit) with one wake-up; returns how many were queued.
    fn push_all(&self, datagrams: impl ExactSizeIterator<Item = Datagram>) -> u64 {
        let (queued, waker, sleeping) = {
            let mut state = self.lock();
            let room = self.capacity.saturating_sub(state.queue.len());
            let queued = datagrams.len().min(room);
            state.queue.extend(datagrams.take(queued));
            (queued as u64, if queued > 0 { state.waker.take() } else { None }, state.sleepers > 0)
        };
        if queued > 0 && sleeping {
            self.ready.notify_one();
        }
        if let Some(w) = waker {
            w.wake();
        }
        queued
    }

    /// Moves every waiting datagram into `out`; never blocks.
    pub fn drain_into(&self, out: &mut Vec<Datagram>) {
        out.extend(self.lock().queue.drain(..));
    }

    /// Makes a thread blocked in `wait` (or the next one to call it) return, with or without datagrams.
    pub fn wake(&self) {
        let sleeping = {
            let mut state = self.lock();
            state.woken = true;
            state.sleepers > 0
        };
        if sleeping {
            self.ready.notify_one();
        }
    }

    /// Blocks until a datagram waits, `wake` is called or `deadline` passes (None: no deadline).
    pub fn wait(&self, deadline: Option<Instant>) {
        let mut state = self.lock();
        while state.queue.is_empty() && !std::mem::take(&mut state.woken) {
            let timeout = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(t) if !t.is_zero() => Some(t),
                    _ => return,
                },
            };
            state.sleepers += 1;
            state = match timeout {
                None => self.ready.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(t) => self.ready.wait_timeout(state, t).unwrap_or_else(|e| e.into_inner()).0,
            };
            state.sleepers -= 1;
        }
    }

    /// Up to `max` datagrams, or none and `waker` registered to be woken by the next one.
    pub fn pop_or_register(&self, max: usize, waker: &Waker, out: &mut Vec<Datagram>) {
        let mut state = self.lock();
        if state.queue.is_empty() {
            state.waker = Some(waker.clone());
            return;
        }
        let n = max.min(state.queue.len());
        out.extend(state.queue.drain(..n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_datagram_reaches_the_inbox_its_address_is_bound_to() {
        let net = MemNet::new();
        let inbox = Inbox::new(8);
        net.bind(addr("127.0.0.2:1000"), &inbox).unwrap();
        net.bind(addr("127.0.0.2:1001"), &inbox).unwrap();
        assert!(net.send(addr("127.0.0.1:5"), addr("127.0.0.2:1001"), b"hi"));
        assert!(!net.send(addr("127.0.0.1:5"), addr("127.0.0.2:1002"), b"nobody"));
        let mut got = Vec::new();
        inbox.drain_into(&mut got);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].from, got[0].to, &got[0].data[..]), (addr("127.0.0.1:5"), addr("127.0.0.2:1001"), &b"hi"[..]));
        assert_eq!((net.delivered(), net.dropped()), (1, 1));
        assert!(net.bind(addr("127.0.0.2:1000"), &inbox).is_err(), "an address is bound once");
    }

    #[test]
    fn a_batch_reaches_each_inbox_in_order_and_what_does_not_fit_is_dropped() {
        let net = MemNet::new();
        let (a, b) = (Inbox::new(8), Inbox::new(2));
        net.bind(addr("127.0.0.2:1"), &a).unwrap();
        net.bind(addr("127.0.0.3:1"), &b).unwrap();
        let from = addr("127.0.0.1:9");
        let d = |to: &str, x: u8| Datagram { from, to: addr(to), data: BytesMut::from(&[x][..]), received: None, tcp: false };
        let mut batch = vec![d("127.0.0.2:1", 1), d("127.0.0.2:1", 2), d("127.0.0.3:1", 3), d("127.0.0.3:1", 4),
            d("127.0.0.3:1", 5), d("127.0.0.4:1", 6), d("127.0.0.2:1", 7)];
        net.send_batch(&mut batch);
        assert!(batch.is_empty());
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        a.drain_into(&mut got_a);
        b.drain_into(&mut got_b);
        assert_eq!(got_a.iter().map(|d| d.data[0]).collect::<Vec<_>>(), [1, 2, 7]);
        assert_eq!(got_b.iter().map(|d| d.data[0]).collect::<Vec<_>>(), [3, 4], "a full inbox drops the rest");
        assert_eq!((net.delivered(), net.dropped()), (5, 2));
    }

    #[test]
    fn a_full_inbox_drops_like_a_socket_buffer() {
        let net = MemNet::new();
        let inbox = Inbox::new(2);
        let to = addr("127.0.0.2:9");
        net.bind(to, &inbox).unwrap();
        let sent: Vec<bool> = (0..3).map(|_| net.send(to, to, b"x")).collect();
        assert_eq!(sent, [true, true, false]);
    }

    #[test]
    fn wait_returns_at_the_deadline_or_when_a_datagram_arrives() {
        let net = MemNet::new();
        let inbox = Inbox::new(8);
        let to = addr("127.0.0.2:9");
        net.bind(to, &inbox).unwrap();
        let t0 = Instant::now();
        inbox.wait(Some(t0 + std::time::Duration::from_millis(20)));
        assert!(t0.elapsed() >= std::time::Duration::from_millis(20));
        let sender = std::thread::spawn({
            let net = Arc::clone(&net);
            move || {
                std::thread::sleep(std::time::Duration::from_millis(10));
                net.send(to, to, b"x");
            }
        });
        inbox.wait(None);
        sender.join().unwrap();
        let mut got = Vec::new();
        inbox.drain_into(&mut got);
        assert_eq!(got.len(), 1);
    }
}
