//! One simulated participant: join over the real signaling socket, optionally run media, keep the socket
//! alive with pings, leave when told to. Everything it sees goes into the run's shared counters.

use crate::media::{MediaEngine, MediaSession};
use crate::recorder::Recorder;
use signaling::{ClientError, ClientMessage, ServerMessage, SignalingClient, SignalingReceiver, SignalingSender};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one participant needs to join.
pub struct Ticket {
    pub meeting: Arc<MeetingSlot>,
    pub join_token: String,
}

/// Per meeting: how many of its participants got in (tracks expected with media depend on it).
#[derive(Default)]
pub struct MeetingSlot {
    pub joined: AtomicU64,
}

/// Counters every participant of a run writes into.
#[derive(Default)]
pub struct Shared {
    /// ws open → `joined`.
    pub join_latency: Recorder,
    /// TCP connect + WebSocket upgrade.
    pub connect_latency: Recorder,
    /// `ping` → `pong` on a joined socket.
    pub ping_rtt: Recorder,
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub joined: AtomicU64,
    pub failed: AtomicU64,
    /// Joined or failed: the ramp is over when this reaches the target.
    pub settled: AtomicU64,
    pub connected: AtomicI64,
    pub peak_connected: AtomicI64,
    /// Churn: sockets dropped and reopened that the server resumed, and leaves followed by a fresh join.
    pub resumed: AtomicU64,
    pub rejoined: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    pub fn error(&self, kind: impl Into<String>) {
        *self.errors.lock().unwrap_or_else(|e| e.into_inner()).entry(kind.into()).or_default() += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn error_total(&self) -> u64 {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).values().sum()
    }

    fn connect_one(&self) {
        let now = self.connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_connected.fetch_max(now, Ordering::Relaxed);
    }
}

/// How a participant behaves once in.
pub struct Behaviour {
    pub ws_url: String,
    /// TLS for `wss://` (None: the web PKI roots).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub ping_interval: Duration,
    pub media: Option<Arc<MediaEngine>>,
    /// Reconnect or rejoin every this long on average (the soak).
    pub churn: Option<Duration>,
}

