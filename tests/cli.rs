//! The binary itself, as an operator runs it: `serve` prints the banner on stdout, keeps keys out of stderr,
//! and stops cleanly on SIGTERM; `migrate` prepares a database and exits.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_telehealth-gateway");

fn gateway(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("HTTPS_ADDR", "127.0.0.1:0")
        .env("WEB_DIR", dir.join("web"));
    cmd
}

#[test]
fn serve_prints_the_banner_answers_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = gateway(dir.path()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut banner, mut http) = (String::new(), None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(url) = line.trim().strip_prefix("http:") {
            http = Some(url.trim().trim_end_matches('/').to_owned());
        }
        banner.push_str(&line);
        if line.contains("try: curl") {
            break;
        }
    }
    let http = http.unwrap_or_else(|| panic!("the banner names the HTTP URL:\n{banner}"));
    assert!(banner.contains("DEMO MODE: local SFU (no AWS credentials)"), "{banner}");
    let key = std::fs::read_to_string(dir.path().join("data/api-key")).unwrap().trim().to_owned();
    assert!(banner.contains(&key), "a freshly generated key is shown in the banner");

    let health = Command::new("curl").args(["-s", &format!("{http}/healthz")]).output();
    if let Ok(out) = health {
        assert_eq!(String::from_utf8_lossy(&out.stdout), r#"{"status":"ok"}"#);
    }

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the gateway stops within its grace period");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("stopped"), "{stderr}");
    assert!(!stderr.contains(&key), "the key never reaches the log:\n{stderr}");
}

#[test]
fn migrate_creates_the_database_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let out = gateway(dir.path()).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("data/telehealth.db").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("data")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the data directory is owner-only");
    }
}

#[test]
fn bad_media_settings_refuse_to_start_and_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("RTC_SRTP_PROFILES", "cm"),
        ("RTC_SHARDS", "0"),
        ("RTC_ICE_TCP", "maybe"),
        ("RESUME_WINDOW_SECS", "soon"),
        ("SOCKET_STALL_SECS", "-1"),
        ("TURN_URLS", "turn:127.0.0.1:3478"), // without TURN_SECRET
        ("TURN_SECRET", "only-the-secret"),
    ] {
        let out = gateway(dir.path()).env(var, value).arg("migrate").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} was accepted");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
    }
    let out = gateway(dir.path()).env("RTC_SRTP_PROFILES", "gcm").arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_limits_and_invite_lifetimes_refuse_to_start_and_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        ("RATE_LIMIT_API_PER_KEY", "fast"),
        ("RATE_LIMIT_API_PER_IP", "10/h"),
        ("RATE_LIMIT_JOIN_PER_IP", "5/s,burst=0"),
        ("LIMIT_EXEMPT_ADDRS", "the-office"),
        ("MAX_WEBSOCKETS", "0"),
        ("MAX_WEBSOCKETS_PER_IP", "lots"),
        ("HTTP_HEADER_TIMEOUT_MS", "0"),
        // Not above CHIME_TIMEOUT_MS (5000): a failover would time out.
        ("HTTP_REQUEST_TIMEOUT_MS", "3000"),
        ("INVITE_TTL", "forever"),
        ("INVITE_GRACE", "400d"),
    ];
    for (var, value) in bad {
        let out = gateway(dir.path()).env(var, value).arg("migrate").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} was accepted");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
    }
    let good = [
        ("RATE_LIMIT_API_PER_KEY", "600/min,burst=100"),
        ("RATE_LIMIT_API_PER_IP", "off"),
        ("RATE_LIMIT_JOIN_PER_IP", "0"),
        ("LIMIT_EXEMPT_ADDRS", "none"),
        ("MAX_WEBSOCKETS", "30000"),
        ("HTTP_REQUEST_TIMEOUT_MS", "60000"),
        ("INVITE_TTL", "14d"),
        ("INVITE_GRACE", "0"),
    ];
    let out = gateway(dir.path()).envs(good).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
