//! Building and running the server. The caller owns the stop signal (mini-redis' `run(listener, shutdown)`,
//! zero2prod's `Application::build`): `build` opens the store, loads keys, binds both listeners (port 0 works,
//! and `http_addr()` / `https_addr()` tell the real ports), and `run_until(signal)` serves until the signal.
//!
//! Stopping drains rather than drops: flip `state.shutdown` (new joins and meetings are refused), let
//! `rooms.drain` tell participants and wait a bounded time, then stop accepting and finish open requests
//! (for at most `SHUTDOWN_GRACE_SECS` again).
//!
//! Both listeners are served alike (axum-server over hyper-util's connection builder): every request carries
//! the peer address (`ConnectInfo`, for the per-address limits) and its listener's scheme, and a connection
//! that does not deliver a whole request head within `HTTP_HEADER_TIMEOUT_MS` is closed (slowloris): the TLS
//! handshake, the first bytes (`first_bytes`) and each HTTP/1 request head each get that long.

mod first_bytes;

use crate::app::{AppState, Shutdown};
use crate::auth::{Auth, KeySource};
use crate::config::Config;
use crate::http::{self, ListenerScheme};
use crate::meetings::{Backends, ChimeBackend, LocalBackend, LocalCapacity, MeetingBackend, MeetingService, Routing};
use crate::metrics::Metrics;
use crate::room::{Admission, Rooms, RoomsConfig};
use crate::sfu::Sfu;
use crate::appointments::AppointmentService;
use crate::appointments::notices::Notices;
use crate::notify::outbox::{OutboxWorker, Transports};
use crate::store;
use crate::tls;
use crate::turn::{EmbeddedTurn, TurnSetup};
use anyhow::Context;
use axum::Extension;
use axum_server::accept::DefaultAcceptor;
use axum_server::tls_rustls::RustlsConfig;
use first_bytes::FirstBytes;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

pub struct Server {
    state: AppState,
    http: tokio::net::TcpListener,
    https: Option<HttpsListener>,
    /// This start's one-time console sign-in token, shown in the banner only.
    login_token: String,
    /// The embedded TURN server, when configured; it stops when the server does.
    turn: Option<EmbeddedTurn>,
}

struct HttpsListener {
    listener: std::net::TcpListener,
    tls: RustlsConfig,
    cert: PathBuf,
    generated: bool,
}

