//! 429 `Throttling`: token buckets per API key and per client address (governor's GCRA, keyed), in front of
//! the API routes and the console's sign-in (`api`) and of the signaling socket's upgrade (`join`).
//!
//! The answer is the contract's error JSON with a `Retry-After` header (whole seconds, at least 1), and every
//! refusal is counted in `telehealth_throttled_total{scope}`. Refusals are not logged: a log line per refused
//! request would let a flood fill the disk, and the address must not be logged anyway.
//!
//! Order: the address's bucket first (it costs nothing to look up), then the key's, so a flood of requests
//! with made-up keys is stopped by address. Only valid keys get a bucket, so the per-key state is bounded by
//! the configured keys; the per-address state is bounded by sweeping out addresses whose bucket is full again
//! (`retain_recent`), at most every `SWEEP_EVERY`, on the request path (no task to start or stop).
//!
//! Clients in `LIMIT_EXEMPT_ADDRS` (loopback by default: the load tester, a same-host proxy) pass untouched.

use super::caller;
use super::client::{ClientKey, is_exempt, peer_ip};
use super::error::{ApiError, ErrorCode};
use crate::app::AppState;
use crate::config::{LimitsConfig, RateLimit};
use crate::metrics::{Metrics, ThrottleScope};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often idle per-address buckets are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

pub struct Throttle {
    api_per_key: Option<Bucket<String>>,
    api_per_ip: Option<Bucket<ClientKey>>,
    join_per_ip: Option<Bucket<ClientKey>>,
    exempt: Vec<IpNet>,
    metrics: Arc<Metrics>,
    last_sweep: Mutex<Instant>,
}

/// One keyed limiter.
struct Bucket<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Bucket<K> {
    fn new(rate: Option<RateLimit>) -> Option<Self> {
        let rate = rate?;
        let quota = if rate.per == Duration::from_secs(1) { Quota::per_second(rate.count) } else { Quota::per_minute(rate.count) };
        Some(Self { limiter: RateLimiter::keyed(quota.allow_burst(rate.burst)) })
    }

