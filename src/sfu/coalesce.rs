//! Fewer, fuller passes once a shard is busy.
//!
//! An idle shard sleeps until a datagram wakes it, so at light load every packet is a pass of its own: a wake-up,
//! an `epoll_wait`, a `recvmmsg`, a `sendmmsg`. That per-pass cost was a third of a shard's time at fan-out 1.
//! Once arrivals come faster than `BUSY_RATE`, the shard instead lets them gather for `LINGER` after a pass that
//! found work, then takes them all in one pass: the fixed cost is shared by every packet of the interval, and a
//! video frame's packets to one subscriber leave together, as one GSO message. The price is at most `LINGER` of
//! extra forwarding delay, and only under load.

use std::time::{Duration, Instant};

/// How long arrivals gather before a busy shard's next pass.
pub const LINGER: Duration = Duration::from_micros(500);
/// Datagrams per second above which a shard counts as busy.
const BUSY_RATE: u32 = 2_000;
/// How often the rate is re-estimated.
const WINDOW: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Coalescer {
    window_start: Instant,
    count: u32,
    busy: bool,
}

impl Coalescer {
    pub fn new(now: Instant) -> Self {
        Self { window_start: now, count: 0, busy: false }
    }

    /// Counts a pass that handled `datagrams`; returns how long to let the next ones gather before the next pass,
    /// or None to sleep until woken (the shard is not busy, or this pass found nothing: traffic has paused).
    pub fn after_pass(&mut self, datagrams: usize, now: Instant) -> Option<Duration> {
        self.count = self.count.saturating_add(datagrams as u32);
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            self.busy = u64::from(self.count) * 1000 >= u64::from(BUSY_RATE) * elapsed.as_millis() as u64;
            self.count = 0;
            self.window_start = now;
        }
        (self.busy && datagrams > 0).then_some(LINGER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_shard_never_lingers_and_a_busy_one_does_while_packets_come() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(t0);
        // 100 datagrams per second, one per pass: each is handled as it comes.
        for i in 1..=50u32 {
            assert_eq!(c.after_pass(1, t0 + Duration::from_millis(10) * i), None);
        }
        // 10,000 per second: measured over one window, busy from then on.
        let t1 = t0 + Duration::from_millis(500);
        let lingered: Vec<bool> = (1..=200u32).map(|i| c.after_pass(10, t1 + Duration::from_millis(1) * i).is_some()).collect();
        assert!(lingered[..99].iter().all(|l| !l), "still measuring");
        assert!(lingered[100..].iter().all(|l| *l), "busy: every pass that found work lingers");
        // A pass that found nothing: traffic paused, so sleep until woken.
        assert_eq!(c.after_pass(0, t1 + Duration::from_millis(201)), None);
        // Traffic falls to a trickle: quiet again once the window closes.
        let t2 = t1 + Duration::from_millis(500);
        assert_eq!(c.after_pass(1, t2), None, "a 200 ms window with one datagram");
        assert_eq!(c.after_pass(1, t2 + Duration::from_millis(10)), None);
    }
}
