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
        let delivered = inbox.is_some_and(|inbox| inbox.push(Datagram { from, to, data: BytesMut::from(data) }));
        let counter = if delivered { &self.delivered } else { &self.dropped };
        counter.fetch_add(1, Ordering::Relaxed);
        delivered
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
}

impl Inbox {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(InboxState::default()), ready: Condvar::new(), capacity })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, datagram: Datagram) -> bool {
        let waker = {
            let mut state = self.lock();
            if state.queue.len() >= self.capacity {
                return false;
            }
            state.queue.push_back(datagram);
            state.waker.take()
        };
        self.ready.notify_one();
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Moves every waiting datagram into `out`; never blocks.
    pub fn drain_into(&self, out: &mut Vec<Datagram>) {
        out.extend(self.lock().queue.drain(..));
    }

    /// Makes a thread blocked in `wait` (or the next one to call it) return, with or without datagrams.
    pub fn wake(&self) {
        self.lock().woken = true;
        self.ready.notify_one();
    }

    /// Blocks until a datagram waits, `wake` is called or `deadline` passes (None: no deadline).
    pub fn wait(&self, deadline: Option<Instant>) {
        let mut state = self.lock();
        while state.queue.is_empty() && !std::mem::take(&mut state.woken) {
            match deadline {
                None => state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return;
                    }
                    state = self.ready.wait_timeout(state, d - now).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
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