/// Runs one participant until `stop` flips (or the server drops it). Never panics; failures are counted by kind.
pub async fn run(shared: Arc<Shared>, behaviour: Arc<Behaviour>, ticket: Ticket, stop: watch::Receiver<bool>) {
    let (tx, rx) = match join(&shared, &behaviour, &ticket).await {
        Ok(socket) => socket,
        Err(kind) => {
            shared.error(kind);
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.settled.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    shared.joined.fetch_add(1, Ordering::Relaxed);
    ticket.meeting.joined.fetch_add(1, Ordering::Relaxed);
    shared.connect_one();
    shared.settled.fetch_add(1, Ordering::Relaxed);
    let mut p = InMeeting { shared: &shared, tx, rx, media: None };
    if let Err(kind) = p.hold(&behaviour, &ticket, stop).await {
        shared.error(kind);
    }
    if let Some(media) = p.media.take() {
        media.close().await;
    }
    shared.connected.fetch_sub(1, Ordering::Relaxed);
}

/// Connects and joins; Err is the error kind for the report.
async fn join(shared: &Shared, behaviour: &Behaviour, ticket: &Ticket) -> Result<(SignalingSender, SignalingReceiver), String> {
    join_resuming(shared, behaviour, ticket).await.map(|(tx, rx, _)| (tx, rx))
}

/// `join`, also telling whether the server resumed the participant (`joined.resumed`).
async fn join_resuming(shared: &Shared, behaviour: &Behaviour, ticket: &Ticket) -> Result<(SignalingSender, SignalingReceiver, bool), String> {
    let started = Instant::now();
    let client = match tokio::time::timeout(CONNECT_TIMEOUT, SignalingClient::connect_with_tls(&behaviour.ws_url, behaviour.tls.clone())).await {
        Err(_) => return Err("ws connect timeout".into()),
        Ok(Err(e)) => return Err(connect_error_kind(&e)),
        Ok(Ok(c)) => c,
    };
    shared.connect_latency.record(started.elapsed());
    let (mut tx, mut rx) = client.split();
    let opened = Instant::now();
    let join = ClientMessage::Join { token: ticket.join_token.clone(), audio_muted: false, video_muted: false };
    tx.send(&join).await.map_err(|_| "ws send failed".to_owned())?;
    shared.messages_sent.fetch_add(1, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    loop {
        let msg = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return Err("join timeout".into()),
            Ok(Err(ClientError::Closed)) => return Err("closed before joined".into()),
            Ok(Err(_)) => return Err("ws error before joined".into()),
            Ok(Ok(msg)) => msg,
        };
        shared.messages_received.fetch_add(1, Ordering::Relaxed);
        match msg {
            ServerMessage::Joined { resumed, .. } => {
                shared.join_latency.record(opened.elapsed());
                return Ok((tx, rx, resumed));
            }
            ServerMessage::Error { code, .. } => return Err(format!("join rejected: {code:?}")),
            _ => {}
        }
    }
}

fn connect_error_kind(e: &ClientError) -> String {
    let text = e.to_string();
    // The one local limit people hit first; name it so the fix (ulimit -n) is obvious.
    if text.contains("Too many open files") { "ws connect: too many open files".into() } else { "ws connect failed".into() }
}

struct InMeeting<'a> {
    shared: &'a Shared,
    tx: SignalingSender,
    rx: SignalingReceiver,
    media: Option<MediaSession>,
}

impl InMeeting<'_> {
    async fn send(&mut self, msg: &ClientMessage) -> Result<(), String> {
        self.tx.send(msg).await.map_err(|_| "ws send failed".to_owned())?;
        self.shared.messages_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn hold(&mut self, behaviour: &Behaviour, ticket: &Ticket, mut stop: watch::Receiver<bool>) -> Result<(), String> {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel();
        if let Some(engine) = &behaviour.media {
            let session = engine.session(out_tx.clone()).map_err(|_| "media setup failed")?;
            self.media = Some(session);
        }
        let mut churn = next_churn(behaviour.churn);
        // Spread pings over the interval so thousands of sockets do not ping in lockstep.
        let offset = behaviour.ping_interval.mul_f64(rand::random::<f64>());
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + offset, behaviour.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // The guard `wait_for` returns is not Send: drop it inside the branch future.
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                Some(msg) = out_rx.recv() => self.send(&msg).await?,
                _ = ping.tick() => self.send(&ClientMessage::Ping { ts: Some(now_us()) }).await?,
                _ = sleep_until(churn) => {
                    self.churn(behaviour, ticket, &out_tx).await?;
                    churn = next_churn(behaviour.churn);
                }
                msg = self.rx.recv() => match msg {
                    Ok(msg) => self.on_message(msg).await?,
                    Err(ClientError::Closed) => return Err("disconnected by server".into()),
                    Err(_) => return Err("ws error".into()),
                },
            }
        }
        self.leave().await
    }

    async fn on_message(&mut self, msg: ServerMessage) -> Result<(), String> {
        self.shared.messages_received.fetch_add(1, Ordering::Relaxed);
        match &msg {
            ServerMessage::Pong { ts: Some(ts) } => {
                self.shared.ping_rtt.record(Duration::from_micros(now_us().saturating_sub(*ts)));
            }
            ServerMessage::Offer { .. } | ServerMessage::Answer { .. } | ServerMessage::Candidate { .. } => {
                if let Some(media) = &self.media {
                    media.handle(&msg).await.map_err(|_| "media negotiation failed")?;
                }
            }
            ServerMessage::MeetingEnded { reason } => return Err(format!("meeting ended: {reason:?}")),
            ServerMessage::Error { code, .. } => self.shared.error(format!("server error: {code:?}")),
            _ => {}
        }
        Ok(())
    }

    /// One churn step: 2 times in 3 the socket drops (no `leave`) and a new one joins with the same token, which
    /// the server must resume, media going on; otherwise a proper leave and a fresh join, with new media.
    async fn churn(&mut self, behaviour: &Behaviour, ticket: &Ticket, out: &mpsc::UnboundedSender<ClientMessage>) -> Result<(), String> {
        let reconnect = !rand::random::<u32>().is_multiple_of(3);
        if reconnect {
            let _ = self.tx.close().await; // the network goes away: no leave
        } else {
            self.leave().await?;
            if let Some(media) = self.media.take() {
                media.close().await;
            }
        }
        let (tx, rx, resumed) = join_resuming(self.shared, behaviour, ticket).await?;
        (self.tx, self.rx) = (tx, rx);
        if reconnect != resumed {
            return Err(format!("churn: expected resumed={reconnect}, got {resumed}"));
        }
        if reconnect {
            self.shared.resumed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.shared.rejoined.fetch_add(1, Ordering::Relaxed);
            if let Some(engine) = &behaviour.media {
                self.media = Some(engine.session(out.clone()).map_err(|_| "media setup failed")?);
            }
        }
        Ok(())
    }

    /// Says `leave` and waits for the server's `left`, so the server side is gone when the run ends.
    async fn leave(&mut self) -> Result<(), String> {
        self.send(&ClientMessage::Leave).await?;
        let deadline = tokio::time::Instant::now() + LEAVE_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return Err("leave timeout".into()),
                Ok(Err(ClientError::Closed)) => return Ok(()),
                Ok(Err(_)) => return Err("ws error while leaving".into()),
                Ok(Ok(ServerMessage::Left)) => {
                    self.shared.messages_received.fetch_add(1, Ordering::Relaxed);
                    let _ = self.tx.close().await;
                    return Ok(());
                }
                Ok(Ok(_)) => {
                    self.shared.messages_received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// When the next churn step is due: around `every` (±50 %), or never.
fn next_churn(every: Option<Duration>) -> Option<tokio::time::Instant> {
    every.map(|e| tokio::time::Instant::now() + e.mul_f64(0.5 + rand::random::<f64>()))
}

/// Resolves at `at`, or never without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Microseconds since this process's first call: ping timestamps are echoed back to the same process.
fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}
