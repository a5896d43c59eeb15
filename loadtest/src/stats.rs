//! Small summaries shared by the load tester's reports.
//!
//! Latencies are recorded into `hdrhistogram`s while the run goes on and summarised once per report; the
//! summary is plain numbers so it serialises as-is into the JSON report.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of a latency histogram, in whatever unit the histogram recorded (the field holding the
/// summary names the unit, e.g. `forwarding_delay_us`). All zeros when nothing was recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let q = |quantile: f64| h.value_at_quantile(quantile) as f64;
        Self { count: h.len(), p50: q(0.50), p95: q(0.95), p99: q(0.99), max: h.max() as f64, mean: h.mean() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        let h = Histogram::<u64>::new(3).unwrap();
        assert_eq!(LatencySummary::from_histogram(&h), LatencySummary::default());
    }

    #[test]
    fn percentiles_come_from_the_recorded_values() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 500.0).abs() <= 1.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() <= 1.0, "{s:?}");
        assert_eq!(s.max, 1000.0);
        assert!((s.mean - 500.5).abs() < 1.0, "{s:?}");
    }
}
