//! The driver-based plane (webrtc-rs `PeerConnection`s) on the in-memory network: a webrtc-rs `Runtime` that is
//! tokio in everything but its UDP sockets, which become [`MemNet`] endpoints at the address the driver bound.
//! Only the forwarding benchmark uses it, for the baseline of the sans-IO plane.

use super::memnet::{DEFAULT_INBOX_CAPACITY, Datagram, Inbox, MemNet};
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime, TokioRuntime,
    Transmit,
};

#[derive(Debug)]
pub struct MemRuntime {
    net: Arc<MemNet>,
}

impl MemRuntime {
    pub fn new(net: Arc<MemNet>) -> Arc<Self> {
        Arc::new(Self { net })
    }
}

impl Runtime for MemRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn(future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        // The kernel socket stays open only to hold the port, so two endpoints never share an address.
        // A wildcard socket is the driver's mDNS listener (one per connection, all on :5353): it never hears
        // anything in memory, so it is not bound there.
        let local = socket.local_addr()?;
        let inbox = Inbox::new(DEFAULT_INBOX_CAPACITY);
        let bound = !(local.ip().is_unspecified() || local.ip().is_multicast());
        if bound {
            self.net.bind(local, &inbox)?;
        }
        Ok(Arc::new(MemSocket { net: Arc::clone(&self.net), local, inbox, bound, _port: socket, scratch: Mutex::default() }))
    }

    fn wrap_tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        TokioRuntime.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        Box::pin(async move { TokioRuntime.connect_tcp(remote_addr).await })
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { TokioRuntime.resolve_host(host).await })
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TokioRuntime.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        TokioRuntime.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        TokioRuntime.block_on(future)
    }

    fn name(&self) -> &'static str {
        "memnet"
    }
}

#[derive(Debug)]
struct MemSocket {
    net: Arc<MemNet>,
    local: SocketAddr,
    inbox: Arc<Inbox>,
    bound: bool,
    _port: std::net::UdpSocket,
    /// Reused between receives, so a receive allocates nothing of its own.
    scratch: Mutex<Vec<Datagram>>,
}

impl AsyncUdpSocket for MemSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn poll_send(&self, _cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let segment = transmit.segment_size.unwrap_or(transmit.contents.len()).max(1);
        for chunk in transmit.contents.chunks(segment) {
            self.net.send(self.local, transmit.destination, chunk);
        }
        Poll::Ready(Ok(transmit.contents.len()))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        scratch.clear();
        self.inbox.pop_or_register(bufs.len().min(meta.len()), cx.waker(), &mut scratch);
        if scratch.is_empty() {
            return Poll::Pending;
        }
        let n = scratch.len();
        for (i, d) in scratch.drain(..).enumerate() {
            let len = d.data.len().min(bufs[i].len());
            bufs[i][..len].copy_from_slice(&d.data[..len]);
            let mut m = RecvMeta::default();
            m.addr = d.from;
            m.len = len;
            m.stride = len.max(1);
            m.dst_ip = Some(self.local.ip());
            meta[i] = m;
        }
        Poll::Ready(Ok(n))
    }
}

impl Drop for MemSocket {
    fn drop(&mut self) {
        if self.bound {
            self.net.unbind(self.local);
        }
    }
}
