//! A shard's UDP sockets: one per bind address, all on the shard's port, read and written in batches.
//!
//! `recvmmsg` takes up to `BATCH` datagrams per system call and `sendmmsg` sends a whole pass of the shard loop's
//! output (every subscriber's copy of every packet) in one call per `BATCH`, instead of a system call per packet
//! as a socket per peer connection needs. The thread sleeps in `epoll` (mio) on the sockets and a waker, so a
//! control command interrupts the wait at once.
//!
//! No crate offers `sendmmsg` with per-destination batching that mio's sockets can use, so the two calls are
//! made here with libc, on buffers this struct owns.

use super::memnet::Datagram;
use super::transport::{Transport, Waker};
use bytes::BytesMut;
use std::borrow::Borrow;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};
use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Datagrams per `recvmmsg` / `sendmmsg` call.
const BATCH: usize = 64;
/// Large enough for any datagram on a 1,500-byte path (WebRTC stays under 1,280).
const MAX_DATAGRAM: usize = 2048;
/// Socket buffers: about a quarter second of a busy shard's traffic, so a scheduling hiccup drops nothing.
const SOCKET_BUFFER: usize = 4 << 20;
const WAKER: Token = Token(usize::MAX);

pub struct UdpTransport {
    sockets: Vec<UdpSocket>,
    addrs: Vec<SocketAddr>,
    poll: Poll,
    events: Events,
    waker: Arc<mio::Waker>,
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    /// Datagrams the kernel would not take (send buffer full after a retry).
    pub dropped: Arc<AtomicU64>,
}