    /// Takes a token, or says how long until one is back.
    fn take(&self, key: &K) -> Result<(), Duration> {
        self.limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

impl Throttle {
    pub fn new(limits: &LimitsConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            api_per_key: Bucket::new(limits.api_per_key),
            api_per_ip: Bucket::new(limits.api_per_ip),
            join_per_ip: Bucket::new(limits.join_per_ip),
            exempt: limits.exempt.clone(),
            metrics,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// The address's bucket in `bucket`, unless the address is exempt (or unknown).
    fn by_address(&self, bucket: &Option<Bucket<ClientKey>>, ip: Option<std::net::IpAddr>) -> Result<(), Duration> {
        let (Some(bucket), Some(ip)) = (bucket, ip) else { return Ok(()) };
        self.sweep();
        bucket.take(&ClientKey::of(ip))
    }

    /// Drops the buckets of addresses that have been quiet long enough to be full again: they are the same as
    /// no bucket at all. One request in `SWEEP_EVERY` pays for it; the others do not wait for it.
    fn sweep(&self) {
        let Ok(mut last) = self.last_sweep.try_lock() else { return };
        if last.elapsed() < SWEEP_EVERY {
            return;
        }
        *last = Instant::now();
        drop(last);
        self.drop_idle();
    }

    fn drop_idle(&self) {
        for bucket in [&self.api_per_ip, &self.join_per_ip].into_iter().flatten() {
            bucket.limiter.retain_recent();
            bucket.limiter.shrink_to_fit();
        }
    }

    /// Per-address buckets held now.
    #[cfg(test)]
    fn tracked_addresses(&self) -> usize {
        [&self.api_per_ip, &self.join_per_ip].into_iter().flatten().map(|b| b.limiter.len()).sum()
    }

    fn refuse(&self, scope: ThrottleScope, wait: Duration) -> Response {
        self.metrics.throttled(scope);
        let message = match scope {
            ThrottleScope::ApiKey => "too many requests with this API key; slow down and retry after the Retry-After seconds",
            ThrottleScope::ApiIp => "too many requests from this address; slow down and retry after the Retry-After seconds",
            ThrottleScope::JoinIp => "too many join attempts from this address; retry after the Retry-After seconds",
        };
        let mut res = ApiError::new(ErrorCode::Throttling, message).into_response();
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
        res
    }
}

/// Whole seconds, rounded up, at least 1 (`Retry-After: 0` would invite an immediate retry).
fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// In front of the API routes and the console's sign-in: per address, then per API key (a console session
/// counts as the key it was signed in with).
pub async fn api(State((state, throttle)): State<(AppState, Arc<Throttle>)>, req: Request, next: Next) -> Response {
    let ip = peer_ip(req.extensions());
    if ip.is_some_and(|ip| is_exempt(ip, &throttle.exempt)) {
        return next.run(req).await;
    }
    if let Err(wait) = throttle.by_address(&throttle.api_per_ip, ip) {
        return throttle.refuse(ThrottleScope::ApiIp, wait);
    }
    if let Some(bucket) = &throttle.api_per_key
        && let Some(caller) = identify(&state, req.headers())
        && let Err(wait) = bucket.take(&caller.audit_actor())
    {
        return throttle.refuse(ThrottleScope::ApiKey, wait);
    }
    next.run(req).await
}

/// In front of `GET /ws`: join attempts per address, answered before the upgrade.
pub async fn join(State(throttle): State<Arc<Throttle>>, req: Request, next: Next) -> Response {
    let ip = peer_ip(req.extensions());
    if ip.is_some_and(|ip| is_exempt(ip, &throttle.exempt)) {
        return next.run(req).await;
    }
    if let Err(wait) = throttle.by_address(&throttle.join_per_ip, ip) {
        return throttle.refuse(ThrottleScope::JoinIp, wait);
    }
    next.run(req).await
}


/// Whose budget a request spends, for the per-key rate limit: a valid bearer key, or the key (or `console`) a
/// live console session acts as. None for anyone else (invites, wrong keys): the per-address limit covers them.
fn identify(state: &AppState, headers: &axum::http::HeaderMap) -> Option<crate::auth::Caller> {
    match caller::bearer_caller(state, headers) {
        Some(caller) => caller,
        None => super::console::session_caller(state, headers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_never_says_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(59)), 59);
    }

    #[test]
    fn a_bucket_gives_its_burst_then_says_when_the_next_token_is_back() {
        let rate = RateLimit::parse("6/min,burst=2").unwrap();
        let b = Bucket::<u8>::new(rate).unwrap();
        assert!(b.take(&1).is_ok() && b.take(&1).is_ok());
        let wait = b.take(&1).unwrap_err();
        assert!(wait > Duration::from_secs(8) && wait <= Duration::from_secs(10), "{wait:?}");
        assert!(b.take(&2).is_ok(), "another key has its own bucket");
        assert!(Bucket::<u8>::new(None).is_none(), "off is no bucket");
    }

    #[test]
    fn quiet_addresses_are_swept_out_and_busy_ones_kept() {
        let limits = LimitsConfig { api_per_ip: RateLimit::parse("1000/s").unwrap(), join_per_ip: None, ..Default::default() };
        let sfu = crate::sfu::SfuConfig { bind_ips: vec!["127.0.0.1".parse().unwrap()], ..Default::default() };
        let metrics = Metrics::new(crate::room::Rooms::new(crate::sfu::Sfu::new(sfu).unwrap()));
        let t = Throttle::new(&limits, metrics);
        for i in 0..100u32 {
            let ip = std::net::IpAddr::from(std::net::Ipv4Addr::from(0xC000_0200 + i));
            assert!(t.by_address(&t.api_per_ip, Some(ip)).is_ok());
        }
        // One address spends half its burst: its bucket needs half a second to fill again.
        let busy = Some("198.51.100.1".parse().unwrap());
        for _ in 0..500 {
            assert!(t.by_address(&t.api_per_ip, busy).is_ok());
        }
        assert_eq!(t.tracked_addresses(), 101);
        // A token comes back every millisecond: the one-request addresses are full again after that.
        std::thread::sleep(Duration::from_millis(20));
        t.drop_idle();
        assert_eq!(t.tracked_addresses(), 1, "only the busy address is still remembered");
    }
}
