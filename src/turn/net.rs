//! The embedded TURN server's sockets: a task per listener (UDP datagrams; TCP and TLS accept loops with a task
//! per stream), a task per relay socket, and one task that owns the `Engine` and is the only one that decides.
//! Everything reaches it through one bounded queue; what it sends goes out without waiting (`try_send`): a
//! datagram that does not fit a socket's buffer, or a frame that does not fit a slow stream's queue, is dropped
//! as the network would drop it, and no client can hold the engine up.

use super::engine::{Engine, Io, Kind, family_of};
use super::framing::{Frame, MAX_FRAME, next_frame, pad_for_stream};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use turn_server_proto::types::AddressFamily;

/// The engine's inbox.
const EVENT_QUEUE: usize = 4096;
/// Frames waiting to be written to one client stream.
const STREAM_QUEUE: usize = 256;
/// A stream that sends nothing for this long is closed. Browsers check consent every few seconds and refresh
/// permissions every few minutes, so only a dead or idle client stays quiet this long.
const STREAM_IDLE: Duration = Duration::from_secs(120);
/// How long a TLS client may take over its handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

pub(super) enum Event {
    Client { listener: usize, from: SocketAddr, data: Vec<u8> },
    Opened { listener: usize, from: SocketAddr, stream: u64, writer: mpsc::Sender<Vec<u8>> },
    Closed { listener: usize, from: SocketAddr, stream: u64 },
    Peer { relay: SocketAddr, from: SocketAddr, data: Vec<u8> },
}

/// A bound listener, before its task starts.
pub(super) enum Bound {
    Udp(Arc<UdpSocket>),
    Stream(TcpListener, Option<tokio_rustls::TlsAcceptor>),
}

/// A client stream's id and the queue its task writes from.
type StreamWriter = (u64, mpsc::Sender<Vec<u8>>);

/// The sockets the engine's decisions act on.
struct NetIo {
    udp: HashMap<usize, Arc<UdpSocket>>,
    /// (listener, client address) → its stream.
    streams: HashMap<(usize, SocketAddr), StreamWriter>,
    relays: HashMap<SocketAddr, (Arc<UdpSocket>, AbortHandle)>,
    relay_ip: IpAddr,
    events: mpsc::Sender<Event>,
}

impl Io for NetIo {
    fn send_client(&mut self, listener: usize, to: SocketAddr, data: Vec<u8>) {
        if let Some(socket) = self.udp.get(&listener) {
            let _ = socket.try_send_to(&data, to);
        } else if let Some((_, writer)) = self.streams.get(&(listener, to)) {
            let _ = writer.try_send(data);
        }
    }

    fn bind_relay(&mut self, family: AddressFamily) -> std::io::Result<SocketAddr> {
        if family != family_of(self.relay_ip) {
            return Err(std::io::ErrorKind::Unsupported.into());
        }
        let std_socket = std::net::UdpSocket::bind((self.relay_ip, 0))?;
        std_socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        let relay = socket.local_addr()?;
        let events = self.events.clone();
        let reader = Arc::clone(&socket);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = reader.recv_from(&mut buf).await {
                // A peer's datagram the engine has no room for is lost, as on a congested path.
                let _ = events.try_send(Event::Peer { relay, from, data: buf[..n].to_vec() });
            }
        });
        self.relays.insert(relay, (socket, task.abort_handle()));
        Ok(relay)
    }

    fn send_peer(&mut self, relay: SocketAddr, to: SocketAddr, data: &[u8]) {
        if let Some((socket, _)) = self.relays.get(&relay) {
            let _ = socket.try_send_to(data, to);
        }
    }

    fn close_relay(&mut self, relay: SocketAddr) {
        if let Some((_, task)) = self.relays.remove(&relay) {
            task.abort();
        }
    }

    fn close_client(&mut self, listener: usize, client: SocketAddr) {
        // Dropping the writer ends the stream's task, which closes the connection.
        self.streams.remove(&(listener, client));
    }
}

impl Drop for NetIo {
    fn drop(&mut self) {
        for (_, (_, task)) in self.relays.drain() {
            task.abort();
        }
    }
}

