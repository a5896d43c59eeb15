//! A media shard: one thread, one socket per bind address on the shard's port, and every peer connection of the
//! rooms pinned to it, driven as sans-IO state machines (webrtc-rs's `rtc` core).
//!
//! One pass of the loop: take control commands (bounded queue, from room actors), read every datagram waiting
//! (batched), hand each to its connection (`demux`), fire the connections whose deadline passed (`timers`), then
//! drain the connections touched: their events go to the room, their received RTP is forwarded by direct calls
//! into the subscribers' connections (`forward`), and finally everything they wrote leaves in one batched send.
//! Only then does the thread sleep, until a datagram, a command or the next deadline.
//!
//! A shard that panics takes down only its own connections (their event channels close, so their participants
//! see a failure); the other shards go on.

mod conn;
mod forward;

use super::candidates::candidate_from_signal;
use super::demux::Demux;
use super::dtls_hello;
use super::memnet::Datagram;
use super::stats::SfuStats;
use super::stun::StunProbe;
use super::timers::Timers;
use super::transport::{Transport, Waker};
use super::api::{PeerError, PeerEvent, PublishedTrack};
use super::config::SfuConfig;
use conn::{Conn, ConnId, Inbound};
use forward::Published;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use signaling::IceCandidate;
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

pub use conn::ConnId as ShardConnId;
use super::coalesce::Coalescer;
use super::keyframe::{KeyframeReason, is_keyframe_request};

/// Control commands a shard holds before senders wait: far more than a burst of joins needs.
const COMMAND_QUEUE: usize = 1024;
/// Datagrams handled between two sends. At fan-out 5 a slice of 16 publisher packets is about 80 forwarded
/// packets, half a millisecond of work: what a packet can wait behind others in the shard.
const RECV_SLICE: usize = 16;

type Reply<T> = oneshot::Sender<Result<T, PeerError>>;

pub(crate) enum Command {
    Create { participant: String, events: mpsc::Sender<PeerEvent>, reply: Reply<ConnId> },
    Offer { conn: ConnId, sdp: String, reply: Reply<String> },
    CreateOffer { conn: ConnId, reply: Reply<String> },
    Answer { conn: ConnId, sdp: String, reply: Reply<()> },
    Candidate { conn: ConnId, candidate: IceCandidate, reply: Reply<()> },
    Subscribe { conn: ConnId, track: Arc<PublishedTrack>, reply: Reply<bool> },
    Unsubscribe { conn: ConnId, track_id: String, reply: Reply<bool> },
    Subscribed { conn: ConnId, reply: Reply<Vec<String>> },
    RequestKeyframes { conn: ConnId },
    Close { conn: ConnId },
    /// Makes the shard panic: the isolation test's stand-in for a bug.
    #[cfg(test)]
    Crash,
}

/// The control side's handle on a shard.
pub(crate) struct ShardHandle {
    pub index: usize,
    commands: mpsc::Sender<Command>,
    waker: Waker,
    alive: Arc<AtomicBool>,
    /// Connections on this shard (for placing new rooms).
    pub peers: AtomicUsize,
}

impl ShardHandle {
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Sends a command and waits for its reply.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, PeerError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| PeerError::ShardDown)?;
        (self.waker)();
        rx.await.map_err(|_| PeerError::ShardDown)?
    }

    /// Sends a command without waiting (dropped if the queue is full or the shard is gone).
    pub fn post(&self, cmd: Command) {
        if self.commands.try_send(cmd).is_ok() {
            (self.waker)();
        }
    }
}

/// Starts shard `index` on its own thread.
pub(crate) fn spawn(
    index: usize,
    transport: Box<dyn Transport>,
    config: SfuConfig,
    stats: Arc<SfuStats>,
) -> std::io::Result<ShardHandle> {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let waker = transport.waker();
    let alive = Arc::new(AtomicBool::new(true));
    let flag = AliveFlag(Arc::clone(&alive));
    std::thread::Builder::new().name(format!("sfu-shard-{index}")).spawn(move || {
        let shard = Shard::new(flag, index, transport, config, stats, rx);
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || shard.run())).is_err() {
            tracing::error!(shard = index, "media shard failed; its visits end, other shards go on");
        }
    })?;
    Ok(ShardHandle { index, commands: tx, waker, alive, peers: AtomicUsize::new(0) })
}

