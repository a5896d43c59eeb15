//! A shard's UDP sockets: one per bind address, all on the shard's port, read and written in batches.
//!
//! `recvmmsg` takes up to `BATCH` datagrams per system call and `sendmmsg` sends a whole pass of the shard loop's
//! output (every subscriber's copy of every packet) in one call per `BATCH`, instead of a system call per packet
//! as a socket per peer connection needs. The thread sleeps in `epoll` (mio) on the sockets and a waker, so a
//! control command interrupts the wait at once.
//!
//! Where consecutive datagrams go to one destination with one size (a video frame's packets to one subscriber),
//! they leave as one message with UDP segmentation offload (GSO): the kernel walks its UDP/IP path once and cuts
//! the datagrams apart at the device. A kernel or device that refuses GSO turns it off for the socket set.
//!
//! With ICE-TCP on (`tcp`), the same epoll set holds the shard's TCP listeners and streams.
//!
//! No crate offers `sendmmsg` with per-destination batching and GSO that mio's sockets can use, so the calls are
//! made here with libc, on buffers this struct owns.

use super::memnet::Datagram;
use super::tcp::IceTcp;
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

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
    /// Whether runs to one destination go out as one GSO message; cleared if the kernel refuses one.
    gso: AtomicBool,
    /// ICE-TCP listeners and streams on the same addresses, when enabled.
    tcp: Option<IceTcp>,
}