/// Starts every listener's task and the engine's; returns their abort handles.
pub(super) fn spawn(
    mut engine: Engine,
    bound: Vec<Bound>,
    relay_ip: IpAddr,
    max_streams: usize,
) -> Vec<AbortHandle> {
    let (events, mut inbox) = mpsc::channel(EVENT_QUEUE);
    let mut io = NetIo { udp: HashMap::new(), streams: HashMap::new(), relays: HashMap::new(), relay_ip, events: events.clone() };
    let streams = Arc::new(Semaphore::new(max_streams));
    let mut tasks = Vec::new();
    for (listener, b) in bound.into_iter().enumerate() {
        let events = events.clone();
        let task = match b {
            Bound::Udp(socket) => {
                io.udp.insert(listener, Arc::clone(&socket));
                tokio::spawn(read_datagrams(socket, listener, events))
            }
            Bound::Stream(tcp, tls) => tokio::spawn(accept_streams(tcp, tls, listener, events, Arc::clone(&streams))),
        };
        tasks.push(task.abort_handle());
    }
    drop(events);
    let engine_task = tokio::spawn(async move {
        let mut renew = tokio::time::interval(Duration::from_secs(60));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Never sleep for less than a millisecond: a timer the engine leaves in the past must not spin.
            let wake = engine.next_wake().map(|w| w.max(std::time::Instant::now() + Duration::from_millis(1)));
            let timer = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = inbox.recv() => {
                    let Some(event) = event else { break };
                    handle(&mut engine, &mut io, event);
                }
                _ = timer => engine.tick(&mut io),
                _ = renew.tick() => {
                    let renewed = engine.renew_idle();
                    if renewed > 0 {
                        tracing::debug!(renewed, "TURN: idle listeners renewed (expired credentials forgotten)");
                    }
                }
            }
        }
    });
    tasks.push(engine_task.abort_handle());
    tasks
}

fn handle(engine: &mut Engine, io: &mut NetIo, event: Event) {
    match event {
        Event::Client { listener, from, data } => engine.on_client(io, listener, from, &data),
        Event::Peer { relay, from, data } => engine.on_peer(io, relay, from, &data),
        Event::Opened { listener, from, stream, writer } => {
            io.streams.insert((listener, from), (stream, writer));
            engine.stream_opened(listener);
        }
        Event::Closed { listener, from, stream } => {
            // Only the stream that is still registered under this address: a newer one may have taken it.
            let current = io.streams.get(&(listener, from)).is_some_and(|(id, _)| *id == stream);
            if current {
                io.streams.remove(&(listener, from));
            }
            engine.stream_closed(io, listener, from, current);
        }
    }
}

async fn read_datagrams(socket: Arc<UdpSocket>, listener: usize, events: mpsc::Sender<Event>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if events.send(Event::Client { listener, from, data: buf[..n].to_vec() }).await.is_err() {
                    return;
                }
            }
            // An ICMP error for an earlier send surfaces here on Linux; the socket itself is fine.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

static STREAM_IDS: AtomicU64 = AtomicU64::new(1);

async fn accept_streams(
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    listener: usize,
    events: mpsc::Sender<Event>,
    limit: Arc<Semaphore>,
) {
    loop {
        let (socket, from) = match tcp.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors, or a connection reset before accept: wait a moment rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else { continue };
        let _ = socket.set_nodelay(true);
        let events = events.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_stream(socket, listener, from, events).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(socket)).await {
                        serve_stream(stream, listener, from, events).await;
                    }
                }
            }
        });
    }
}

/// One client's stream: frames in (padding off), frames out (padding on), until either side stops.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(stream: S, listener: usize, from: SocketAddr, events: mpsc::Sender<Event>) {
    let id = STREAM_IDS.fetch_add(1, Ordering::Relaxed);
    let (writer, mut outbox) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    if events.send(Event::Opened { listener, from, stream: id, writer }).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    'stream: loop {
        tokio::select! {
            out = outbox.recv() => {
                let Some(frame) = out else { break };
                if wr.write_all(&pad_for_stream(frame)).await.is_err() {
                    break;
                }
            }
            read = tokio::time::timeout(STREAM_IDLE, rd.read(&mut chunk)) => {
                let n = match read {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match next_frame(&buf) {
                        Frame::Complete { len, consumed } => {
                            let data = buf[..len].to_vec();
                            buf.drain(..consumed);
                            if events.send(Event::Client { listener, from, data }).await.is_err() {
                                break 'stream;
                            }
                        }
                        Frame::Partial if buf.len() <= MAX_FRAME => break,
                        Frame::Partial | Frame::Garbage => break 'stream,
                    }
                }
            }
        }
    }
    let _ = wr.shutdown().await;
    let _ = events.send(Event::Closed { listener, from, stream: id }).await;
}

/// Binds one listener of `kind` on `addr`.
pub(super) async fn bind(kind: Kind, addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> std::io::Result<Bound> {
    Ok(match kind {
        Kind::Udp => Bound::Udp(Arc::new(UdpSocket::bind(addr).await?)),
        Kind::Tcp | Kind::Tls => Bound::Stream(TcpListener::bind(addr).await?, tls),
    })
}

impl Bound {
    pub(super) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Self::Udp(s) => s.local_addr(),
            Self::Stream(l, _) => l.local_addr(),
        }
    }
}