/// Marks the shard dead when dropped: the first field of `Shard`, so it is cleared before the connections (and
/// their event channels, which tell their participants) are dropped, whether the loop returned or panicked.
struct AliveFlag(Arc<AtomicBool>);

impl Drop for AliveFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

struct Shard {
    _alive: AliveFlag,
    index: usize,
    transport: Box<dyn Transport>,
    config: SfuConfig,
    stats: Arc<SfuStats>,
    commands: mpsc::Receiver<Command>,
    conns: FxHashMap<ConnId, Conn>,
    next_id: u64,
    demux: Demux<ConnId>,
    timers: Timers<ConnId>,
    /// Published tracks by a key of the shard's own (hashed per packet, so not by name), and the keys by name
    /// (for subscriptions and viewers' keyframe requests, which name the track).
    published: FxHashMap<u64, Published>,
    names: FxHashMap<String, u64>,
    /// Connections to drain and flush in this pass.
    dirty: Vec<ConnId>,
    rx: Vec<Datagram>,
    tx: Vec<Datagram>,
    stun: StunProbe,
    coalesce: Coalescer,
    /// Arrival times of the current slice's RTP packets, for the forwarding-delay histogram.
    slice_arrivals: Vec<Instant>,
}

impl Shard {
    fn new(
        alive: AliveFlag,
        index: usize,
        transport: Box<dyn Transport>,
        config: SfuConfig,
        stats: Arc<SfuStats>,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        let stun = StunProbe::new(&config.stun_urls, Instant::now());
        Self {
            stun,
            coalesce: Coalescer::new(Instant::now()),
            slice_arrivals: Vec::with_capacity(RECV_SLICE),
            _alive: alive,
            index,
            transport,
            config,
            stats,
            commands,
            conns: FxHashMap::default(),
            next_id: 1,
            demux: Demux::default(),
            timers: Timers::default(),
            published: FxHashMap::default(),
            names: FxHashMap::default(),
            dirty: Vec::new(),
            rx: Vec::with_capacity(256),
            tx: Vec::with_capacity(1024),

        }
    }

    fn run(mut self) {
        loop {
            let now = Instant::now();
            loop {
                match self.commands.try_recv() {
                    Ok(cmd) => self.command(cmd, now),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    // The SFU is gone: close everything and stop.
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
                        for id in ids {
                            self.close(id);
                        }
                        self.flush();
                        return;
                    }
                }
            }
            if let Err(e) = self.transport.recv(&mut self.rx) {
                tracing::warn!(shard = self.index, error = %e, "media socket read failed");
            }
            // In slices, each forwarded and sent before the next is read in: a burst of arrivals then leaves as
            // it is processed, not all at the end (a slice's output is still one batch of system calls).
            let mut rx = std::mem::take(&mut self.rx);
            let arrived = rx.len();
            let mut arrivals = rx.drain(..).peekable();
            while arrivals.peek().is_some() {
                for d in arrivals.by_ref().take(RECV_SLICE) {
                    if let Some(t) = d.received
                        && is_rtp(&d.data)
                    {
                        self.slice_arrivals.push(t);
                    }
                    self.datagram(d);
                }
                self.process(Instant::now());
                self.flush();
                let sent = Instant::now();
                for t in self.slice_arrivals.drain(..) {
                    self.stats.forwarding_delay.observe(sent.saturating_duration_since(t));
                }
            }
            drop(arrivals);
            self.rx = rx;
            let now = Instant::now();
            self.stun.poll(now, self.transport.local_addrs(), &mut self.tx);
            while let Some(id) = self.timers.pop_due(now) {
                if let Some(conn) = self.conns.get_mut(&id) {
                    let _ = conn.pc.handle_timeout(now);
                    conn.rearm = true;
                    mark(&mut self.dirty, conn, id);
                }
            }
            self.process(now);
            self.flush();
            let deadline = match (self.timers.next(), self.stun.deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // Busy: let the next arrivals gather (`coalesce`), then read them all. The wake-ups they cause
            // meanwhile end the next wait at once, which the pass after this one never makes.
            if let Some(linger) = self.coalesce.after_pass(arrived, now) {
                let until = deadline.map_or(now + linger, |d| d.min(now + linger));
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
                continue;
            }
            // Straight to sleep, even after a busy pass: `recv` left the sockets drained, so anything that arrived
            // since, like a command's wake-up, ends the wait at once (epoll is edge-triggered). A pass that found
            // work thus costs no extra read that finds nothing, one system call per packet at light load.
            if let Err(e) = self.transport.wait(deadline) {
                tracing::warn!(shard = self.index, error = %e, "media socket wait failed");
            }
        }
    }

