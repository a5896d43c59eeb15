//! `telehealth-loadtest`, the real binary, against a real in-process server: its report must agree
//! with what the server itself says on `/metrics` (scraped here, independently of the load tester's own scrapes).

// The gateway's own test server.
#[path = "../../tests/common/mod.rs"]
mod common;

use common::TestServer;
use serde_json::Value;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_telehealth-loadtest");

/// Sum of every sample of `name` (all label sets) whose labels contain `labels`.
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (lbl, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            lbl.contains(labels).then(|| value.trim().parse::<f64>().ok()).flatten()
        })
        .sum()
}

async fn scrape(server: &TestServer) -> String {
    let res = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert!(res.status().is_success());
    res.text().await.unwrap()
}

/// Runs the load generator against `server` with `args`; returns (exit ok, stdout, report JSON).
async fn loadtest(server: &TestServer, key: &str, args: &[&str]) -> (bool, String, Option<Value>) {
    let json = server.dir.path().join(format!("report-{}.json", rand_suffix()));
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(BIN)
            .args(if args.contains(&"--url") { vec![] } else { vec!["--url".to_owned(), server.url("")] })
            // `=` keeps a generated key that begins with '-' one argument (see cli's allow_hyphen_values test).
            .arg(format!("--api-key={key}"))
            .args(["--quiet", "--json"])
            .arg(&json)
            .args(args)
            .env("RUST_LOG", "off")
            .output(),
    )
    .await
    .expect("the load test finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = std::fs::read_to_string(&json).ok().map(|t| serde_json::from_str(&t).expect("the report is JSON"));
    if report.is_some() {
        let stem = json.file_stem().unwrap().to_str().unwrap();
        let pictures: Vec<_> = std::fs::read_dir(json.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(stem) && n.ends_with(".svg")))
            .collect();
        assert!(!pictures.is_empty(), "a histogram picture is written next to the JSON");
    }
    (out.status.success(), stdout + &String::from_utf8_lossy(&out.stderr), report)
}

