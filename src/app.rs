//! The application state every request handler sees. Backends (inside the meetings service), stores and the
//! room registry are trait objects / shared handles, so a test can swap any of them.

use crate::auth::Auth;
use crate::config::Config;
use crate::meetings::MeetingService;
use crate::metrics::Metrics;
use crate::room::{Admission, Rooms};
use crate::appointments::AppointmentService;
use crate::store::Store;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub auth: Arc<Auth>,
    pub meetings: Arc<MeetingService>,
    pub appointments: Arc<AppointmentService>,
    /// Rung after a change queued notifications, so the outbox worker sends them at once.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    pub rooms: Arc<Rooms>,
    /// The one way into a room: `/ws` hands every `join` to it.
    pub admission: Arc<Admission>,
    /// What `GET /metrics` exposes; handlers record latencies and outcomes here.
    pub metrics: Arc<Metrics>,
    /// Flips once when the server starts draining: new joins are refused from then on.
    pub shutdown: Shutdown,
}

/// A cloneable "we are shutting down" flag that can also be awaited.
#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (tx, rx) = watch::channel(false);
        Self { tx: Arc::new(tx), rx }
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }
    /// Resolves once `trigger` has been called (immediately if it already was).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|v| *v).await;
    }
}
