//! Test harness: the REAL server, in-process, on 127.0.0.1 port 0 (HTTP and HTTPS), with a fresh SQLite file
//! and generated key/secret/certificate in a temp directory. Tests talk to it over reqwest like any client.
#![allow(dead_code)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use telehealth_gateway::app::AppState;
use telehealth_gateway::auth::KeySource;
use telehealth_gateway::config::{ChimeConfig, Config};
use telehealth_gateway::server::Server;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const API: &str = "/api/aws-chime-video";

pub struct TestServer {
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// The API key the server generated into its data dir.
    pub key: String,
    pub state: AppState,
    pub banner: String,
    pub dir: Arc<TempDir>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A config for a server living entirely inside `dir`, listening on loopback port 0.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::with_data_dir(dir.join("data"));
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.https_addr = Some("127.0.0.1:0".parse().unwrap());
    config.certs_dir = dir.join("certs");
    config.web_dir = dir.join("web");
    // Media only on loopback in tests.
    config.sfu.bind_ips = vec!["127.0.0.1".parse().unwrap()];
    config
}

/// Routes the server's Chime backend to `fake` (as `AWS_ENDPOINT_URL_CHIME_SDK_MEETINGS` and the AWS keys
/// would), with short bounds so a hang fails over quickly. The AWS keys count as set: `auto` means Chime.
pub fn chime_config(config: &mut Config, fake: &fake_chime::FakeChime) {
    let c = fake.credentials();
    config.aws_credentials_present = true;
    config.chime = ChimeConfig {
        region: Some(c.region.clone()),
        endpoint_url: Some(fake.url()),
        credentials: Some((c.access_key_id.clone(), c.secret_access_key.clone(), None)),
        attempt_timeout: std::time::Duration::from_millis(700),
        call_timeout: std::time::Duration::from_millis(1500),
        ..ChimeConfig::default()
    };
}

impl TestServer {
    /// A server whose `auto` provider is Chime, served by `fake`.
    pub async fn with_chime(fake: &fake_chime::FakeChime, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_with(|c| {
            chime_config(c, fake);
            tweak(c);
        })
        .await
    }

    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(Arc::new(tempfile::tempdir().unwrap()), tweak).await
    }

    /// Starts a server on the files in `dir` (used to restart on the same database).
    pub async fn start_in(dir: Arc<TempDir>, tweak: impl FnOnce(&mut Config)) -> Self {
        let web = dir.path().join("web");
        std::fs::create_dir_all(web.join("js")).unwrap();
        std::fs::write(web.join("telehealth-aws.html"), "<!doctype html><title>join</title>").unwrap();
        std::fs::write(web.join("js").join("app.js"), "console.log('app');").unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let server = Server::build(config).await.expect("server builds");
        let (http, https) = (server.http_addr(), server.https_addr().expect("https is on"));
        let state = server.state().clone();
        let banner = server.banner();
        let key = match state.auth.key_source() {
            KeySource::File { key, .. } => key.clone(),
            KeySource::Env { .. } => state.config.api_keys[0].clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
        Self { http, https, key, state, banner, dir, client, stop: Some(stop), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.https)
    }

    /// POSTs `body` to the API with the server's API key.
    pub async fn api(&self, body: Value) -> (StatusCode, Value) {
        self.api_with(Some(&self.key.clone()), body).await
    }

    /// POSTs `body` to the API with the given bearer key (or none).
    pub async fn api_with(&self, key: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = self.client.post(self.url(API)).json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let res = req.send().await.expect("request reaches the server");
        let status = res.status();
        let text = res.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("response is JSON: {text:?}"));
        (status, json)
    }

    /// Creates a meeting and returns its JSON response.
    pub async fn create_meeting(&self) -> Value {
        let (status, body) = self.api(json!({"action": "create-meeting"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn create_attendee(&self, meeting_id: &str, name: &str) -> (StatusCode, Value) {
        self.api(json!({"action": "create-attendee", "meetingId": meeting_id, "attendeeName": name})).await
    }

    /// One series' value from `/metrics`, named exactly as exposed (e.g. `telehealth_throttled_total{scope="api_ip"}`).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let body = self.client.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Stops the server gracefully and waits for it; returns the directory so a new server can reuse it.
    pub async fn stop(mut self) -> Arc<TempDir> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.expect("server task").expect("server stops cleanly");
        self.dir.clone()
    }
}

pub fn meeting_id(create_meeting_response: &Value) -> String {
    create_meeting_response["meeting"]["MeetingId"].as_str().expect("MeetingId").to_owned()
}

/// The invite in a create-meeting `link`.
pub fn invite_of(create_meeting_response: &Value) -> String {
    let link = create_meeting_response["link"].as_str().expect("link");
    link.split("invite=").nth(1).expect("link carries an invite").split('&').next().unwrap().to_owned()
}

pub fn error_code(body: &Value) -> &str {
    assert_eq!(body["success"], json!(false), "{body}");
    body["error"]["code"].as_str().expect("error.code")
}

pub fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok() && s == s.to_lowercase()
}
