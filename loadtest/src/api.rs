//! The gateway's JSON API as the load tester uses it: create meetings and attendees, delete meetings.
//! Every call is timed per action.

use crate::recorder::Recorder;
use anyhow::Context;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const ACTIONS: [&str; 3] = ["create-meeting", "create-attendee", "delete-meeting"];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an API call failed, as a short stable error kind for the report.
#[derive(Debug, thiserror::Error)]
pub enum ApiFailure {
    #[error("{action}: HTTP {status} {code}")]
    Status { action: &'static str, status: u16, code: String },
    #[error("{action}: {source}")]
    Transport { action: &'static str, source: reqwest::Error },
    #[error("{action}: unexpected response shape")]
    Shape { action: &'static str },
}

impl ApiFailure {
    pub fn kind(&self) -> String {
        match self {
            Self::Status { action, status, .. } => format!("api {action} HTTP {status}"),
            Self::Transport { action, source } if source.is_timeout() => format!("api {action} timeout"),
            Self::Transport { action, .. } => format!("api {action} connection"),
            Self::Shape { action } => format!("api {action} bad response"),
        }
    }
}

pub struct Attendee {
    pub attendee_id: String,
    pub join_token: String,
}

/// Latency and the span of time one action's calls covered (for its throughput).
#[derive(Default)]
pub struct ActionStats {
    pub latency: Recorder,
    span: Mutex<Option<(Instant, Instant)>>,
}

impl ActionStats {
    fn record(&self, started: Instant) {
        let now = Instant::now();
        self.latency.record(now - started);
        let mut span = self.span.lock().unwrap_or_else(|e| e.into_inner());
        *span = Some(match *span {
            None => (started, now),
            Some((first, last)) => (first.min(started), last.max(now)),
        });
    }

    /// Calls per second over the span from the first call's start to the last call's end.
    pub fn per_second(&self) -> f64 {
        let span = *self.span.lock().unwrap_or_else(|e| e.into_inner());
        match span {
            Some((first, last)) if last > first => self.latency.count() as f64 / (last - first).as_secs_f64(),
            _ => 0.0,
        }
    }
}

pub struct Api {
    http: reqwest::Client,
    endpoint: String,
    auth: String,
    actions: BTreeMap<&'static str, ActionStats>,
}

impl Api {
    pub fn new(base: &str, api_key: &str, insecure: bool) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // Load tests open thousands of connections; keep a generous idle pool so calls reuse them.
            .pool_max_idle_per_host(1024)
            // Development servers use the self-signed certificate generated on first start.
            .danger_accept_invalid_certs(insecure)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            endpoint: format!("{}/api/aws-chime-video", base.trim_end_matches('/')),
            auth: format!("Bearer {api_key}"),
            actions: ACTIONS.iter().map(|a| (*a, ActionStats::default())).collect(),
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Statistics of one action (one of `ACTIONS`).
    pub fn action(&self, action: &str) -> Option<&ActionStats> {
        self.actions.get(action)
    }

    async fn call(&self, action: &'static str, body: Value) -> Result<Value, ApiFailure> {
        let started = Instant::now();
        let response = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .json(&body)
            .send()
            .await
            .map_err(|source| ApiFailure::Transport { action, source })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|source| ApiFailure::Transport { action, source })?;
        if let Some(stats) = self.actions.get(action) {
            stats.record(started);
        }
        // An error from a proxy in front of the gateway may not be JSON; its status still says what happened.
        let value: Option<Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let code = value.as_ref().and_then(|v| v["error"]["code"].as_str()).unwrap_or("").to_owned();
            return Err(ApiFailure::Status { action, status: status.as_u16(), code });
        }
        value.ok_or(ApiFailure::Shape { action })
    }

    /// Returns the new meeting's MeetingId.
    pub async fn create_meeting(&self, external_meeting_id: &str) -> Result<String, ApiFailure> {
        const ACTION: &str = "create-meeting";
        let v = self.call(ACTION, json!({"action": ACTION, "externalMeetingId": external_meeting_id})).await?;
        v["meeting"]["MeetingId"].as_str().map(str::to_owned).ok_or(ApiFailure::Shape { action: ACTION })
    }

    pub async fn create_attendee(&self, meeting_id: &str, name: &str) -> Result<Attendee, ApiFailure> {
        const ACTION: &str = "create-attendee";
        let v = self
            .call(ACTION, json!({"action": ACTION, "meetingId": meeting_id, "attendeeName": name}))
            .await?;
        let a = &v["attendee"];
        match (a["AttendeeId"].as_str(), a["JoinToken"].as_str()) {
            (Some(id), Some(token)) => Ok(Attendee { attendee_id: id.to_owned(), join_token: token.to_owned() }),
            _ => Err(ApiFailure::Shape { action: ACTION }),
        }
    }

    pub async fn delete_meeting(&self, meeting_id: &str) -> Result<(), ApiFailure> {
        const ACTION: &str = "delete-meeting";
        self.call(ACTION, json!({"action": ACTION, "meetingId": meeting_id})).await.map(|_| ())
    }
}
