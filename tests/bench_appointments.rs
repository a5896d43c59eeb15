//! Appointments created per second through `POST /api/appointments` against a running gateway (not part of the
//! suite: `#[ignore]`). `scripts/bench appointments` starts a release gateway on SQLite and on PostgreSQL and
//! runs this against each:
//!
//!   BENCH_URL=http://127.0.0.1:18480 BENCH_KEY=… cargo test --release --test bench_appointments -- --ignored --nocapture
//!
//! Each appointment is a telehealth visit two days ahead with an email and a phone: one meeting, the
//! appointment, its audit line and six outbox messages (confirmation and two reminders, on two channels).

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run by scripts/bench appointments"]
async fn appointments_per_second() {
    let url = env("BENCH_URL", "http://127.0.0.1:18480");
    let key = std::env::var("BENCH_KEY").expect("BENCH_KEY: the gateway's API key");
    let total: usize = env("BENCH_APPOINTMENTS", "3000").parse().unwrap();
    let concurrency: usize = env("BENCH_CONCURRENCY", "16").parse().unwrap();
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, key, next) = (client.clone(), url.clone(), key.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return latencies;
                    }
                    let body = json!({
                        "client_name": format!("Bench Client {i}"),
                        "client_email": format!("bench{i}@example.com"),
                        "client_phone": "+14155550123",
                        "practitioner": "Dr. Bench",
                        "start_time": (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339(),
                        "duration_minutes": 30,
                        "modality": "telehealth",
                    });
                    let t = Instant::now();
                    let res = client.post(format!("{url}/api/appointments")).bearer_auth(&key).json(&body).send().await.unwrap();
                    assert_eq!(res.status(), reqwest::StatusCode::CREATED, "{}", res.text().await.unwrap());
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut all: Vec<Duration> = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "appointments: {total} in {:.2} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms (concurrency {concurrency})",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
    assert_eq!(all.len(), total);
}