fn rand_suffix() -> u32 {
    rand::random()
}

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_run_matches_the_servers_metrics() {
    let server = TestServer::start().await;
    let before = scrape(&server).await;
    let (ok, out, report) = loadtest(
        &server,
        &server.key,
        &[
            "--meetings", "2", "--participants-per-meeting", "2", "--rate", "20", "--duration", "3s",
            "--media", "--video-bitrate", "300k", "--ping-interval", "500ms", "--rtc-bind-ip", "127.0.0.1",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("join latency") && out.contains("forwarding delay"), "{out}");
    let r = report.expect("report written");
    let after = scrape(&server).await;
    let delta = |name: &str, labels: &str| metric(&after, name, labels) - metric(&before, name, labels);

    // Participants: the report, the server's join counter and its peak agree.
    assert_eq!(r["participants"]["target"], 4);
    assert_eq!(r["participants"]["joined"], 4, "{r:#}");
    assert_eq!(r["error_count"], 0, "{r:#}");
    assert_eq!(n(&r["join_latency_ms"]["count"]), 4.0);
    assert!(n(&r["join_latency_ms"]["p50"]) > 0.0);
    assert!(n(&r["ping_rtt_ms"]["count"]) > 0.0);
    assert_eq!(delta("telehealth_join_duration_seconds_count", ""), 4.0);
    assert_eq!(n(&r["server"]["participants_peak"]), 4.0, "{r:#}");
    assert_eq!(metric(&after, "telehealth_participants", ""), 0.0, "everyone left");

    // Signaling: every frame the clients sent reached the server, and they received what it sent.
    assert_eq!(n(&r["signaling"]["messages_sent"]), delta("telehealth_signaling_messages_total", "direction=\"in\""), "{r:#}");
    assert_eq!(n(&r["signaling"]["messages_received"]), delta("telehealth_signaling_messages_total", "direction=\"out\""), "{r:#}");

    // Media: each of the 4 participants receives the other's audio and video.
    let m = &r["media"];
    assert_eq!(m["tracks_expected"], 8);
    assert_eq!(m["tracks_received"], 8, "{m:#}");
    assert!(n(&m["packets_received"]) > 0.0);
    assert!(n(&m["loss_ratio"]) < 0.05, "{m:#}");
    assert!(n(&m["forwarding_delay_ms"]["p50"]) > 0.0 && n(&m["forwarding_delay_ms"]["p50"]) < 200.0, "{m:#}");
    // Packets: what the clients received over the whole run cannot exceed what the server forwarded. Most of it
    // arrives; what does not is forwarded in the moments a subscriber is still negotiating or already leaving.
    // Over the hold window (steady state) the two agree closely; the report's server figure is the same counter.
    let forwarded = delta("telehealth_sfu_packets_forwarded_total", "");
    let received = n(&m["run_packets_received"]);
    assert!(received <= forwarded && received >= 0.8 * forwarded, "received {received}, forwarded {forwarded}");
    let (hold_received, hold_forwarded) = (n(&m["packets_received"]), n(&r["server"]["packets_forwarded_window"]));
    assert!((hold_received / hold_forwarded - 1.0).abs() < 0.15, "hold: received {hold_received}, forwarded {hold_forwarded}");
    assert_eq!(n(&r["server"]["packets_forwarded_total"]), forwarded, "{r:#}");
    assert!(n(&r["server"]["cpu_seconds_total"]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signaling_run_counts_every_participant_and_meeting() {
    let server = TestServer::start().await;
    let before = scrape(&server).await;
    let (ok, out, report) =
        loadtest(&server, &server.key, &["--meetings", "20", "--participants-per-meeting", "3", "--rate", "300", "--duration", "1s"]).await;
    assert!(ok, "{out}");
    let r = report.unwrap();
    let after = scrape(&server).await;
    let delta = |name: &str, labels: &str| metric(&after, name, labels) - metric(&before, name, labels);
    assert_eq!(r["participants"]["joined"], 60, "{r:#}");
    assert_eq!(n(&r["server"]["participants_peak"]), 60.0, "{r:#}");
    assert_eq!(n(&r["server"]["meetings_peak"]), 20.0, "{r:#}");
    assert!(r["media"].is_null());
    assert_eq!(delta("telehealth_join_duration_seconds_count", ""), 60.0);
    for (action, count) in [("create-meeting", 20.0), ("create-attendee", 60.0), ("delete-meeting", 20.0)] {
        assert_eq!(n(&r["api"][action]["count"]), count, "{action}");
        let labels = format!("action=\"{action}\",status=\"200\"");
        assert_eq!(delta("telehealth_api_request_duration_seconds_count", &labels), count, "{action}");
    }
    assert!(n(&r["server"]["memory_per_participant_bytes"]).is_finite());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_tls_with_the_self_signed_certificate() {
    let server = TestServer::start().await;
    let url = server.https_url("");
    let args = ["--url", url.as_str(), "--meetings", "2", "--participants-per-meeting", "2", "--duration", "200ms"];
    // Without --insecure the development certificate is (rightly) refused.
    let (ok, out, _) = loadtest(&server, &server.key, &args).await;
    assert!(!ok && out.contains("api create-meeting connection"), "{out}");
    let (ok, out, report) = loadtest(&server, &server.key, &[&args[..], &["--insecure"]].concat()).await;
    assert!(ok, "{out}");
    let r = report.unwrap();
    assert_eq!(r["participants"]["joined"], 4, "{r:#}");
    assert_eq!(n(&r["server"]["participants_peak"]), 4.0, "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_only_run_and_a_wrong_key() {
    let server = TestServer::start().await;
    let (ok, out, report) = loadtest(&server, &server.key, &["--api-only", "--meetings", "50", "--api-concurrency", "8"]).await;
    assert!(ok, "{out}");
    let r = report.unwrap();
    assert_eq!(n(&r["api"]["create-meeting"]["count"]), 50.0);
    assert!(n(&r["api"]["create-meeting"]["per_second"]) > 0.0);
    assert_eq!(n(&r["api"]["delete-meeting"]["count"]), 50.0);

    // A wrong key: the run fails (non-zero exit) and says why, by kind.
    let (ok, out, report) =
        loadtest(&server, "not-the-key-0123456789", &["--meetings", "2", "--duration", "0s"]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("api create-meeting HTTP 401"), "{out}");
    assert_eq!(report.unwrap()["errors"]["api create-meeting HTTP 401"], 2);
}

/// Issue #10's soak, short enough for CI: 6 one-to-one visits with media whose participants drop their socket
/// (and resume) or leave and join again every ~3 s, for 30 s. Afterwards nothing is left behind: no participant,
/// peer connection or meeting, and the server's tasks and open descriptors are back at their baseline. (The
/// 10-minute version with memory figures is `scripts/bench soak`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn churning_visits_leave_nothing_behind() {
    let server = TestServer::start().await;
    let run = |duration: &'static str, churn: Option<&'static str>| {
        let mut args = vec![
            "--meetings", "6", "--participants-per-meeting", "2", "--rate", "20", "--duration", duration, "--media",
            "--video-bitrate", "300k", "--rtc-bind-ip", "127.0.0.1",
        ];
        args.extend(churn.map(|c| ["--churn", c]).into_iter().flatten());
        args
    };
    let gauges = |text: &str| {
        ["telehealth_participants", "telehealth_peer_connections", "telehealth_meetings"].map(|g| metric(text, g, ""))
    };
    // Settled: nobody connected, and the descriptors and tasks of the last run's connections gone.
    let settle = async |server: &TestServer| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = scrape(server).await;
            if gauges(&text) == [0.0; 3] || tokio::time::Instant::now() > deadline {
                tokio::time::sleep(Duration::from_secs(2)).await;
                return scrape(server).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // A warm-up, so that what the first visits create once (shard buffers, pools) is in the baseline.
    let (ok, out, _) = loadtest(&server, &server.key, &run("3s", None)).await;
    assert!(ok, "{out}");
    let before = settle(&server).await;
    let (ok, out, report) = loadtest(&server, &server.key, &run("30s", Some("3s"))).await;
    assert!(ok, "{out}");
    let r = report.expect("report written");
    let p = &r["participants"];
    assert!(n(&p["resumed"]) >= 10.0 && n(&p["rejoined"]) >= 5.0, "the visits churned: {p:#}");
    assert_eq!(r["error_count"], 0, "{r:#}");
    let after = settle(&server).await;
    assert_eq!(gauges(&after), [0.0; 3], "participants, peer connections and meetings all gone");
    let (fds, tasks) = ("process_open_fds", "telehealth_tasks");
    let grew = |name: &str| metric(&after, name, "") - metric(&before, name, "");
    println!(
        "soak: {} resumed, {} rejoined; open fds {} -> {}, tasks {} -> {}, RSS {:.1} -> {:.1} MB (test process)",
        p["resumed"], p["rejoined"], metric(&before, fds, ""), metric(&after, fds, ""), metric(&before, tasks, ""),
        metric(&after, tasks, ""), metric(&before, "process_resident_memory_bytes", "") / 1e6,
        metric(&after, "process_resident_memory_bytes", "") / 1e6
    );
    // The server shares this process with the test's HTTP client, whose pooled connections come and go.
    assert!(grew(fds) <= 4.0, "open descriptors grew by {}", grew(fds));
    assert!(grew(tasks) <= 2.0, "tasks grew by {}", grew(tasks));
}