/// Binds one socket on `addr` with large buffers, non-blocking.
fn bind_one(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

impl UdpTransport {
    /// Binds `port` (0: one the OS picks, then the same on every address) on each of `ips`.
    pub fn bind(ips: &[std::net::IpAddr], port: u16) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut sockets = Vec::new();
        let mut addrs = Vec::new();
        let mut port = port;
        for ip in ips {
            let mut socket = bind_one(SocketAddr::new(*ip, port))?;
            let local = socket.local_addr()?;
            port = local.port();
            poll.registry().register(&mut socket, Token(sockets.len()), Interest::READABLE)?;
            sockets.push(socket);
            addrs.push(local);
        }
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        Ok(Self {
            sockets,
            addrs,
            poll,
            events: Events::with_capacity(64),
            waker,
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH].into_boxed_slice(),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The socket to send from for local address `from` (the selected candidate pair's): the one bound to its IP,
    /// else the first (a public address advertised for 1:1 NAT is not bound here).
    fn socket_for(&self, from: SocketAddr) -> usize {
        self.addrs.iter().position(|a| a.ip() == from.ip()).unwrap_or(0)
    }

    fn recv_socket(&mut self, i: usize, out: &mut Vec<Datagram>) -> io::Result<()> {
        let fd = self.sockets[i].as_raw_fd();
        let local = self.addrs[i];
        loop {
            // SAFETY: every pointer below points into buffers that outlive the call: `self.bufs`, and `iovs`,
            // `names` and `hdrs` on this stack frame. recvmmsg writes at most `BATCH` entries.
            let mut names: [SockAddrStorage; BATCH] = std::array::from_fn(|_| SockAddrStorage::zeroed());
            let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for k in 0..BATCH {
                iovs[k] = libc::iovec { iov_base: self.bufs[k].as_mut_ptr().cast(), iov_len: MAX_DATAGRAM };
                hdrs[k].msg_hdr.msg_name = (&mut names[k] as *mut SockAddrStorage).cast();
                hdrs[k].msg_hdr.msg_namelen = size_of::<SockAddrStorage>() as libc::socklen_t;
                hdrs[k].msg_hdr.msg_iov = &mut iovs[k];
                hdrs[k].msg_hdr.msg_iovlen = 1;
            }
            let n = unsafe { libc::recvmmsg(fd, hdrs.as_mut_ptr(), BATCH as _, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(()),
                    // An ICMP error from an earlier send to a peer that went away: not this socket's failure.
                    io::ErrorKind::ConnectionRefused => continue,
                    _ => Err(e),
                };
            }
            let n = n as usize;
            for k in 0..n {
                let len = hdrs[k].msg_len as usize;
                // SAFETY: the kernel filled `names[k]` with `msg_namelen` bytes of a socket address.
                let storage = std::mem::replace(&mut names[k], SockAddrStorage::zeroed());
                let from = unsafe { SockAddr::new(storage, hdrs[k].msg_hdr.msg_namelen) };
                let Some(from) = from.as_socket() else { continue };
                out.push(Datagram { from, to: local, data: BytesMut::from(&self.bufs[k][..len.min(MAX_DATAGRAM)]) });
            }
            if n < BATCH {
                // Fewer than asked for: the queue was empty a moment ago, and epoll reports anything newer.
                return Ok(());
            }
        }
    }

    /// Sends `batch[..]` (all for socket `i`) with as few `sendmmsg` calls as it takes.
    /// On the packet path, so nothing here allocates: the headers of each call live on the stack, as `recv`'s do.
    fn send_socket<D: Borrow<Datagram>>(&self, i: usize, batch: &[D]) {
        let fd = self.sockets[i].as_raw_fd();
        let mut sent = 0;
        let mut retried = false;
        while sent < batch.len() {
            let chunk = &batch[sent..(sent + BATCH).min(batch.len())];
            let names: [Option<SockAddr>; BATCH] = std::array::from_fn(|k| chunk.get(k).map(|d| SockAddr::from(d.borrow().to)));
            // SAFETY: the headers point into `names`, `iovs` and the datagrams' buffers, all alive across the call;
            // sendmmsg only reads them, and only the first `chunk.len()`.
            let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for (k, (d, name)) in chunk.iter().zip(&names).enumerate() {
                let (d, name) = (d.borrow(), name.as_ref().expect("one name per datagram of the chunk"));
                iovs[k] = libc::iovec { iov_base: d.data.as_ptr() as *mut _, iov_len: d.data.len() };
                hdrs[k].msg_hdr.msg_name = name.as_ptr() as *mut _;
                hdrs[k].msg_hdr.msg_namelen = name.len();
                hdrs[k].msg_hdr.msg_iov = &mut iovs[k];
                hdrs[k].msg_hdr.msg_iovlen = 1;
            }
            let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), chunk.len() as _, 0) };
            if n > 0 {
                sent += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if !retried => {
                    // The send buffer is full: give the kernel a moment once, then drop what is left (UDP would).
                    retried = true;
                    std::thread::yield_now();
                }
                _ => {
                    // A destination that refuses (or anything else): skip that one datagram, keep the rest.
                    if e.kind() != io::ErrorKind::WouldBlock {
                        tracing::debug!(error = %e, "media datagram not sent");
                        sent += 1;
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.dropped.fetch_add((batch.len() - sent) as u64, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

impl Transport for UdpTransport {
    fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    fn recv(&mut self, out: &mut Vec<Datagram>) -> io::Result<()> {
        for i in 0..self.sockets.len() {
            self.recv_socket(i, out)?;
        }
        Ok(())
    }

    fn send(&mut self, batch: &mut Vec<Datagram>) {
        if self.sockets.len() == 1 {
            self.send_socket(0, batch);
        } else {
            for i in 0..self.sockets.len() {
                let mine: Vec<&Datagram> = batch.iter().filter(|d| self.socket_for(d.from) == i).collect();
                if !mine.is_empty() {
                    self.send_socket(i, &mine);
                }
            }
        }
        batch.clear();
    }

    fn wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match self.poll.poll(&mut self.events, timeout) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        }
    }

    fn waker(&self) -> Waker {
        let waker = Arc::clone(&self.waker);
        Arc::new(move || {
            let _ = waker.wake();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_batch_goes_out_and_comes_back_in_through_one_socket_each() {
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let mut a = UdpTransport::bind(&[ip], 0).unwrap();
        let mut b = UdpTransport::bind(&[ip], 0).unwrap();
        let (from, to) = (a.local_addrs()[0], b.local_addrs()[0]);
        let mut batch: Vec<Datagram> =
            (0..150u8).map(|i| Datagram { from, to, data: BytesMut::from(&[i; 100][..]) }).collect();
        a.send(&mut batch);
        assert!(batch.is_empty());
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < 150 && Instant::now() < deadline {
            b.wait(Some(Instant::now() + Duration::from_millis(50))).unwrap();
            b.recv(&mut got).unwrap();
        }
        assert_eq!(got.len(), 150);
        assert!(got.iter().enumerate().all(|(i, d)| d.from == from && d.to == to && d.data[..] == [i as u8; 100][..]));
    }

    #[test]
    fn the_waker_interrupts_a_wait() {
        let mut t = UdpTransport::bind(&["127.0.0.1".parse().unwrap()], 0).unwrap();
        let wake = t.waker();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            wake();
        });
        let t0 = Instant::now();
        t.wait(Some(t0 + Duration::from_secs(5))).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(2));
        waker.join().unwrap();
    }
}