    fn datagram(&mut self, d: Datagram) {
        if self.stun.handle(&d) {
            return;
        }
        let Some(id) = self.demux.route(d.to, d.from, &d.data) else { return };
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if !conn.srtp_known
            && let Some(offer) = dtls_hello::client_hello_profiles(&d.data)
        {
            tracing::debug!(shard = self.index, offer = ?offer, "client's SRTP profiles, in its order");
        }
        let msg = TaggedBytesMut {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: d.to,
                peer_addr: d.from,
                ecn: None,
                transport_protocol: if d.tcp { TransportProtocol::TCP } else { TransportProtocol::UDP },
            },
            message: d.data,
        };
        if conn.pc.handle_read(msg).is_ok() {
            conn.rearm = true;
            mark(&mut self.dirty, conn, id);
        }
    }

    /// Drains every connection touched in this pass, including those touched while draining (forwarding
    /// writes into subscribers).
    fn process(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.dirty.len() {
            let id = self.dirty[i];
            i += 1;
            self.drain(id, now);
        }
    }

    fn drain(&mut self, id: ConnId, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(&id) else { return };
            let Some(event) = conn.pc.poll_event() else { break };
            self.event(id, event);
        }
        loop {
            let Some(conn) = self.conns.get_mut(&id) else { return };
            let Some(TaggedRTCMessage { message, .. }) = conn.pc.poll_read() else { break };
            match message {
                RTCMessage::RtpPacket(track, packet) => self.forward(id, &track, packet, now),
                RTCMessage::RtcpPacket(track, packets) if packets.iter().any(|p| is_keyframe_request(p.as_ref())) => {
                    self.stats.viewer_keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    // The viewer's RTCP names our sender's track, whose id is the published track's.
                    if let Some(&key) = self.names.get(&track) {
                        self.request_keyframe(key, KeyframeReason::ViewerRequest, now);
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends what every touched connection wrote and re-arms its timer.
    fn flush(&mut self) {
        for id in self.dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(&id) else { continue };
            conn.dirty = false;
            conn.queue_writes(&mut self.tx, &self.stats);
            if std::mem::take(&mut conn.rearm) {
                self.timers.set(id, conn.pc.poll_timeout());
            }
        }
        if !self.tx.is_empty() {
            self.transport.send(&mut self.tx);
        }
    }

    fn event(&mut self, id: ConnId, event: RTCPeerConnectionEvent) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                tracing::debug!(shard = self.index, ?state, "peer connection state");
                match state {
                    RTCPeerConnectionState::Connected => {
                        let _ = conn.events.try_send(PeerEvent::Connected);
                    }
                    RTCPeerConnectionState::Failed => {
                        let _ = conn.events.try_send(PeerEvent::Failed);
                    }
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                // Every renegotiation opens the tracks it keeps again; a track already known stays published.
                conn.inbound.entry(init.track_id).or_insert(Inbound { receiver: init.receiver_id, published: None });
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track)) => {
                if let Some(p) = conn.inbound.remove(&track).and_then(|i| i.published).and_then(|k| self.published.remove(&k)) {
                    self.names.remove(&p.info.id);
                    let _ = conn.events.try_send(PeerEvent::TrackEnded(p.info.id.clone()));
                }
            }
            _ => {}
        }
    }

    /// A packet the client published on `track`: forwarded to the track's subscribers. The first packet of a
    /// track makes it a published track (only then is its codec certain: the payload type says).
    fn forward(&mut self, from: ConnId, track: &str, packet: rtp::Packet, now: Instant) {
        let Some(conn) = self.conns.get_mut(&from) else { return };
        let Some(inbound) = conn.inbound.get_mut(track) else { return };
        let key = match inbound.published {
            Some(key) => key,
            None => {
                let Some(mut receiver) = conn.pc.rtp_receiver(inbound.receiver) else { return };
                let pt = packet.header.payload_type;
                let Some(codec) = receiver
                    .get_parameters()
                    .rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| c.payload_type == pt)
                    .map(|c| c.rtp_codec.clone())
                else {
                    return;
                };
                if codec.mime_type.to_ascii_lowercase().ends_with("/rtx") {
                    return;
                }
                let kind = receiver.track().kind();
                conn.track_seq += 1;
                let id = format!("{}-{}-{}", conn.participant, kind, conn.track_seq);
                let info = Arc::new(PublishedTrack {
                    id: id.clone(),
                    publisher: conn.participant.clone(),
                    kind,
                    codec,
                    shard: self.index,
                });
                tracing::debug!(shard = self.index, track = %id, codec = %info.codec.mime_type, "track published");
                let key = self.next_id;
                self.next_id += 1;
                inbound.published = Some(key);
                let _ = conn.events.try_send(PeerEvent::TrackPublished(Arc::clone(&info)));
                self.names.insert(id, key);
                self.published.insert(key, Published::new(info, from, inbound.receiver, packet.header.ssrc));
                key
            }
        };
        let Some(p) = self.published.get_mut(&key) else { return };
        if packet.header.ssrc != p.media_ssrc {
            return;
        }
        if p.forward(packet, &mut self.conns, &mut self.dirty, &mut self.tx, &self.stats, now) {
            self.request_keyframe(key, KeyframeReason::Resync, now);
        }
    }

    /// Asks the publisher of `track` for a keyframe, unless one was asked for very recently.
    fn request_keyframe(&mut self, key: u64, reason: KeyframeReason, now: Instant) {
        let Some(p) = self.published.get(&key) else { return };
        if p.info.kind != RtpCodecKind::Video || !p.throttle.allow(reason, now) {
            return;
        }
        let (publisher, receiver, media_ssrc) = (p.publisher, p.receiver, p.media_ssrc);
        let Some(conn) = self.conns.get_mut(&publisher) else { return };
        self.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        if let Some(mut r) = conn.pc.rtp_receiver(receiver) {
            let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc };
            if let Err(e) = r.write_rtcp(now, vec![Box::new(pli)]) {
                tracing::debug!(track = %p.info.id, error = %e, "keyframe request not sent");
            }
        }
        mark(&mut self.dirty, conn, publisher);
    }

    fn command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Create { participant, events, reply } => {
                let locals = self.transport.local_addrs().to_vec();
                let addrs = conn::Addrs { udp: locals, tcp: self.transport.tcp_addrs(), srflx: self.stun.mapped() };
                let result = Conn::new(participant, events, addrs, &self.config, now)
                    .map(|conn| {
                        let id = ConnId(self.next_id);
                        self.next_id += 1;
                        self.demux.add_ufrag(conn.ufrag.clone(), id);
                        self.conns.insert(id, conn);
                        self.stats.peer_connections.fetch_add(1, Ordering::Relaxed);
                        id
                    });
                let _ = reply.send(result);
            }
            Command::Offer { conn, sdp, reply } => {
                let _ = reply.send(self.with_conn(conn, |c| c.handle_offer(sdp, now)));
            }
            Command::CreateOffer { conn, reply } => {
                let _ = reply.send(self.with_conn(conn, |c| c.create_offer(now)));
            }
            Command::Answer { conn, sdp, reply } => {
                let _ = reply.send(self.with_conn(conn, |c| c.handle_answer(sdp, now)));
            }
            Command::Candidate { conn, candidate, reply } => {
                let _ = reply.send(self.with_conn(conn, |c| c.add_candidate(candidate_from_signal(candidate))));
            }
            Command::Subscribe { conn, track, reply } => {
                let _ = reply.send(self.subscribe(conn, &track));
            }
            Command::Unsubscribe { conn, track_id, reply } => {
                let _ = reply.send(self.unsubscribe(conn, &track_id));
            }
            Command::Subscribed { conn, reply } => {
                let _ = reply.send(self.with_conn(conn, |c| Ok(c.outbound.keys().cloned().collect())));
            }
            Command::RequestKeyframes { conn } => {
                let keys: Vec<u64> = self
                    .conns
                    .get(&conn)
                    .map(|c| c.outbound.keys().filter_map(|t| self.names.get(t).copied()).collect())
                    .unwrap_or_default();
                for key in keys {
                    self.request_keyframe(key, KeyframeReason::ViewerRequest, now);
                }
            }
            Command::Close { conn } => self.close(conn),
            #[cfg(test)]
            Command::Crash => panic!("shard {} crashed on purpose", self.index),
        }
    }

    /// Runs `f` on a connection and queues it for a drain (a description or candidate may have armed a timer or
    /// queued packets).
    fn with_conn<T>(&mut self, id: ConnId, f: impl FnOnce(&mut Conn) -> Result<T, PeerError>) -> Result<T, PeerError> {
        let conn = self.conns.get_mut(&id).ok_or(PeerError::Closed)?;
        let result = f(conn);
        conn.rearm = true;
        mark(&mut self.dirty, conn, id);
        result
    }

    /// Adds a sender for `track` to the subscriber's connection; forwarding starts once the client has answered
    /// the offer the caller makes next. False if already subscribed or the track is gone.
    fn subscribe(&mut self, id: ConnId, track: &PublishedTrack) -> Result<bool, PeerError> {
        let conn = self.conns.get_mut(&id).ok_or(PeerError::Closed)?;
        let Some(p) = self.names.get(&track.id).and_then(|k| self.published.get_mut(k)) else { return Ok(false) };
        if conn.outbound.contains_key(&track.id) {
            return Ok(false);
        }
        let ssrc = rand::random::<u32>();
        let local = MediaStreamTrack::new(
            track.publisher.clone(),
            track.id.clone(),
            track.id.clone(),
            track.kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: track.codec.clone(),
                ..Default::default()
            }],
        );
        let sender = conn.pc.add_track(local).map_err(PeerError::engine)?;
        conn.outbound.insert(track.id.clone(), sender);
        p.subs.push(p.new_sub(id, sender, ssrc, conn.offers + 1));
        Ok(true)
    }

    fn unsubscribe(&mut self, id: ConnId, track_id: &str) -> Result<bool, PeerError> {
        let conn = self.conns.get_mut(&id).ok_or(PeerError::Closed)?;
        let Some(sender) = conn.outbound.remove(track_id) else { return Ok(false) };
        if let Some(p) = self.names.get(track_id).and_then(|k| self.published.get_mut(k)) {
            p.subs.retain(|s| s.conn != id);
        }
        conn.pc.remove_track(sender).map_err(PeerError::engine)?;
        conn.rearm = true;
        mark(&mut self.dirty, conn, id);
        Ok(true)
    }

    /// Closes a connection: its tracks stop being forwarded, its subscriptions end, and its last words (DTLS
    /// close_notify) go out with the next flush.
    fn close(&mut self, id: ConnId) {
        let Some(mut conn) = self.conns.remove(&id) else { return };
        for inbound in conn.inbound.values() {
            if let Some(p) = inbound.published.and_then(|k| self.published.remove(&k)) {
                self.names.remove(&p.info.id);
            }
        }
        for p in self.published.values_mut() {
            p.subs.retain(|s| s.conn != id);
        }
        self.demux.remove(id);
        self.timers.remove(id);
        let _ = conn.pc.close();
        conn.queue_writes(&mut self.tx, &self.stats);
        self.stats.peer_connections.fetch_sub(1, Ordering::Relaxed);
    }
}


/// An RTP (not RTCP) packet, by RFC 7983's first byte and RFC 5761's payload-type range.
fn is_rtp(data: &[u8]) -> bool {
    data.len() >= 12 && (128..=191).contains(&data[0]) && !(192..=223).contains(&data[1])
}

fn mark(dirty: &mut Vec<ConnId>, conn: &mut Conn, id: ConnId) {
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(id);
    }
}
