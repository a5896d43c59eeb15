//! Which connection a datagram on a shard's shared socket belongs to.
//!
//! Every connection of a shard receives on the same port, so the address alone cannot say whose a first packet
//! is. ICE can: a client's connectivity check is a STUN Binding request whose USERNAME is
//! `<our ufrag>:<their ufrag>`, and our ufrag is unique per connection. That check teaches the demultiplexer
//! the 5-tuple (our address, the client's address), and DTLS, SRTP and SRTCP packets, which carry no such name,
//! are then routed by 5-tuple. A later check from a new address (a network change, a second candidate pair)
//! adds that tuple too.

use rustc_hash::FxHashMap as HashMap;
use std::collections::VecDeque;
use std::hash::Hash;
use std::net::SocketAddr;

const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_HEADER: usize = 20;
const STUN_BINDING_REQUEST: u16 = 0x0001;
const ATTR_USERNAME: u16 = 0x0006;

/// The recipient's ufrag (ours) in a STUN Binding request, or None for anything else.
pub fn binding_request_ufrag(d: &[u8]) -> Option<&str> {
    if d.len() < STUN_HEADER || d[0] & 0xC0 != 0 || d[4..8] != STUN_MAGIC_COOKIE {
        return None;
    }
    if u16::from_be_bytes([d[0], d[1]]) != STUN_BINDING_REQUEST {
        return None;
    }
    let end = (STUN_HEADER + usize::from(u16::from_be_bytes([d[2], d[3]]))).min(d.len());
    let mut at = STUN_HEADER;
    while at + 4 <= end {
        let kind = u16::from_be_bytes([d[at], d[at + 1]]);
        let len = usize::from(u16::from_be_bytes([d[at + 2], d[at + 3]]));
        let value = d.get(at + 4..at + 4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next().filter(|u| !u.is_empty());
        }
        at += 4 + len.next_multiple_of(4);
    }
    None
}

/// Tuples remembered per connection. A client has a handful of candidate pairs; more would be a client
/// spoofing source addresses to grow this table, so the oldest is forgotten.
const MAX_TUPLES_PER_CONN: usize = 8;

type Tuple = (SocketAddr, SocketAddr);

pub struct Demux<C> {
    by_ufrag: HashMap<String, C>,
    by_tuple: HashMap<Tuple, C>,
    /// Each connection's tuples, oldest first.
    tuples_of: HashMap<C, VecDeque<Tuple>>,
}

impl<C> Default for Demux<C> {
    fn default() -> Self {
        Self { by_ufrag: HashMap::default(), by_tuple: HashMap::default(), tuples_of: HashMap::default() }
    }
}

impl<C: Copy + Eq + Hash> Demux<C> {
    /// Connection `conn` answers ICE checks for `ufrag`.
    pub fn add_ufrag(&mut self, ufrag: String, conn: C) {
        self.by_ufrag.insert(ufrag, conn);
    }

    /// Forgets everything that routes to `conn`.
    pub fn remove(&mut self, conn: C) {
        self.by_ufrag.retain(|_, c| *c != conn);
        for t in self.tuples_of.remove(&conn).unwrap_or_default() {
            self.by_tuple.remove(&t);
        }
    }

    fn learn(&mut self, tuple: Tuple, conn: C) {
        match self.by_tuple.insert(tuple, conn) {
            Some(c) if c == conn => return,
            Some(previous) => {
                // The address moved to another connection (a client rejoining from the same port).
                if let Some(ts) = self.tuples_of.get_mut(&previous) {
                    ts.retain(|t| *t != tuple);
                }
            }
            None => {}
        }
        let tuples = self.tuples_of.entry(conn).or_default();
        tuples.push_back(tuple);
        if tuples.len() > MAX_TUPLES_PER_CONN
            && let Some(oldest) = tuples.pop_front()
        {
            self.by_tuple.remove(&oldest);
        }
    }

    /// The connection a datagram from `remote` to `local` is for. A Binding request names it by ufrag (and
    /// teaches the tuple); anything else must come on a tuple already learned.
    pub fn route(&mut self, local: SocketAddr, remote: SocketAddr, datagram: &[u8]) -> Option<C> {
        if let Some(ufrag) = binding_request_ufrag(datagram) {
            let conn = *self.by_ufrag.get(ufrag)?;
            self.learn((local, remote), conn);
            return Some(conn);
        }
        self.by_tuple.get(&(local, remote)).copied()
    }

