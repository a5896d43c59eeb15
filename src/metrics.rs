//! Prometheus metrics for `GET /metrics` (text exposition format).
//!
//! Two kinds of values, kept apart on purpose:
//! - numbers that already live elsewhere (SFU counters, who is in which room) are *read at scrape time* by
//!   `LiveCollector`, so there is one source of truth and nothing to keep in sync;
//! - things only this module records (latencies, join outcomes, signaling frames) are recorded by the code
//!   where they happen, through the typed methods below.
//!
//! Every label value comes from a fixed enum here (`ApiAction`, `JoinResult`, `Direction`, `ThrottleScope`,
//! `SocketCap`) or from an HTTP status code: nothing a client sends can reach a label, which keeps the series
//! count bounded and keeps meeting ids, names and tokens out of the exposition.

use crate::ids::Provider;
use crate::room::Rooms;
use crate::sfu::stats::{DELAY_BUCKETS_US, DelayHistogram, SRTP_PROFILES};
use axum::http::StatusCode;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Sub-millisecond (an in-memory join) up to seconds (a slow database): fine enough to see either.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The `action` label of `telehealth_api_request_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiAction {
    CreateMeeting,
    CreateAttendee,
    DeleteMeeting,
    GetMeeting,
    ListAttendees,
    GetUsage,
    AttendeePresence,
    /// The body did not parse as any action (or never reached the handler: wrong method, too large).
    Invalid,
}

impl ApiAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateMeeting => "create-meeting",
            Self::CreateAttendee => "create-attendee",
            Self::DeleteMeeting => "delete-meeting",
            Self::GetMeeting => "get-meeting",
            Self::ListAttendees => "list-attendees",
            Self::GetUsage => "get-usage",
            Self::AttendeePresence => "attendee-presence",
            Self::Invalid => "invalid",
        }
    }
}

/// The `result` label of `telehealth_joins_total`: how a socket's join phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinResult {
    Ok,
    /// Forged, expired or missing token, or a first message that was not `join`.
    Unauthorized,
    /// The meeting ended or was deleted.
    NotFound,
    /// The meeting has its 250 participants.
    Full,
    ShuttingDown,
    /// Our own failure (the store did not answer).
    Unavailable,
    /// No `join` within the join timeout.
    Timeout,
}

impl JoinResult {
    pub const ALL: [JoinResult; 7] = [
        Self::Ok,
        Self::Unauthorized,
        Self::NotFound,
        Self::Full,
        Self::ShuttingDown,
        Self::Unavailable,
        Self::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::Full => "full",
            Self::ShuttingDown => "shutting_down",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
        }
    }
}

/// The `direction` label of `telehealth_signaling_messages_total`, seen from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// The `scope` label of `telehealth_throttled_total`: which limit answered 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleScope {
    /// `RATE_LIMIT_API_PER_KEY`.
    ApiKey,
    /// `RATE_LIMIT_API_PER_IP`.
    ApiIp,
    /// `RATE_LIMIT_JOIN_PER_IP`.
    JoinIp,
}

impl ThrottleScope {
    pub const ALL: [ThrottleScope; 3] = [Self::ApiKey, Self::ApiIp, Self::JoinIp];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::ApiIp => "api_ip",
            Self::JoinIp => "join_ip",
        }
    }
}

/// The `cap` label of `telehealth_websockets_refused_total`: which socket cap answered 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketCap {
    /// `MAX_WEBSOCKETS`.
    Server,
    /// `MAX_WEBSOCKETS_PER_IP`.
    Address,
}

impl SocketCap {
    pub const ALL: [SocketCap; 2] = [Self::Server, Self::Address];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Address => "address",
        }
    }
}

/// The `operation` label of the provider counters: one backend call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderOp {
    CreateMeeting,
    CreateAttendee,
    GetMeeting,
    ListAttendees,
    DeleteMeeting,
}

impl ProviderOp {
    pub const ALL: [ProviderOp; 5] =
        [Self::CreateMeeting, Self::CreateAttendee, Self::GetMeeting, Self::ListAttendees, Self::DeleteMeeting];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateMeeting => "create_meeting",
            Self::CreateAttendee => "create_attendee",
            Self::GetMeeting => "get_meeting",
            Self::ListAttendees => "list_attendees",
            Self::DeleteMeeting => "delete_meeting",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    join_duration: Histogram,
    joins: IntCounterVec,
    signaling: IntCounterVec,
    api_duration: HistogramVec,
    provider_requests: IntCounterVec,
    provider_errors: IntCounterVec,
    failovers: IntCounterVec,
    cleaned: IntCounterVec,
    throttled: IntCounterVec,
    sockets_refused: IntCounterVec,
    sockets_open: IntGauge,
    request_timeouts: IntCounter,
}

impl Metrics {
    /// A registry of its own per server (not prometheus' global one), so two servers in one test process
    /// do not share counters.
    pub fn new(rooms: Arc<Rooms>) -> Arc<Self> {
        let registry = Registry::new();
        let join_duration = Histogram::with_opts(
            HistogramOpts::new(
                "telehealth_join_duration_seconds",
                "Server-side join time: from receiving the join frame to sending joined (successful joins).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        let joins = IntCounterVec::new(
            Opts::new("telehealth_joins_total", "Signaling sockets whose join phase ended, by result."),
            &["result"],
        )
        .expect("valid counter");
        let signaling = IntCounterVec::new(
            Opts::new("telehealth_signaling_messages_total", "Signaling text frames on /ws, by direction."),
            &["direction"],
        )
        .expect("valid counter");
        let api_duration = HistogramVec::new(
            HistogramOpts::new(
                "telehealth_api_request_duration_seconds",
                "POST /api/aws-chime-video handling time, by action and HTTP status.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["action", "status"],
        )
        .expect("valid histogram");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter")
        };
        let provider_requests = counter(
            "telehealth_provider_requests_total",
            "Calls to a meeting backend (local SFU or Chime), by provider and operation.",
            &["provider", "operation"],
        );
        let provider_errors = counter(
            "telehealth_provider_errors_total",
            "Backend calls that failed, by provider, operation and the contract's error code \
             (or Timeout, Unreachable, AtCapacity).",
            &["provider", "operation", "code"],
        );
        let failovers = counter(
            "telehealth_failovers_total",
            "Meetings created on the other provider because the chosen one could not, by reason.",
            &["from", "to", "reason"],
        );
        let cleaned = counter(
            "telehealth_meetings_cleaned_total",
            "Meetings deleted by the automatic cleanup: reason=idle (local, nobody there), window (past its end \
             plus the grace period), gone (the provider had already ended it).",
            &["provider", "reason"],
        );
        let throttled = counter(
            "telehealth_throttled_total",
            "Requests refused with 429 Throttling, by the limit that refused them: scope=api_key \
             (RATE_LIMIT_API_PER_KEY), api_ip (RATE_LIMIT_API_PER_IP), join_ip (RATE_LIMIT_JOIN_PER_IP).",
            &["scope"],
        );
        let sockets_refused = counter(
            "telehealth_websockets_refused_total",
            "Signaling sockets refused with 503 before the upgrade, by cap: server (MAX_WEBSOCKETS), address \
             (MAX_WEBSOCKETS_PER_IP).",
            &["cap"],
        );
        for scope in ThrottleScope::ALL {
            throttled.with_label_values(&[scope.as_str()]);
        }
        for cap in SocketCap::ALL {
            sockets_refused.with_label_values(&[cap.as_str()]);
        }
        let sockets_open = IntGauge::new(
            "telehealth_websockets_open",
            "Signaling sockets open (counted from the accepted upgrade request until the socket closes).",
        )
        .expect("valid gauge");
        let request_timeouts = IntCounter::new(
            "telehealth_request_timeouts_total",
            "Requests answered 503 because they took longer than HTTP_REQUEST_TIMEOUT_MS.",
        )
        .expect("valid counter");
        for p in Provider::ALL {
            for op in ProviderOp::ALL {
                provider_requests.with_label_values(&[p.as_str(), op.as_str()]);
            }
            for reason in ["idle", "window", "gone"] {
                cleaned.with_label_values(&[p.as_str(), reason]);
            }
        }
        let build_info = IntGauge::with_opts(
            Opts::new("telehealth_build_info", "Always 1; the version is in the label.")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid gauge");
        build_info.set(1);

        // Every outcome and direction exists from the first scrape, so `rate()` and the load tester's
        // before/after differences never meet a missing series.
        for r in JoinResult::ALL {
            joins.with_label_values(&[r.as_str()]);
        }
        for d in [Direction::In, Direction::Out] {
            signaling.with_label_values(&[d.as_str()]);
        }

        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(join_duration.clone()),
            Box::new(joins.clone()),
            Box::new(signaling.clone()),
            Box::new(api_duration.clone()),
            Box::new(provider_requests.clone()),
            Box::new(provider_errors.clone()),
            Box::new(failovers.clone()),
            Box::new(cleaned.clone()),
            Box::new(throttled.clone()),
            Box::new(sockets_refused.clone()),
            Box::new(sockets_open.clone()),
            Box::new(request_timeouts.clone()),
            Box::new(build_info),
            Box::new(LiveCollector::new(rooms)),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        registry.register(Box::new(process::ProcessMetrics::new())).expect("process metric names are unique");

        Arc::new(Self {
            registry,
            join_duration,
            joins,
            signaling,
            api_duration,
            provider_requests,
            provider_errors,
            failovers,
            cleaned,
            throttled,
            sockets_refused,
            sockets_open,
            request_timeouts,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// A socket's join phase ended; `elapsed` only for a successful join, timed until `joined` was sent.
    pub fn join_finished(&self, result: JoinResult, elapsed: Option<Duration>) {
        self.joins.with_label_values(&[result.as_str()]).inc();
        if let Some(d) = elapsed {
            self.join_duration.observe(d.as_secs_f64());
        }
    }

    pub fn signaling_message(&self, direction: Direction) {
        self.signaling.with_label_values(&[direction.as_str()]).inc();
    }

    pub fn api_request(&self, action: ApiAction, status: StatusCode, elapsed: Duration) {
        self.api_duration.with_label_values(&[action.as_str(), status.as_str()]).observe(elapsed.as_secs_f64());
    }

    /// A backend call and, if it failed, its error code (a fixed name, never provider text).
    pub fn provider_call(&self, provider: Provider, op: ProviderOp, error: Option<&'static str>) {
        self.provider_requests.with_label_values(&[provider.as_str(), op.as_str()]).inc();
        if let Some(code) = error {
            self.provider_errors.with_label_values(&[provider.as_str(), op.as_str(), code]).inc();
        }
    }

    pub fn failover(&self, from: Provider, to: Provider, reason: &'static str) {
        self.failovers.with_label_values(&[from.as_str(), to.as_str(), reason]).inc();
    }

    pub fn throttled(&self, scope: ThrottleScope) {
        self.throttled.with_label_values(&[scope.as_str()]).inc();
    }

    pub fn socket_refused(&self, cap: SocketCap) {
        self.sockets_refused.with_label_values(&[cap.as_str()]).inc();
    }

    /// The number of open signaling sockets (kept by `http::sockets`, which counts them).
    pub fn set_sockets_open(&self, n: usize) {
        self.sockets_open.set(n as i64);
    }

    pub fn request_timed_out(&self) {
        self.request_timeouts.inc();
    }

    /// Reports the embedded TURN server's counters at scrape time.
    pub fn watch_turn(&self, stats: Arc<crate::turn::TurnStats>) {
        if let Err(e) = self.registry.register(Box::new(TurnCollector::new(stats))) {
            tracing::error!(error = %e, "registering the TURN metrics failed");
        }
    }

    /// `reason`: `idle`, `window` or `gone`.
    pub fn meeting_cleaned(&self, provider: Provider, reason: &'static str) {
        self.cleaned.with_label_values(&[provider.as_str(), reason]).inc();
    }
}

/// One metric read from live state at scrape time.
struct Live {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    label: Option<&'static str>,
}

const MEETINGS: Live = Live {
    name: "telehealth_meetings",
    help: "Meetings with at least one participant connected.",
    kind: MetricType::GAUGE,
    label: None,
};
const PARTICIPANTS: Live = Live {
    name: "telehealth_participants",
    help: "Participants connected, all meetings.",
    kind: MetricType::GAUGE,
    label: None,
};
const PEER_CONNECTIONS: Live = Live {
    name: "telehealth_peer_connections",
    help: "Open SFU peer connections.",
    kind: MetricType::GAUGE,
    label: None,
};
const TASKS: Live = Live {
    name: "telehealth_tasks",
    help: "Tasks alive in the server's async runtime (a number that only grows is a leak).",
    kind: MetricType::GAUGE,
    label: None,
};
const PACKETS_RECEIVED: Live = Live {
    name: "telehealth_sfu_packets_received_total",
    help: "RTP packets received from publishers.",
    kind: MetricType::COUNTER,
    label: None,
};
const PACKETS_FORWARDED: Live = Live {
    name: "telehealth_sfu_packets_forwarded_total",
    help: "RTP packets written to subscribers.",
    kind: MetricType::COUNTER,
    label: None,
};
const BYTES_FORWARDED: Live = Live {
    name: "telehealth_sfu_bytes_forwarded_total",
    help: "RTP bytes written to subscribers.",
    kind: MetricType::COUNTER,
    label: None,
};
const PACKETS_SKIPPED: Live = Live {
    name: "telehealth_sfu_packets_skipped_total",
    help: "RTP packets a subscriber's connection refused (renegotiation in flight); it resyncs on a keyframe.",
    kind: MetricType::COUNTER,
    label: None,
};
const PACKETS_DUPLICATE: Live = Live {
    name: "telehealth_sfu_packets_duplicate_total",
    help: "Second copies of a publisher's RTP packet (its sequence number already forwarded), not forwarded again.",
    kind: MetricType::COUNTER,
    label: None,
};
const KEYFRAME_REQUESTS: Live = Live {
    name: "telehealth_sfu_keyframe_requests_total",
    help: "Keyframe requests: source=viewer received from viewers (PLI/FIR), \
           source=relayed sent to publishers after throttling.",
    kind: MetricType::COUNTER,
    label: Some("source"),
};
const SRTP_CONNECTIONS: Live = Live {
    name: "telehealth_sfu_srtp_connections_total",
    help: "Media connections by the SRTP protection profile their DTLS handshake chose.",
    kind: MetricType::COUNTER,
    label: Some("profile"),
};
const FORWARDING_DELAY: Live = Live {
    name: "telehealth_sfu_forwarding_delay_seconds",
    help: "Time publishers' RTP packets spend in the gateway: from the kernel's receive timestamp (queueing in the \
           socket included) to handing the subscribers' copies to the kernel.",
    kind: MetricType::HISTOGRAM,
    label: None,
};
const LIVE: [Live; 12] = [
    MEETINGS,
    PARTICIPANTS,
    PEER_CONNECTIONS,
    TASKS,
    PACKETS_RECEIVED,
    PACKETS_FORWARDED,
    BYTES_FORWARDED,
    PACKETS_SKIPPED,
    PACKETS_DUPLICATE,
    KEYFRAME_REQUESTS,
    SRTP_CONNECTIONS,
    FORWARDING_DELAY,
];

/// Reads the room registry and the SFU's own counters when scraped.
struct LiveCollector {
    rooms: Arc<Rooms>,
    descs: Vec<Desc>,
}

impl LiveCollector {
    fn new(rooms: Arc<Rooms>) -> Self {
        Self { rooms, descs: descs(&LIVE) }
    }
}

impl Collector for LiveCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sfu = self.rooms.sfu().stats.snapshot();
        let one = |m: &Live, v: u64| family(m, vec![sample(m.kind, &[], v as f64)]);
        vec![
            one(&MEETINGS, self.rooms.meeting_count() as u64),
            one(&PARTICIPANTS, self.rooms.total_participants() as u64),
            one(&PEER_CONNECTIONS, sfu.peer_connections),
            // Scraped from outside the runtime (a unit test) there is no runtime to ask: 0.
            one(&TASKS, tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_alive_tasks() as u64)),
            one(&PACKETS_RECEIVED, sfu.packets_in),
            one(&PACKETS_FORWARDED, sfu.packets_out),
            one(&BYTES_FORWARDED, sfu.bytes_out),
            one(&PACKETS_SKIPPED, sfu.packets_skipped),
            one(&PACKETS_DUPLICATE, sfu.packets_duplicate),
            family(
                &KEYFRAME_REQUESTS,
                vec![
                    sample(MetricType::COUNTER, &[("source", "viewer")], sfu.viewer_keyframe_requests as f64),
                    sample(MetricType::COUNTER, &[("source", "relayed")], sfu.keyframe_requests as f64),
                ],
            ),
            family(
                &SRTP_CONNECTIONS,
                SRTP_PROFILES
                    .iter()
                    .zip(sfu.srtp_profiles)
                    .map(|(p, n)| sample(MetricType::COUNTER, &[("profile", p)], n as f64))
                    .collect(),
            ),
            family(&FORWARDING_DELAY, vec![delay_histogram(&self.rooms.sfu().stats.forwarding_delay)]),
        ]
    }
}

const TURN_ALLOCATIONS: Live = Live {
    name: "telehealth_turn_allocations",
    help: "Relays the embedded TURN server holds open.",
    kind: MetricType::GAUGE,
    label: None,
};
const TURN_REFUSED: Live = Live {
    name: "telehealth_turn_refused_total",
    help: "What the embedded TURN server refused: reason=credential requests naming an expired or malformed \
           credential, reason=peer packets to or from an address that is not the SFU's.",
    kind: MetricType::COUNTER,
    label: Some("reason"),
};

/// The embedded TURN server's counters, as its engine last published them.
struct TurnCollector {
    stats: Arc<crate::turn::TurnStats>,
    descs: Vec<Desc>,
}

impl TurnCollector {
    fn new(stats: Arc<crate::turn::TurnStats>) -> Self {
        Self { stats, descs: descs(&[TURN_ALLOCATIONS, TURN_REFUSED]) }
    }
}

impl Collector for TurnCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.stats.load();
        vec![
            family(&TURN_ALLOCATIONS, vec![sample(MetricType::GAUGE, &[], s.allocations as f64)]),
            family(
                &TURN_REFUSED,
                vec![
                    sample(MetricType::COUNTER, &[("reason", "credential")], s.refused_credentials as f64),
                    sample(MetricType::COUNTER, &[("reason", "peer")], s.refused_peer_packets as f64),
                ],
            ),
        ]
    }
}

/// The descriptions a collector registers for `metrics`.
fn descs(metrics: &[Live]) -> Vec<Desc> {
    metrics
        .iter()
        .map(|m| {
            let labels = m.label.map(|l| vec![l.to_owned()]).unwrap_or_default();
            Desc::new(m.name.to_owned(), m.help.to_owned(), labels, HashMap::new()).expect("valid metric name")
        })
        .collect()
}

fn delay_histogram(h: &DelayHistogram) -> proto::Metric {
    let (cumulative, sum_us) = h.cumulative();
    let mut histogram = proto::Histogram::default();
    histogram.set_bucket(
        DELAY_BUCKETS_US
            .iter()
            .zip(cumulative)
            .map(|(&bound_us, count)| {
                let mut b = proto::Bucket::default();
                b.set_upper_bound(bound_us as f64 / 1e6);
                b.set_cumulative_count(count);
                b
            })
            .collect(),
    );
    histogram.set_sample_count(cumulative[cumulative.len() - 1]);
    histogram.set_sample_sum(sum_us as f64 / 1e6);
    let mut m = proto::Metric::default();
    m.set_histogram(histogram);
    m
}

fn family(m: &Live, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(m.name.to_owned());
    f.set_help(m.help.to_owned());
    f.set_field_type(m.kind);
    f.set_metric(metrics);
    f
}

fn sample(kind: MetricType, labels: &[(&str, &str)], value: f64) -> proto::Metric {
    let pairs = labels
        .iter()
        .map(|(k, v)| {
            let mut p = proto::LabelPair::default();
            p.set_name((*k).to_owned());
            p.set_value((*v).to_owned());
            p
        })
        .collect();
    let mut m = proto::Metric::from_label(pairs);
    if kind == MetricType::COUNTER {
        let mut c = proto::Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = proto::Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}

#[cfg(target_os = "linux")]
mod process {
    //! prometheus' `ProcessCollector` (memory, file descriptors, threads, start time), except that its
    //! `process_cpu_seconds_total` is truncated to whole seconds: a 20-second load test at 30 % CPU would
    //! read 6 ± 1. We report the same counter to the clock tick, read from `/proc/self/stat`.

    use prometheus::core::{Collector, Desc};
    use prometheus::process_collector::ProcessCollector;
    use prometheus::proto::MetricFamily;

    const CPU: &str = "process_cpu_seconds_total";
    /// `USER_HZ`: the unit of the CPU times in `/proc`, 100 on every architecture Linux runs on today
    /// (it is part of the kernel ABI, independent of the kernel's internal HZ).
    const TICKS_PER_SECOND: f64 = 100.0;

    pub struct ProcessMetrics {
        inner: ProcessCollector,
    }

    impl ProcessMetrics {
        pub fn new() -> Self {
            Self { inner: ProcessCollector::for_self() }
        }
    }

    impl Collector for ProcessMetrics {
        fn desc(&self) -> Vec<&Desc> {
            self.inner.desc()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let mut families = self.inner.collect();
            if let Some(seconds) = cpu_seconds() {
                for m in families.iter_mut().filter(|f| f.name() == CPU).flat_map(|f| f.mut_metric().iter_mut()) {
                    let mut c = prometheus::proto::Counter::default();
                    c.set_value(seconds);
                    m.set_counter(c);
                }
            }
            families
        }
    }

    /// User + system CPU time of this process, all threads.
    fn cpu_seconds() -> Option<f64> {
        parse_cpu_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?).map(|t| t as f64 / TICKS_PER_SECOND)
    }

    /// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2) may hold
    /// spaces and parentheses, so fields are counted from the last `)`.
    pub(super) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
        let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
        // After the name: state is field 3, so utime (14) is the 12th and stime (15) the 13th.
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(utime + stime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::{Sfu, SfuConfig};
    use std::sync::atomic::Ordering;

    fn value(body: &str, series: &str) -> Option<f64> {
        body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn sfu_counters_are_read_when_scraped_not_copied() {
        let rooms = Rooms::new(Sfu::new(SfuConfig::default()).unwrap());
        let metrics = Metrics::new(Arc::clone(&rooms));
        assert_eq!(value(&metrics.render(), "telehealth_sfu_packets_forwarded_total"), Some(0.0));
        let stats = &rooms.sfu().stats;
        stats.packets_out.fetch_add(41, Ordering::Relaxed);
        stats.keyframe_requests.fetch_add(2, Ordering::Relaxed);
        stats.viewer_keyframe_requests.fetch_add(5, Ordering::Relaxed);
        let body = metrics.render();
        assert_eq!(value(&body, "telehealth_sfu_packets_forwarded_total"), Some(41.0));
        assert_eq!(value(&body, r#"telehealth_sfu_keyframe_requests_total{source="relayed"}"#), Some(2.0));
        assert_eq!(value(&body, r#"telehealth_sfu_keyframe_requests_total{source="viewer"}"#), Some(5.0));
        assert!(body.contains("# TYPE telehealth_sfu_packets_forwarded_total counter"), "{body}");
        assert!(body.contains("# TYPE telehealth_participants gauge"), "{body}");
        // The forwarding-delay histogram, in seconds with Prometheus' cumulative buckets.
        stats.forwarding_delay.observe(std::time::Duration::from_micros(300));
        stats.forwarding_delay.observe(std::time::Duration::from_millis(30));
        let body = metrics.render();
        assert!(body.contains("# TYPE telehealth_sfu_forwarding_delay_seconds histogram"), "{body}");
        assert_eq!(value(&body, r#"telehealth_sfu_forwarding_delay_seconds_bucket{le="0.00025"}"#), Some(0.0));
        assert_eq!(value(&body, r#"telehealth_sfu_forwarding_delay_seconds_bucket{le="0.0005"}"#), Some(1.0));
        assert_eq!(value(&body, r#"telehealth_sfu_forwarding_delay_seconds_bucket{le="0.05"}"#), Some(2.0));
        assert_eq!(value(&body, r#"telehealth_sfu_forwarding_delay_seconds_bucket{le="+Inf"}"#), Some(2.0));
        assert_eq!(value(&body, "telehealth_sfu_forwarding_delay_seconds_count"), Some(2.0));
        assert_eq!(value(&body, "telehealth_sfu_forwarding_delay_seconds_sum"), Some(0.0303));
    }

    #[test]
    fn every_join_result_is_exposed_from_the_start() {
        let metrics = Metrics::new(Rooms::new(Sfu::new(SfuConfig::default()).unwrap()));
        let body = metrics.render();
        for r in JoinResult::ALL {
            assert_eq!(value(&body, &format!("telehealth_joins_total{{result=\"{}\"}}", r.as_str())), Some(0.0), "{body}");
        }
        metrics.join_finished(JoinResult::Full, None);
        assert_eq!(value(&metrics.render(), r#"telehealth_joins_total{result="full"}"#), Some(1.0));
        assert_eq!(value(&metrics.render(), "telehealth_join_duration_seconds_count"), Some(0.0));
    }

    #[test]
    fn api_labels_are_the_action_and_the_status_code() {
        let metrics = Metrics::new(Rooms::new(Sfu::new(SfuConfig::default()).unwrap()));
        metrics.api_request(ApiAction::ListAttendees, StatusCode::NOT_FOUND, Duration::from_millis(3));
        let body = metrics.render();
        let series = r#"telehealth_api_request_duration_seconds_count{action="list-attendees",status="404"}"#;
        assert_eq!(value(&body, series), Some(1.0), "{body}");
        let le = r#"telehealth_api_request_duration_seconds_bucket{action="list-attendees",status="404",le="0.002"}"#;
        assert_eq!(value(&body, le), Some(0.0), "{body}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4242 (tele (gw) x) S 1 4242 4242 0 -1 4194560 1905 0 0 0 250 37 0 0 20 0 9 0 123 456 789";
        assert_eq!(process::parse_cpu_ticks(stat), Some(287));
        assert_eq!(process::parse_cpu_ticks("garbage"), None);
    }
}
