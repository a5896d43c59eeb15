//! UDP ports for media sockets. With `RTC_UDP_PORTS` set, each peer connection binds the next port of
//! the range that is free, so a firewall only needs that range open; otherwise the OS picks.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

pub struct PortAllocator {
    range: Option<(u16, u16)>,
    next: AtomicU32,
}

impl PortAllocator {
    pub fn new(range: Option<(u16, u16)>) -> Self {
        Self { range, next: AtomicU32::new(0) }
    }

    /// One bind address per IP: port 0 without a range, else a port of the range that is free on every
    /// IP right now. (A probe bind; the tiny race with another process is answered by the peer
    /// connection's own bind error.)
    pub fn addrs_for(&self, ips: &[IpAddr]) -> Option<Vec<SocketAddr>> {
        let Some((lo, hi)) = self.range else {
            return Some(ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect());
        };
        let span = u32::from(hi - lo) + 1;
        for _ in 0..span {
            let offset = self.next.fetch_add(1, Ordering::Relaxed) % span;
            let port = lo + offset as u16;
            let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            if addrs.iter().all(|a| UdpSocket::bind(a).is_ok()) {
                return Some(addrs);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_configured_range_and_skip_busy_ones() {
        let busy = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let alloc = PortAllocator::new(Some((port, port.saturating_add(1))));
        let addrs = alloc.addrs_for(&[ip]).expect("the port after the busy one is free");
        assert_eq!(addrs[0].port(), port + 1);
    }

    #[test]
    fn without_a_range_the_os_picks() {
        let alloc = PortAllocator::new(None);
        let addrs = alloc.addrs_for(&["127.0.0.1".parse().unwrap()]).unwrap();
        assert_eq!(addrs[0].port(), 0);
    }
}
