//! Reads the server's `/metrics` so the report can put the server's cost next to what clients saw.
//! Only the handful of samples the report needs are interpreted; everything is optional, so a gateway
//! without `/metrics` (or behind a proxy that hides it) still gets a client-side report.

use std::collections::HashMap;
use std::time::Instant;

pub const PARTICIPANTS: &str = "telehealth_participants";
pub const MEETINGS: &str = "telehealth_meetings";
pub const PEER_CONNECTIONS: &str = "telehealth_peer_connections";
pub const PACKETS_RECEIVED: &str = "telehealth_sfu_packets_received_total";
pub const PACKETS_FORWARDED: &str = "telehealth_sfu_packets_forwarded_total";
pub const BYTES_FORWARDED: &str = "telehealth_sfu_bytes_forwarded_total";
pub const SIGNALING_MESSAGES: &str = "telehealth_signaling_messages_total";
pub const JOIN_DURATION_SUM: &str = "telehealth_join_duration_seconds_sum";
pub const JOIN_DURATION_COUNT: &str = "telehealth_join_duration_seconds_count";
pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
pub const RSS_BYTES: &str = "process_resident_memory_bytes";
/// The SFU's own forwarding delay (kernel receive timestamp → copies handed to the kernel), a histogram.
pub const FORWARDING_DELAY: &str = "telehealth_sfu_forwarding_delay_seconds";

/// One scrape: every sample, summed over its label sets, and histograms' buckets by upper bound.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    values: HashMap<String, f64>,
    /// `name_bucket` → (le, cumulative count), in the order served (ascending `le`, +Inf last).
    buckets: HashMap<String, Vec<(f64, f64)>>,
}

impl Sample {
    pub fn parse(text: &str) -> Self {
        let mut values: HashMap<String, f64> = HashMap::new();
        let mut buckets: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // `name{labels} value [timestamp]`; label values may hold spaces, so split after the braces.
            let (name, rest) = match line.find('{') {
                Some(i) => match line[i..].find('}') {
                    Some(j) => (&line[..i], &line[i + j + 1..]),
                    None => continue,
                },
                None => match line.split_once(' ') {
                    Some((n, r)) => (n, r),
                    None => continue,
                },
            };
            if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
                *values.entry(name.to_owned()).or_default() += v;
                if name.ends_with("_bucket")
                    && let Some(le) = line.split("le=\"").nth(1).and_then(|r| r.split('"').next())
                    && let Ok(le) = le.parse::<f64>()
                {
                    buckets.entry(name.to_owned()).or_default().push((le, v));
                }
            }
        }
        Self { at: Instant::now(), values, buckets }
    }

    /// The `q` quantile of histogram `name` over the interval from `self` to `later` (bucket counts subtracted),
    /// interpolated linearly inside its bucket as Prometheus' `histogram_quantile` does. None without samples.
    pub fn quantile_between(&self, later: &Sample, name: &str, q: f64) -> Option<f64> {
        let key = format!("{name}_bucket");
        let (a, b) = (self.buckets.get(&key)?, later.buckets.get(&key)?);
        let counts: Vec<(f64, f64)> = b.iter().zip(a).map(|(&(le, nb), &(_, na))| (le, nb - na)).collect();
        let total = counts.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, cumulative) in &counts {
            if cumulative >= rank {
                if le.is_infinite() {
                    return Some(lower); // beyond the last finite bound: that bound is all we can say
                }
                let inside = cumulative - below;
                return Some(if inside > 0.0 { lower + (le - lower) * (rank - below) / inside } else { le });
            }
            (lower, below) = (le, cumulative);
        }
        None
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    /// `later - self` for a counter present in both.
    pub fn delta(&self, later: &Sample, name: &str) -> Option<f64> {
        Some(later.get(name)? - self.get(name)?)
    }
}

pub async fn scrape(http: &reqwest::Client, base: &str) -> Option<Sample> {
    let url = format!("{}/metrics", base.trim_end_matches('/'));
    let response = http.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    Some(Sample::parse(&response.text().await.ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_label_sets_and_skips_comments() {
        let s = Sample::parse(
            "# HELP x y\n# TYPE telehealth_participants gauge\ntelehealth_participants 4\n\
             telehealth_signaling_messages_total{direction=\"in\"} 10\n\
             telehealth_signaling_messages_total{direction=\"out\"} 2.5e1\n\
             broken_line\n",
        );
        assert_eq!(s.get(PARTICIPANTS), Some(4.0));
        assert_eq!(s.get(SIGNALING_MESSAGES), Some(35.0));
        assert_eq!(s.get("broken_line"), None);
    }

    #[test]
    fn a_histogram_quantile_comes_from_the_buckets_between_two_scrapes() {
        let scrape = |counts: [u32; 4]| {
            Sample::parse(&format!(
                "h_bucket{{le=\"0.001\"}} {}\nh_bucket{{le=\"0.005\"}} {}\nh_bucket{{le=\"0.02\"}} {}\nh_bucket{{le=\"+Inf\"}} {}\n",
                counts[0], counts[1], counts[2], counts[3]
            ))
        };
        let (a, b) = (scrape([50, 60, 60, 60]), scrape([50 + 80, 60 + 100, 60 + 100, 60 + 100]));
        // Between the two: 80 in (0, 1 ms], 20 in (1, 5 ms]. The median is inside the first bucket, p99 in the second.
        let p50 = a.quantile_between(&b, "h", 0.5).unwrap();
        assert!((p50 - 0.000625).abs() < 1e-9, "{p50}");
        let p99 = a.quantile_between(&b, "h", 0.99).unwrap();
        assert!((p99 - (0.001 + 0.004 * 19.0 / 20.0)).abs() < 1e-9, "{p99}");
        assert_eq!(a.quantile_between(&a, "h", 0.5), None, "no samples in between");
        assert_eq!(a.quantile_between(&b, "other", 0.5), None);
    }
}
