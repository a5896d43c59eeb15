//! `RTC_STUN_URLS`: a shard asks the STUN server from its own socket which address the outside sees, and every
//! connection then trickles a server-reflexive candidate with that address beside its host candidate. The STUN
//! server is a real one in miniature (it answers Binding requests with the sender's address as a NAT would map
//! it), on the in-memory network.

use bytes::BytesMut;
use loadtest::peer::{ClientPeer, MediaOptions};
use rtc::stun::message::{BINDING_SUCCESS, Message, Setter};
use rtc::stun::xoraddr::XorMappedAddress;
use signaling::ServerMessage;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use telehealth_gateway::ids::{AttendeeId, MeetingId};
use telehealth_gateway::room::{Outbound, Rooms};
use telehealth_gateway::sfu::memnet::{Inbox, MemNet};
use telehealth_gateway::sfu::{Sfu, SfuConfig};

/// The public address our pretend NAT maps the shard's socket to.
const PUBLIC_IP: &str = "198.51.100.7";

#[test]
fn connections_trickle_the_server_reflexive_address_the_stun_server_saw() {
    let net = MemNet::new();
    let stun_addr: SocketAddr = "127.0.0.9:3478".parse().unwrap();
    let inbox = Inbox::new(64);
    net.bind(stun_addr, &inbox).unwrap();
    let (stop, asked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let server = std::thread::spawn({
        let (net, stop, asked) = (Arc::clone(&net), Arc::clone(&stop), Arc::clone(&asked));
        move || {
            let mut got = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                inbox.wait(Some(Instant::now() + Duration::from_millis(20)));
                inbox.drain_into(&mut got);
                for d in got.drain(..) {
                    let mut req = Message::new();
                    req.raw = d.data.to_vec();
                    if req.decode().is_err() {
                        continue;
                    }
                    asked.fetch_add(1, Ordering::Relaxed);
                    let seen = XorMappedAddress { ip: PUBLIC_IP.parse().unwrap(), port: d.from.port() };
                    let mut resp = Message::new();
                    let setters: [Box<dyn Setter>; 3] = [Box::new(BINDING_SUCCESS), Box::new(req.transaction_id), Box::new(seen)];
                    resp.build(&setters).unwrap();
                    net.send(stun_addr, d.from, &BytesMut::from(&resp.raw[..]));
                }
            }
        }
    });

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let sfu = Sfu::new(SfuConfig {
        bind_ips: vec!["127.0.0.1".parse().unwrap()],
        memnet: Some(Arc::clone(&net)),
        shards: Some(1),
        stun_urls: vec![format!("stun:{stun_addr}")],
        ..Default::default()
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while asked.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the shard never asked the STUN server");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100)); // the answer travels back

    let rooms = Rooms::new(Arc::clone(&sfu));
    let mut session = rt.block_on(async { rooms.join(MeetingId::new(), AttendeeId::new(), "p".into(), false, false).unwrap() });
    let (_peer, out) = ClientPeer::new("127.0.0.2:22000".parse().unwrap(), MediaOptions::default(), Instant::now(), Instant::now()).unwrap();
    for m in out {
        assert!(session.try_handle(m));
    }
    let mut candidates = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while candidates.len() < 2 && Instant::now() < deadline {
        match session.outbound.try_recv() {
            Ok(Outbound::Message(ServerMessage::Candidate { candidate })) => candidates.push(candidate.candidate),
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert!(candidates.iter().any(|c| c.contains("typ host") && c.contains("127.0.0.1")), "{candidates:?}");
    let srflx = candidates.iter().find(|c| c.contains("typ srflx")).unwrap_or_else(|| panic!("no srflx in {candidates:?}"));
    assert!(srflx.contains(PUBLIC_IP) && srflx.contains("raddr 127.0.0.1"), "{srflx}");
    drop(session);
    rt.shutdown_timeout(Duration::from_secs(2));
}