impl Server {
    /// Opens the store (running migrations), loads or creates the API key and signing secret, and binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let store = store::Store::connect(&config.database_url).await?;
        let auth = Arc::new(Auth::load(&config)?);
        let sfu = Sfu::new(config.sfu.clone())?;
        let (embedded_turn, turn) = start_turn(&config, &sfu).await?;
        let rooms_config = RoomsConfig {
            resume_window: config.resume_window,
            max_participants: config.local_max_participants,
            stall_timeout: config.socket_stall,
            turn,
        };
        let rooms = Rooms::with_config(sfu, rooms_config);
        let metrics = Metrics::new(Arc::clone(&rooms));
        if let Some(t) = &embedded_turn {
            metrics.watch_turn(t.stats_handle());
        }
        let capacity =
            LocalCapacity { max_meetings: config.local_max_meetings, max_participants: config.local_max_participants };
        let local = Arc::new(LocalBackend::new(
            auth.clone(),
            rooms.clone(),
            config.media_region.clone(),
            capacity,
            config.lifecycle.grace,
        ));
        let chime = match config.chime_enabled() {
            true => Some(Arc::new(ChimeBackend::new(&config.chime).await) as Arc<dyn MeetingBackend>),
            false => None,
        };
        let routing = Routing { primary: config.primary_provider(), failover: config.failover };
        let meetings =
            Arc::new(MeetingService::new(store.clone(), rooms.clone(), metrics.clone(), Backends { local, chime }, routing));
        let notices = Notices {
            tz: config.notify.timezone,
            practice_name: config.notify.practice_name.clone(),
            reminder_offsets: config.clinic.reminder_offsets.clone(),
        };
        let appointments = Arc::new(AppointmentService::new(store.clone(), meetings.clone(), auth.clone(), notices));
        let outbox_wake = Arc::new(tokio::sync::Notify::new());
        let admission = Arc::new(Admission::new(auth.clone(), meetings.clone(), rooms.clone()));
        let state = AppState {
            config,
            store,
            auth,
            meetings,
            appointments,
            outbox_wake,
            rooms,
            admission,
            metrics,
            shutdown: Shutdown::default(),
        };
        let mut server = Self::with_state(state).await?;
        server.turn = embedded_turn;
        Ok(server)
    }

    /// Binds the listeners for an already assembled state (a test may swap the store or provider).
    pub async fn with_state(state: AppState) -> anyhow::Result<Self> {
        // Both ring and aws-lc-rs are compiled in (webrtc pulls the latter), so rustls cannot pick one itself.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = &state.config;
        let http = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP_ADDR={}", config.http_addr))?;
        let https = match config.https_addr {
            None => None,
            Some(addr) => {
                let files = tls::ensure_cert(&config.certs_dir)?;
                let tls = RustlsConfig::from_pem_file(&files.cert, &files.key)
                    .await
                    .with_context(|| format!("loading TLS certificate from {}", config.certs_dir.display()))?;
                let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding HTTPS_ADDR={addr}"))?;
                listener.set_nonblocking(true)?;
                Some(HttpsListener { listener, tls, cert: files.cert, generated: files.generated })
            }
        };
        // A fresh link every start: whoever reads the terminal can open the console without typing the key.
        let login_token = state.auth.console().issue_login_link();
        Ok(Self { state, http, https, login_token, turn: None })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("a bound listener has an address")
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().map(|h| h.listener.local_addr().expect("a bound listener has an address"))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The embedded TURN server, when `TURN_UDP_ADDR`, `TURN_TCP_ADDR` or `TURN_TLS_ADDR` is set.
    pub fn turn(&self) -> Option<&EmbeddedTurn> {
        self.turn.as_ref()
    }

    /// The startup banner for stdout: mode, URLs, and how to authenticate. A generated API key appears here,
    /// once, when it is created, and so does this start's one-time console sign-in link; neither is logged.
    pub fn banner(&self) -> String {
        let mut b = String::new();
        let _ = writeln!(b, "telehealth-gateway {}", env!("CARGO_PKG_VERSION"));
        let meetings = &self.state.meetings;
        if meetings.demo_mode() {
            let _ = writeln!(b, "DEMO MODE: local SFU (no AWS credentials)");
        } else {
            let failover = if meetings.failover() { "on" } else { "off" };
            let _ = writeln!(b, "Amazon Chime SDK Meetings configured: new meetings go to {}, failover {failover}", meetings.primary());
        }
        let http = self.http_addr();
        let http_url = format!("http://{}", display_host(http));
        let _ = writeln!(b, "  http:  {http_url}/");
        if let (Some(addr), Some(h)) = (self.https_addr(), &self.https) {
            let port = addr.port();
            let hosts: Vec<String> = if addr.ip().is_unspecified() {
                std::iter::once("localhost".to_owned()).chain(tls::lan_addresses().into_iter().map(url_host)).collect()
            } else {
                vec![url_host(addr.ip())]
            };
            for host in hosts {
                let _ = writeln!(b, "  https: https://{host}:{port}/");
            }
            let note = if h.generated { "self-signed, generated now" } else { "from" };
            let _ = writeln!(b, "  TLS certificate ({note}): {}", h.cert.display());
        }
        let console_base = self.state.config.app_url.clone().unwrap_or_else(|| http_url.clone());
        let minutes = crate::auth::console::LOGIN_LINK_TTL.as_secs() / 60;
        if let Some(turn) = &self.state.rooms.config().turn {
            let which = if self.turn.is_some() { "embedded TURN server" } else { "TURN" };
            let _ = writeln!(b, "  {which} for patients behind firewalls: {}", turn.urls.join(", "));
        }
        let _ = writeln!(b, "Practitioner console: {console_base}/ (sign in with the API key)");
        let link = format!("{console_base}/console/login?token={}", self.login_token);
        let _ = writeln!(b, "  one-time sign-in link (works once, for {minutes} min): {link}");
        let _ = writeln!(b, "API authentication: Authorization: Bearer <API key>");
        let key_expr = match self.state.auth.key_source() {
            KeySource::Env { count } => {
                let _ = writeln!(b, "  {count} key(s) from TELEHEALTH_API_KEYS");
                "$TELEHEALTH_API_KEY".to_owned()
            }
            KeySource::File { path, key, generated_now: true } => {
                let _ = writeln!(b, "  generated a key and saved it to {} (mode 0600); it is shown only now:", path.display());
                let _ = writeln!(b, "    {key}");
                key.clone()
            }
            KeySource::File { path, generated_now: false, .. } => {
                let _ = writeln!(b, "  key stored in {} (read it with: cat {})", path.display(), path.display());
                format!("$(cat {})", path.display())
            }
        };
        let _ = writeln!(b, "  try: curl -s {http_url}/api/aws-chime-video -H \"Authorization: Bearer {key_expr}\" \\");
        let _ = writeln!(b, "         -H 'Content-Type: application/json' -d '{{\"action\":\"create-meeting\"}}'");
        b
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `signal` resolves, then drains rooms and stops both listeners gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Server { state, http, https, turn, .. } = self;
        // Relays stop with the server (after the rooms have drained), not before.
        let _turn = turn;
        let app = http::router(state.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let grace = state.config.shutdown_grace;

        tokio::spawn(cleanup_loop(state.clone()));
        let transports = Transports::from_config(&state.config.notify).await?;
        let worker = OutboxWorker::new(
            state.store.clone(),
            transports,
            state.config.clinic.outbox.clone(),
            uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            state.outbox_wake.clone(),
        );
        let outbox_stop = state.shutdown.clone();
        tokio::spawn(worker.run(async move { outbox_stop.wait().await }));
        let draining = state.clone();
        tokio::spawn(async move {
            signal.await;
            tracing::info!("shutting down: refusing new joins and draining rooms");
            draining.shutdown.trigger();
            draining.rooms.drain(grace).await;
            let _ = stop_tx.send(true);
        });
        let stopped = move |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        let header_timeout = state.config.limits.header_timeout;
        // One handle per listener, both told to stop together.
        let handle = |rx: watch::Receiver<bool>| {
            let handle = axum_server::Handle::new();
            let on_stop = handle.clone();
            tokio::spawn(async move {
                stopped(rx).await;
                on_stop.graceful_shutdown(Some(grace));
            });
            handle
        };
        let mut http_server = axum_server::from_tcp(http.into_std()?)
            .acceptor(FirstBytes::new(DefaultAcceptor, header_timeout))
            .handle(handle(stop_rx.clone()));
        limit_header_reads(http_server.http_builder(), header_timeout);
        let http_app = app.clone().layer(Extension(ListenerScheme::Http));
        let http_task = http_server.serve(http_app.into_make_service_with_connect_info::<SocketAddr>());
        let https_task = async {
            let Some(h) = https else { return Ok(()) };
            // The TLS handshake gets the same bound as the request head it precedes.
            let mut server = axum_server::from_tcp_rustls(h.listener, h.tls)
                .map(|tls| FirstBytes::new(tls.handshake_timeout(header_timeout), header_timeout))
                .handle(handle(stop_rx.clone()));
            limit_header_reads(server.http_builder(), header_timeout);
            let https_app = app.layer(Extension(ListenerScheme::Https));
            server.serve(https_app.into_make_service_with_connect_info::<SocketAddr>()).await
        };
        let (a, b) = tokio::join!(http_task, https_task);
        a.context("HTTP listener failed")?;
        b.context("HTTPS listener failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Starts the embedded TURN server when configured, and works out the TURN settings pages get with `joined`:
/// the configured ones, with the embedded server's own URLs when `TURN_URLS` does not name them.
async fn start_turn(config: &Config, sfu: &Sfu) -> anyhow::Result<(Option<EmbeddedTurn>, Option<crate::config::TurnConfig>)> {
    let Some(listen) = &config.turn_server else { return Ok((None, config.turn.clone())) };
    let mut turn = config.turn.clone().context("the embedded TURN server has no secret")?;
    let tls = match listen.tls {
        Some(_) => Some(tls::server_config(&tls::ensure_cert(&config.certs_dir)?)?),
        None => None,
    };
    let relay_ip = listen.relay_ip.or_else(|| sfu.bind_ips().first().copied()).context("no address for TURN relays")?;
    let setup =
        TurnSetup { secret: turn.secret.clone(), relay_ip, allowed_peers: sfu.media_addrs().iter().copied().collect(), tls };
    let server = EmbeddedTurn::start(listen, setup).await?;
    if turn.urls.is_empty() {
        turn.urls = server.urls(&turn_host(config, listen, relay_ip));
    }
    Ok((Some(server), Some(turn)))
}

/// Where pages reach the embedded TURN server, as a URL's host: APP_URL's host (the name its certificate carries),
/// else RTC_PUBLIC_IP, else a listener's own address, else the relay address.
fn turn_host(config: &Config, listen: &crate::config::TurnListenConfig, relay_ip: std::net::IpAddr) -> String {
    if let Some(host) = config.app_url.as_deref().and_then(|u| url::Url::parse(u).ok()).and_then(|u| u.host_str().map(str::to_owned)) {
        return host;
    }
    let listener_ip = [listen.udp, listen.tcp, listen.tls].into_iter().flatten().map(|a| a.ip()).find(|ip| !ip.is_unspecified());
    url_host(config.sfu.public_ip.or(listener_ip).unwrap_or(relay_ip))
}

/// HTTP/1: a connection must deliver each request head within `timeout` of opening or of its previous
/// response (hyper closes it otherwise; this also ends idle keep-alive connections). hyper only enforces it
/// with a timer, which the builder does not have by default.
fn limit_header_reads(builder: &mut hyper_util::server::conn::auto::Builder<TokioExecutor>, timeout: std::time::Duration) {
    builder.http1().timer(TokioTimer::new()).header_read_timeout(timeout);
}

/// Runs the meetings' cleanup (and keeps this process's sessions marked as seen) every
/// `CLEANUP_INTERVAL_SECS` until shutdown starts.
async fn cleanup_loop(state: AppState) {
    let cfg = state.config.lifecycle.clone();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        match state.meetings.cleanup(chrono::Utc::now(), &cfg).await {
            Ok(r) if !r.deleted.is_empty() || r.failed > 0 => {
                tracing::info!(deleted = r.deleted.len(), failed = r.failed, "cleanup pass");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cleanup pass failed"),
        }
    }
}

/// An IP as it appears in a URL (`[::1]` for IPv6).
fn url_host(ip: std::net::IpAddr) -> String {
    if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() }
}

/// `127.0.0.1:8080` / `[::1]:8080`; an unspecified bind address is shown as `localhost`.
fn display_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() { format!("localhost:{}", addr.port()) } else { addr.to_string() }
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` and systemd send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
