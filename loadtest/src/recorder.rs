//! A histogram many tasks record into, in microseconds.

use crate::stats::LatencySummary;
use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::time::Duration;

/// Up to an hour at 3 significant digits: far beyond any latency we expect, and recording never fails.
const MAX_US: u64 = 3_600_000_000;

pub struct Recorder(Mutex<Histogram<u64>>);

impl Default for Recorder {
    fn default() -> Self {
        Self(Mutex::new(Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")))
    }
}

impl Recorder {
    pub fn record(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_US);
        let _ = self.lock().record(us);
    }

    pub fn summary_ms(&self) -> LatencySummary {
        let s = LatencySummary::from_histogram(&self.lock());
        let ms = |v: f64| (v / 10.0).round() / 100.0;
        LatencySummary { count: s.count, p50: ms(s.p50), p95: ms(s.p95), p99: ms(s.p99), max: ms(s.max), mean: ms(s.mean) }
    }

    pub fn count(&self) -> u64 {
        self.lock().len()
    }

    /// A copy, for the picture.
    pub fn histogram(&self) -> Histogram<u64> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Histogram<u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
