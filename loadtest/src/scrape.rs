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

/// One scrape: every sample, summed over its label sets.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    values: HashMap<String, f64>,
}

impl Sample {
    pub fn parse(text: &str) -> Self {
        let mut values: HashMap<String, f64> = HashMap::new();
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
            }
        }
        Self { at: Instant::now(), values }
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
}
