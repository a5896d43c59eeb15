//! ICE-TCP, passive side (RFC 6544): for patients whose network blocks UDP (hospital guest Wi-Fi, corporate
//! firewalls). Each shard listens on TCP on the same port number as its UDP sockets, on every bind address, so a
//! clinic opens one port per shard for both protocols. A browser connects (its candidates are `tcptype active`),
//! and every packet travels as an RFC 4571 frame: a two-byte length, then the packet.
//!
//! Streams live in the shard's epoll set next to the UDP sockets; readiness comes from `wait` and is handled in the
//! next `recv`. What a connection writes is queued per stream up to `MAX_PENDING`: TCP cannot drop a packet in the
//! middle of a stream, so a stream whose peer does not read loses whole packets at the queue's end instead, as UDP
//! would lose them on the path, and the connection's NACK/PLI machinery recovers as it does for UDP.

use super::memnet::Datagram;
use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use rtc::shared::tcp_framing::TcpFrameDecoder;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Tokens from here on are TCP listeners (`+ i`); streams start at `STREAM_BASE`.
pub const LISTENER_BASE: usize = 1 << 20;
const STREAM_BASE: usize = 1 << 21;
/// Streams one shard holds at most: ICE-TCP is the fallback of a few, not the path of many; beyond this a new
/// connection is refused rather than letting anyone open sockets without limit.
const MAX_STREAMS: usize = 1024;
/// Bytes queued for one stream at most (about a third of a second of 1.5 Mbit/s video plus audio).
const MAX_PENDING: usize = 64 * 1024;
/// A frame's length field is 16 bits.
const MAX_FRAME: usize = u16::MAX as usize;

struct Stream {
    socket: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    decoder: TcpFrameDecoder,
    pending: Vec<u8>,
}

pub struct IceTcp {
    listeners: Vec<(TcpListener, SocketAddr)>,
    streams: HashMap<Token, Stream>,
    by_pair: HashMap<(SocketAddr, SocketAddr), Token>,
    next: usize,
    /// Tokens `wait` saw ready, handled by the next `recv`.
    ready: Vec<Token>,
    buf: Box<[u8; 16 * 1024]>,
    /// Packets not sent because a stream's queue was full, or refused streams.
    pub dropped: Arc<AtomicU64>,
}

