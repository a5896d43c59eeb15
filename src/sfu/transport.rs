//! A shard's datagram I/O: the real thing (`udp`: one socket per bind address on the shard's port, batched system
//! calls) or the in-memory network (`memnet`) for benchmarks. The shard loop only sees this trait.

use super::memnet::{DEFAULT_INBOX_CAPACITY, Datagram, Inbox, MemNet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Wakes a shard blocked in [`Transport::wait`], from any thread (a command was queued).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

pub trait Transport: Send {
    /// The addresses this shard receives on (its host candidates).
    fn local_addrs(&self) -> &[SocketAddr];
    /// The addresses it accepts ICE-TCP streams on (passive TCP candidates); none without ICE-TCP.
    fn tcp_addrs(&self) -> Vec<SocketAddr> {
        Vec::new()
    }
    /// Appends every datagram that has arrived (`to` is the local address); never blocks. Leaves nothing unread
    /// that `wait` would not report: the shard sleeps right after.
    fn recv(&mut self, out: &mut Vec<Datagram>) -> io::Result<()>;
    /// Sends the batch (`from` is the local address to send from) and empties it.
    fn send(&mut self, batch: &mut Vec<Datagram>);
    /// Blocks until a datagram may have arrived, the waker was called, or `deadline` passed.
    fn wait(&mut self, deadline: Option<Instant>) -> io::Result<()>;
    fn waker(&self) -> Waker;
}

/// The in-memory network as a shard's transport.
pub struct MemTransport {
    net: Arc<MemNet>,
    inbox: Arc<Inbox>,
    addrs: Vec<SocketAddr>,
}

impl MemTransport {
    pub fn bind(net: Arc<MemNet>, addrs: Vec<SocketAddr>) -> io::Result<Self> {
        let inbox = Inbox::new(DEFAULT_INBOX_CAPACITY);
        for (i, a) in addrs.iter().enumerate() {
            if let Err(e) = net.bind(*a, &inbox) {
                addrs[..i].iter().for_each(|a| net.unbind(*a));
                return Err(e);
            }
        }
        Ok(Self { net, inbox, addrs })
    }
}

impl Transport for MemTransport {
    fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    fn recv(&mut self, out: &mut Vec<Datagram>) -> io::Result<()> {
        self.inbox.drain_into(out);
        Ok(())
    }

    fn send(&mut self, batch: &mut Vec<Datagram>) {
        self.net.send_batch(batch);
    }

    fn wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        self.inbox.wait(deadline);
        Ok(())
    }

    fn waker(&self) -> Waker {
        let inbox = Arc::clone(&self.inbox);
        Arc::new(move || inbox.wake())
    }
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        for a in &self.addrs {
            self.net.unbind(*a);
        }
    }
}