    #[cfg(test)]
    fn tuples(&self) -> usize {
        self.by_tuple.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Binding request with USERNAME `user` (and a trailing attribute, as real checks carry PRIORITY etc.).
    fn binding_request(user: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attrs.extend_from_slice(user.as_bytes());
        attrs.resize(attrs.len().next_multiple_of(4), 0);
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]); // PRIORITY
        let mut d = Vec::new();
        d.extend_from_slice(&STUN_BINDING_REQUEST.to_be_bytes());
        d.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        d.extend_from_slice(&STUN_MAGIC_COOKIE);
        d.extend_from_slice(&[7; 12]);
        d.extend_from_slice(&attrs);
        d
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_ufrag_is_read_from_a_binding_request_and_nothing_else() {
        assert_eq!(binding_request_ufrag(&binding_request("srvA:cliB")), Some("srvA"));
        assert_eq!(binding_request_ufrag(&binding_request("abc")), Some("abc"));
        assert_eq!(binding_request_ufrag(&binding_request(":x")), None);
        let mut response = binding_request("srvA:cliB");
        response[0] = 0x01; // 0x0101: Binding success response
        assert_eq!(binding_request_ufrag(&response), None);
        assert_eq!(binding_request_ufrag(&[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None, "DTLS");
        assert_eq!(binding_request_ufrag(&[0x80, 0x60, 0, 1]), None, "RTP");
        let truncated = binding_request("srvA:cliB");
        assert_eq!(binding_request_ufrag(&truncated[..26]), None);
    }

    #[test]
    fn a_check_teaches_the_tuple_that_later_packets_are_routed_by() {
        let mut d = Demux::default();
        d.add_ufrag("srvA".into(), 1u32);
        d.add_ufrag("srvB".into(), 2u32);
        let (local, alice, bob) = (addr("127.0.0.1:40000"), addr("127.0.0.2:5000"), addr("127.0.0.3:5000"));
        let dtls = [0x16u8, 0xfe, 0xfd, 0, 0];
        assert_eq!(d.route(local, alice, &dtls), None, "nothing before a check");
        assert_eq!(d.route(local, alice, &binding_request("srvA:c1")), Some(1));
        assert_eq!(d.route(local, bob, &binding_request("srvB:c2")), Some(2));
        assert_eq!(d.route(local, alice, &dtls), Some(1));
        assert_eq!(d.route(local, bob, &dtls), Some(2));
        assert_eq!(d.route(addr("127.0.0.1:40001"), alice, &dtls), None, "another local socket is another tuple");
        assert_eq!(d.route(local, alice, &binding_request("unknown:c1")), None);
        d.remove(1);
        assert_eq!(d.route(local, alice, &dtls), None);
        assert_eq!(d.route(local, alice, &binding_request("srvA:c1")), None);
        assert_eq!(d.route(local, bob, &dtls), Some(2));
    }

    #[test]
    fn a_client_moving_to_a_new_address_is_followed() {
        let mut d = Demux::default();
        d.add_ufrag("srv".into(), 9u32);
        let local = addr("127.0.0.1:40000");
        d.route(local, addr("127.0.0.2:1"), &binding_request("srv:c"));
        assert_eq!(d.route(local, addr("127.0.0.2:2"), &binding_request("srv:c")), Some(9));
        assert_eq!(d.route(local, addr("127.0.0.2:2"), &[0x80, 0x60]), Some(9));
        assert_eq!(d.tuples(), 2);
    }

    #[test]
    fn a_client_spoofing_many_addresses_cannot_grow_the_table() {
        let mut d = Demux::default();
        d.add_ufrag("srv".into(), 1u32);
        let local = addr("127.0.0.1:40000");
        for port in 1..=1000u16 {
            d.route(local, SocketAddr::new("127.0.0.9".parse().unwrap(), port), &binding_request("srv:c"));
        }
        assert_eq!(d.tuples(), MAX_TUPLES_PER_CONN);
        assert_eq!(d.route(local, addr("127.0.0.9:1000"), &[0x80]), Some(1), "the newest are kept");
        assert_eq!(d.route(local, addr("127.0.0.9:1"), &[0x80]), None);
        d.remove(1);
        assert_eq!(d.tuples(), 0);
    }
}