impl IceTcp {
    /// Listens on each of `addrs` (the shard's UDP addresses, so the same port numbers).
    pub fn bind(addrs: &[SocketAddr], registry: &Registry) -> io::Result<Self> {
        let mut listeners = Vec::with_capacity(addrs.len());
        for (i, addr) in addrs.iter().enumerate() {
            let mut listener = TcpListener::bind(*addr)?;
            registry.register(&mut listener, Token(LISTENER_BASE + i), Interest::READABLE)?;
            listeners.push((listener, *addr));
        }
        Ok(Self {
            listeners,
            streams: HashMap::new(),
            by_pair: HashMap::new(),
            next: STREAM_BASE,
            ready: Vec::new(),
            buf: Box::new([0; 16 * 1024]),
            dropped: Arc::default(),
        })
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, a)| *a).collect()
    }

    pub fn owns(token: Token) -> bool {
        token.0 >= LISTENER_BASE && token.0 != usize::MAX
    }

    /// Notes a token `wait` reported ready.
    pub fn mark_ready(&mut self, token: Token) {
        self.ready.push(token);
    }

    /// Accepts and reads whatever was reported ready; complete frames become datagrams (`to` our address,
    /// `from` the peer's, marked `tcp`).
    pub fn recv(&mut self, registry: &Registry, out: &mut Vec<Datagram>) {
        let mut ready = std::mem::take(&mut self.ready);
        ready.sort_unstable();
        ready.dedup();
        for token in ready.drain(..) {
            if token.0 < STREAM_BASE {
                self.accept(token.0 - LISTENER_BASE, registry);
            } else {
                self.read(token, registry, out);
                self.write(token, registry);
            }
        }
        self.ready = ready;
    }

    fn accept(&mut self, i: usize, registry: &Registry) {
        let Some((listener, local)) = self.listeners.get(i) else { return };
        let local = *local;
        loop {
            let (mut socket, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "ICE-TCP accept failed");
                    return;
                }
            };
            if self.streams.len() >= MAX_STREAMS {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue; // dropping it closes it
            }
            let _ = socket.set_nodelay(true);
            let token = Token(self.next);
            self.next += 1;
            if registry.register(&mut socket, token, Interest::READABLE | Interest::WRITABLE).is_err() {
                continue;
            }
            self.by_pair.insert((local, peer), token);
            self.streams.insert(token, Stream { socket, local, peer, decoder: TcpFrameDecoder::new(), pending: Vec::new() });
            // Edge-triggered: data that came with the connection is read now, not at an edge that already passed.
            self.ready.push(token);
        }
    }

    fn read(&mut self, token: Token, registry: &Registry, out: &mut Vec<Datagram>) {
        let Some(stream) = self.streams.get_mut(&token) else { return };
        let mut closed = false;
        loop {
            match stream.socket.read(&mut self.buf[..]) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => stream.decoder.extend_from_slice(&self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let received = Some(Instant::now());
        while let Some(packet) = stream.decoder.next_packet() {
            out.push(Datagram { from: stream.peer, to: stream.local, data: BytesMut::from(&packet[..]), received, tcp: true });
        }
        if closed {
            self.close(token, registry);
        }
    }

    /// Writes what is queued for the stream until the kernel takes no more.
    fn write(&mut self, token: Token, registry: &Registry) {
        let Some(stream) = self.streams.get_mut(&token) else { return };
        let mut written = 0;
        while written < stream.pending.len() {
            match stream.socket.write(&stream.pending[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(token, registry);
                    return;
                }
            }
        }
        stream.pending.drain(..written);
    }

    /// Queues `d` (from our address to the peer's) on its stream as one frame and writes what it can. A packet
    /// for a stream that is gone, or whose queue is full, is dropped.
    pub fn send(&mut self, d: &Datagram, registry: &Registry) {
        let Some(&token) = self.by_pair.get(&(d.from, d.to)) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(stream) = self.streams.get_mut(&token) else { return };
        if d.data.len() > MAX_FRAME || stream.pending.len() + 2 + d.data.len() > MAX_PENDING {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        stream.pending.extend_from_slice(&(d.data.len() as u16).to_be_bytes());
        stream.pending.extend_from_slice(&d.data);
        self.write(token, registry);
    }

    fn close(&mut self, token: Token, registry: &Registry) {
        if let Some(mut stream) = self.streams.remove(&token) {
            let _ = registry.deregister(&mut stream.socket);
            self.by_pair.remove(&(stream.local, stream.peer));
        }
    }

    /// Streams open now.
    #[cfg(test)]
    fn streams(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Duration;

    /// Runs `wait`'s part: polls and marks every TCP token ready.
    fn pump(poll: &mut Poll, tcp: &mut IceTcp, out: &mut Vec<Datagram>) {
        let mut events = Events::with_capacity(64);
        poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
        for e in events.iter() {
            if IceTcp::owns(e.token()) {
                tcp.mark_ready(e.token());
            }
        }
        tcp.recv(poll.registry(), out);
    }

    /// A listener on a loopback port the OS picks, and a client connected to it.
    fn listening() -> (Poll, IceTcp, SocketAddr, std::net::TcpStream) {
        let poll = Poll::new().unwrap();
        let mut tcp = IceTcp::bind(&["127.0.0.1:0".parse().unwrap()], poll.registry()).unwrap();
        // Port 0 bound a real port: the listener knows it.
        let addr = tcp.listeners[0].0.local_addr().unwrap();
        tcp.listeners[0].1 = addr;
        let client = std::net::TcpStream::connect(addr).unwrap();
        (poll, tcp, addr, client)
    }

    #[test]
    fn frames_arrive_whole_whatever_the_segments_and_replies_go_back_framed() {
        let (mut poll, mut tcp, addr, mut client) = listening();
        // One frame cut in two writes, then two frames in one.
        client.write_all(&[0, 5, b'h', b'e']).unwrap();
        client.flush().unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while tcp.streams() == 0 && Instant::now() < deadline {
            pump(&mut poll, &mut tcp, &mut out);
        }
        client.write_all(&[b'l', b'l', b'o', 0, 1, b'!', 0, 2, b'o', b'k']).unwrap();
        while out.len() < 3 && Instant::now() < deadline {
            pump(&mut poll, &mut tcp, &mut out);
        }
        let got: Vec<&[u8]> = out.iter().map(|d| &d.data[..]).collect();
        assert_eq!(got, [&b"hello"[..], b"!", b"ok"]);
        assert!(out.iter().all(|d| d.tcp && d.to == addr && d.from == client.local_addr().unwrap()));

        let reply = Datagram { from: addr, to: client.local_addr().unwrap(), data: BytesMut::from(&b"pong"[..]), received: None, tcp: true };
        tcp.send(&reply, poll.registry());
        let mut back = [0u8; 6];
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        std::io::Read::read_exact(&mut client, &mut back).unwrap();
        assert_eq!(&back, &[0, 4, b'p', b'o', b'n', b'g']);
    }

    #[test]
    fn a_peer_that_does_not_read_loses_packets_not_memory() {
        let (mut poll, mut tcp, addr, client) = listening();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while tcp.streams() == 0 && Instant::now() < deadline {
            pump(&mut poll, &mut tcp, &mut out);
        }
        let packet = Datagram { from: addr, to: client.local_addr().unwrap(), data: BytesMut::from(&[7u8; 1200][..]), received: None, tcp: true };
        for _ in 0..20_000 {
            tcp.send(&packet, poll.registry());
        }
        let stream = tcp.streams.values().next().unwrap();
        assert!(stream.pending.len() <= MAX_PENDING, "{} bytes queued", stream.pending.len());
        assert!(tcp.dropped.load(Ordering::Relaxed) > 0, "24 MB cannot all have gone into the kernel");
    }
}