/// Binds one socket on `addr` with large buffers, non-blocking.
fn bind_one(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    // Receive timestamps, for the forwarding-delay histogram: they include the time a datagram waited in the
    // socket for the shard, which a timestamp taken after `recvmmsg` would not.
    let on: libc::c_int = 1;
    // SAFETY: a valid socket, and an int option value of the size given.
    let _ = unsafe {
        libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, (&on as *const libc::c_int).cast(), size_of::<libc::c_int>() as _)
    };
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
            gso: AtomicBool::new(true),
            tcp: None,
        })
    }

    /// Also accepts ICE-TCP streams, on the same addresses and port numbers (TCP).
    pub fn enable_tcp(&mut self) -> io::Result<()> {
        self.tcp = Some(IceTcp::bind(&self.addrs, self.poll.registry())?);
        Ok(())
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
            // `names`, `controls` and `hdrs` on this stack frame. recvmmsg writes at most `BATCH` entries.
            let mut names: [SockAddrStorage; BATCH] = std::array::from_fn(|_| SockAddrStorage::zeroed());
            let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            let mut controls = [Control([0; CONTROL_BYTES]); BATCH];
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for k in 0..BATCH {
                iovs[k] = libc::iovec { iov_base: self.bufs[k].as_mut_ptr().cast(), iov_len: MAX_DATAGRAM };
                hdrs[k].msg_hdr.msg_name = (&mut names[k] as *mut SockAddrStorage).cast();
                hdrs[k].msg_hdr.msg_namelen = size_of::<SockAddrStorage>() as libc::socklen_t;
                hdrs[k].msg_hdr.msg_iov = &mut iovs[k];
                hdrs[k].msg_hdr.msg_iovlen = 1;
                hdrs[k].msg_hdr.msg_control = controls[k].0.as_mut_ptr().cast();
                hdrs[k].msg_hdr.msg_controllen = CONTROL_BYTES as _;
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
            // The kernel stamps arrivals on the wall clock; one reading of both clocks maps them to `Instant`s.
            let clocks = (Instant::now(), SystemTime::now());
            for k in 0..n {
                let len = hdrs[k].msg_len as usize;
                // SAFETY: the kernel filled `names[k]` with `msg_namelen` bytes of a socket address.
                let storage = std::mem::replace(&mut names[k], SockAddrStorage::zeroed());
                let from = unsafe { SockAddr::new(storage, hdrs[k].msg_hdr.msg_namelen) };
                let Some(from) = from.as_socket() else { continue };
                let received = receive_time(&hdrs[k].msg_hdr, clocks);
                out.push(Datagram { from, to: local, data: BytesMut::from(&self.bufs[k][..len.min(MAX_DATAGRAM)]), received, tcp: false });
            }
            if n < BATCH {
                // Fewer than asked for: the queue was empty a moment ago, and epoll reports anything newer.
                return Ok(());
            }
        }
    }

    /// Sends `batch[..]` (all for socket `i`) with as few `sendmmsg` calls as it takes, each run of datagrams
    /// that GSO can carry as one message (see [`runs`]). On the packet path, so nothing here allocates: the headers
    /// of each call live on the stack, as `recv`'s do.
    fn send_socket<D: Borrow<Datagram>>(&self, i: usize, batch: &[D]) {
        let fd = self.sockets[i].as_raw_fd();
        let mut sent = 0;
        let mut retried = false;
        // A GSO run the kernel refused with EIO/EINVAL, being sent again one datagram per message: if that works,
        // GSO was the trouble; if not, the destination was (a loopback socket cannot reach a LAN address), and GSO
        // stays on for everyone else.
        let mut probing: Option<usize> = None;
        while sent < batch.len() {
            let chunk = &batch[sent..(sent + BATCH).min(batch.len())];
            let gso = self.gso.load(Ordering::Relaxed) && probing.is_none();
            let mut runs = [(0usize, 0usize); BATCH];
            let count = split_runs(chunk, gso, &mut runs);
            let runs = &runs[..count];
            let names: [Option<SockAddr>; BATCH] = std::array::from_fn(|r| runs.get(r).map(|&(a, _)| SockAddr::from(chunk[a].borrow().to)));
            // SAFETY: the headers point into `names`, `iovs`, `controls` and the datagrams' buffers, all alive
            // across the call; sendmmsg only reads them, and only the first `runs.len()` headers, each of which
            // names `b - a` iovecs from `a` on, inside `iovs`.
            let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            for (k, d) in chunk.iter().enumerate() {
                let d = d.borrow();
                iovs[k] = libc::iovec { iov_base: d.data.as_ptr() as *mut _, iov_len: d.data.len() };
            }
            let mut controls = [Control([0; CONTROL_BYTES]); BATCH];
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for (r, &(a, b)) in runs.iter().enumerate() {
                let name = names[r].as_ref().expect("one name per run");
                let h = &mut hdrs[r].msg_hdr;
                h.msg_name = name.as_ptr() as *mut _;
                h.msg_namelen = name.len();
                h.msg_iov = unsafe { iovs.as_mut_ptr().add(a) };
                h.msg_iovlen = b - a;
                if b - a > 1 {
                    segment_size(h, &mut controls[r], chunk[a].borrow().data.len() as u16);
                }
            }
            let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), runs.len() as _, 0) };
            if n > 0 {
                if probing.take().is_some() {
                    tracing::info!("UDP segmentation offload refused: sending one datagram per message");
                    self.gso.store(false, Ordering::Relaxed);
                }
                sent += runs[..n as usize].iter().map(|&(a, b)| b - a).sum::<usize>();
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
                _ if gso && runs[0].1 - runs[0].0 > 1 && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {
                    // The route's device cannot checksum segments (EIO), something else about it refuses GSO, or
                    // the destination itself is refused: the run again, one datagram per message, tells which.
                    probing = Some(runs[0].1 - runs[0].0);
                }
                _ if e.kind() != io::ErrorKind::WouldBlock && probing.is_some() => {
                    // Refused one by one too: the destination, not GSO. Drop that whole run; GSO stays on.
                    let run = probing.take().unwrap_or(1).min(batch.len() - sent);
                    tracing::debug!(error = %e, "media datagrams not sent");
                    sent += run;
                    self.dropped.fetch_add(run as u64, Ordering::Relaxed);
                }
                _ => {
                    // A destination that refuses (or anything else): skip that run, keep the rest.
                    if e.kind() != io::ErrorKind::WouldBlock {
                        tracing::debug!(error = %e, "media datagram not sent");
                        let (a, b) = runs[0];
                        sent += b - a;
                        self.dropped.fetch_add((b - a) as u64, Ordering::Relaxed);
                        continue;
                    }
                    self.dropped.fetch_add((batch.len() - sent) as u64, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

/// Most segments the kernel takes in one GSO message (its UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;
/// A GSO message is one UDP datagram until the kernel cuts it: its payload must stay under 64 KiB.
const GSO_MAX_BYTES: usize = 60_000;
/// Room for one control message: a GSO segment size (CMSG_SPACE(2) = 24 on 64-bit Linux) or a receive timestamp
/// (CMSG_SPACE(16) = 32).
const CONTROL_BYTES: usize = 32;

#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; CONTROL_BYTES]);

/// Splits `chunk` into runs of one message each, written to `runs` as index ranges; returns how many. With `gso`,
/// a run is consecutive datagrams to one destination, all as long as the first except possibly the last, which
/// the kernel then cuts apart again (UDP segmentation offload): one trip down the network stack for a whole
/// video frame to one subscriber, whose packets a publisher's packetizer makes equal. Without, one per datagram.
fn split_runs<D: Borrow<Datagram>>(chunk: &[D], gso: bool, runs: &mut [(usize, usize); BATCH]) -> usize {
    let mut count = 0;
    let mut k = 0;
    while k < chunk.len() {
        let start = k;
        let first = chunk[k].borrow();
        let size = first.data.len();
        let mut bytes = size;
        k += 1;
        while gso && k < chunk.len() && k - start < GSO_MAX_SEGMENTS {
            let d = chunk[k].borrow();
            if d.to != first.to || d.data.len() > size || d.data.is_empty() || bytes + d.data.len() > GSO_MAX_BYTES {
                break;
            }
            bytes += d.data.len();
            k += 1;
            if d.data.len() < size {
                break; // a shorter one can only end a run
            }
        }
        runs[count] = (start, k);
        count += 1;
    }
    count
}

/// The kernel's receive timestamp of a datagram (SO_TIMESTAMPNS, on the wall clock) as an `Instant`, given one
/// simultaneous reading of both clocks. None if the message carries none.
fn receive_time(h: &libc::msghdr, (now, wall): (Instant, SystemTime)) -> Option<Instant> {
    // SAFETY: `h` is a header recvmmsg filled: its control buffer holds `msg_controllen` bytes of control
    // messages, which the CMSG macros walk without leaving it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                let stamped = SystemTime::UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
                // A stamp after our reading (clock steps) counts as now.
                return Some(now.checked_sub(wall.duration_since(stamped).unwrap_or_default()).unwrap_or(now));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// Asks the kernel to cut `h`'s payload into datagrams of `size` bytes (UDP_SEGMENT), in `control`.
fn segment_size(h: &mut libc::msghdr, control: &mut Control, size: u16) {
    // SAFETY: `control` is aligned for cmsghdr and CONTROL_BYTES ≥ CMSG_SPACE(2), so the first header and its
    // two data bytes lie inside it; `h` points at it for the length the kernel will read.
    unsafe {
        h.msg_control = control.0.as_mut_ptr().cast();
        h.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as _;
        let c = libc::CMSG_FIRSTHDR(h);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
    }
}

impl Transport for UdpTransport {
    fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp.as_ref().map(IceTcp::addrs).unwrap_or_default()
    }

    fn recv(&mut self, out: &mut Vec<Datagram>) -> io::Result<()> {
        for i in 0..self.sockets.len() {
            self.recv_socket(i, out)?;
        }
        if let Some(tcp) = &mut self.tcp {
            tcp.recv(self.poll.registry(), out);
        }
        Ok(())
    }

    fn send(&mut self, batch: &mut Vec<Datagram>) {
        if let Some(tcp) = &mut self.tcp
            && batch.iter().any(|d| d.tcp)
        {
            for d in batch.iter().filter(|d| d.tcp) {
                tcp.send(d, self.poll.registry());
            }
            batch.retain(|d| !d.tcp);
        }
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
        let result = match self.poll.poll(&mut self.events, timeout) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        };
        if let Some(tcp) = &mut self.tcp {
            for event in self.events.iter() {
                if IceTcp::owns(event.token()) {
                    tcp.mark_ready(event.token());
                }
            }
        }
        result
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

    /// Two transports on 127.0.0.1, one socket each.
    fn loopback_pair() -> (UdpTransport, UdpTransport) {
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        (UdpTransport::bind(&[ip], 0).unwrap(), UdpTransport::bind(&[ip], 0).unwrap())
    }

    /// What `t` receives until it has `n` datagrams or 2 s have passed.
    fn receive(t: &mut UdpTransport, n: usize) -> Vec<Datagram> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < n && Instant::now() < deadline {
            t.wait(Some(Instant::now() + Duration::from_millis(50))).unwrap();
            t.recv(&mut got).unwrap();
        }
        got
    }

    #[test]
    fn a_batch_goes_out_and_comes_back_in_through_one_socket_each() {
        let (mut a, mut b) = loopback_pair();
        let (from, to) = (a.local_addrs()[0], b.local_addrs()[0]);
        let mut batch = datagrams(from, to, &[100; 150]);
        a.send(&mut batch);
        assert!(batch.is_empty());
        let got = receive(&mut b, 150);
        assert_eq!(got.len(), 150);
        assert!(got.iter().enumerate().all(|(i, d)| d.from == from && d.to == to && d.data[..] == [i as u8; 100][..]));
    }

    fn datagrams(from: SocketAddr, to: SocketAddr, sizes: &[usize]) -> Vec<Datagram> {
        sizes.iter().enumerate().map(|(i, &n)| Datagram { from, to, data: BytesMut::from(&vec![i as u8; n][..]), received: None, tcp: false }).collect()
    }

    #[test]
    fn runs_are_one_destination_and_one_size_with_a_shorter_last() {
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let (from, x, y) = (addr(1), addr(5000), addr(5001));
        let mut batch = datagrams(from, x, &[1000, 1000, 1000, 400, 1000, 1000, 1200]);
        batch.extend(datagrams(from, y, &[1000, 1000]));
        batch.extend(datagrams(from, x, &[1000]));
        let mut runs = [(0, 0); BATCH];
        let n = split_runs(&batch, true, &mut runs);
        // A shorter one ends a run; a longer one starts the next; a new destination starts the next.
        assert_eq!(&runs[..n], &[(0, 4), (4, 6), (6, 7), (7, 9), (9, 10)]);
        let n = split_runs(&batch, false, &mut runs);
        assert_eq!(n, batch.len());
        assert!(runs[..n].iter().enumerate().all(|(i, &r)| r == (i, i + 1)));
        let many = datagrams(from, x, &[1200; BATCH]);
        let n = split_runs(&many, true, &mut runs);
        assert!(runs[..n].iter().all(|&(a, b)| b - a <= GSO_MAX_SEGMENTS && (b - a) * 1200 <= GSO_MAX_BYTES), "{:?}", &runs[..n]);
        assert_eq!(runs[n - 1].1, BATCH);
    }

    #[test]
    fn segmented_runs_arrive_as_the_datagrams_they_were() {
        let (mut a, mut b) = loopback_pair();
        let (from, to) = (a.local_addrs()[0], b.local_addrs()[0]);
        // Frames of equal packets with a shorter last, audio-sized ones between them: 200 datagrams.
        let sizes: Vec<usize> = (0..40).flat_map(|f| [1100, 1100, 1100, 700 + f, 120]).collect();
        let mut batch = datagrams(from, to, &sizes);
        let want: Vec<Vec<u8>> = batch.iter().map(|d| d.data.to_vec()).collect();
        a.send(&mut batch);
        let got = receive(&mut b, want.len());
        assert!(a.gso.load(Ordering::Relaxed), "loopback takes GSO");
        assert_eq!(a.dropped.load(Ordering::Relaxed), 0);
        let got: Vec<Vec<u8>> = got.into_iter().map(|d| d.data.to_vec()).collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "every datagram, whole and in order");
    }

    /// A destination the kernel refuses (here port 0: EINVAL, as a loopback socket sending to a LAN address
    /// gets) costs its own datagrams only: GSO stays on and the next destination's run still arrives.
    #[test]
    fn a_refused_destination_does_not_turn_gso_off() {
        let (mut a, mut b) = loopback_pair();
        let (from, to) = (a.local_addrs()[0], b.local_addrs()[0]);
        let refused = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut batch = datagrams(from, refused, &[1000; 5]);
        batch.extend(datagrams(from, to, &[1000; 5]));
        a.send(&mut batch);
        assert_eq!(receive(&mut b, 5).len(), 5);
        assert_eq!(a.dropped.load(Ordering::Relaxed), 5);
        assert!(a.gso.load(Ordering::Relaxed), "GSO is still on");
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
