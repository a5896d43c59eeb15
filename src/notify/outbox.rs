//! The outbox worker: claims due messages, sends them, settles them. Runs in every gateway process; several
//! processes sharing one PostgreSQL never take the same message (claims skip locked rows).
//!
//! Exactly once, as far as a mail or SMS server lets anyone: a message is claimed (`sending`, one more attempt)
//! in a committed transaction, marked handed over in another just before it goes to its server, and settled
//! after. A process that dies leaves it `sending`; once the claim is older than any send can take, the sweep
//! puts a message that was never handed over back to `pending` (it cannot have arrived, so it goes again),
//! and makes one that was handed over `unknown`: it may have arrived, so it is not sent again by itself (a
//! person decides, with Retry in the console; its stable Message-ID lets mail systems spot a duplicate). The
//! uncertain window is one SMTP or SNS exchange. Nothing is sent twice, and nothing is lost: every message
//! ends `sent`, `failed`, `unknown`, `withdrawn` or `skipped`, visible in the console.
//!
//! With no SMTP or SNS configured (an offline clinic), messages on that channel are not claimed at all: they
//! wait, `pending`, and go out once the channel is configured.

use super::{NotifyConfig, OutboxConfig, SendError, email::SmtpSender, sms::SnsSender, templates::EmailContent};
use crate::store::outbox::{self, Channel, OutboxMessage, OutboxState};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;
use tokio::sync::Notify;

/// The configured channels.
#[derive(Clone, Default)]
pub struct Transports {
    pub email: Option<Arc<SmtpSender>>,
    pub sms: Option<Arc<SnsSender>>,
}

impl Transports {
    /// The transports `config` names (none in an offline clinic).
    pub async fn from_config(config: &NotifyConfig) -> anyhow::Result<Self> {
        let email = config.smtp.as_ref().map(SmtpSender::new).transpose()?.map(Arc::new);
        let sms = match &config.sms {
            Some(sns) => Some(Arc::new(SnsSender::new(sns).await)),
            None => None,
        };
        Ok(Self { email, sms })
    }

    pub fn channels(&self) -> Vec<Channel> {
        let mut c = Vec::new();
        if self.email.is_some() {
            c.push(Channel::Email);
        }
        if self.sms.is_some() {
            c.push(Channel::Sms);
        }
        c
    }
}

pub struct OutboxWorker {
    store: Store,
    transports: Transports,
    config: OutboxConfig,
    /// Names this process in its claims.
    node: String,
    /// Rung when a message is queued, so it goes out at once rather than at the next poll.
    wake: Arc<Notify>,
    /// When abandoned claims were last looked for: a claim is abandoned only after `claim_timeout`, so looking
    /// more often than a few times per timeout finds nothing new (and every look is a write).
    last_sweep: Option<std::time::Instant>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub sent: u32,
    pub retried: u32,
    pub failed: u32,
    pub skipped: u32,
    /// Abandoned claims that never reached their server, queued again.
    pub requeued: u64,
    /// Abandoned claims that had been handed over: now `unknown`.
    pub unknown: u64,
}

impl OutboxWorker {
    /// `wake` is rung by whoever queues messages (the API after an appointment change).
    pub fn new(store: Store, transports: Transports, config: OutboxConfig, node: String, wake: Arc<Notify>) -> Self {
        Self { store, transports, config, node, wake, last_sweep: None }
    }

    /// Runs until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        let channels = self.transports.channels();
        if channels.is_empty() {
            tracing::info!("no SMTP or SMS configured: notifications wait in the outbox");
        }
        tokio::pin!(stop);
        loop {
            match self.pass(Utc::now()).await {
                Ok(p) if p != Pass::default() => tracing::info!(
                    sent = p.sent, retried = p.retried, failed = p.failed, skipped = p.skipped,
                    requeued = p.requeued, unknown = p.unknown,
                    "outbox pass"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox pass failed"),
            }
            let sleep = self.until_next(&channels).await;
            tokio::select! {
                _ = &mut stop => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// How long until the next message is due (at most the poll interval).
    async fn until_next(&self, channels: &[Channel]) -> std::time::Duration {
        if channels.is_empty() {
            return self.config.poll;
        }
        match outbox::next_due(&mut self.store.reader(), channels).await {
            Ok(Some(due)) => (due - Utc::now()).to_std().unwrap_or_default().min(self.config.poll),
            _ => self.config.poll,
        }
    }

    /// Sweeps abandoned claims (at most four times per claim timeout), then sends everything due now, a batch
    /// at a time. Without a channel there is nothing to send and nothing can have been claimed.
    pub async fn pass(&mut self, now: DateTime<Utc>) -> Result<Pass, StoreError> {
        let mut pass = Pass::default();
        let channels = self.transports.channels();
        if channels.is_empty() {
            return Ok(pass);
        }
        if self.last_sweep.is_none_or(|t| t.elapsed() >= self.config.claim_timeout / 4) {
            self.last_sweep = Some(std::time::Instant::now());
            let claimed_before = now - Duration::from_std(self.config.claim_timeout).unwrap_or(Duration::seconds(60));
            (pass.requeued, pass.unknown) = self
                .store
                .write((claimed_before, now), |c, (before, now)| Box::pin(outbox::sweep_abandoned(c, *before, *now)))
                .await?;
        }
        loop {
            let batch = self
                .store
                .write((self.node.clone(), channels.clone(), Utc::now()), |c, (node, channels, now)| {
                    Box::pin(outbox::claim_due(c, node, channels, *now, 20))
                })
                .await?;
            if batch.is_empty() {
                return Ok(pass);
            }
            for m in batch {
                self.deliver(m, &mut pass).await?;
            }
        }
    }

    async fn deliver(&self, m: OutboxMessage, pass: &mut Pass) -> Result<(), StoreError> {
        let now = Utc::now();
        if m.visit_starts_at.is_some_and(|start| start <= now) {
            pass.skipped += 1;
            return self.settle(&m, OutboxState::Skipped, None, Some("the visit had started")).await;
        }
        let handed = self.store.write(m.id, |c, id| Box::pin(outbox::hand_over(c, *id, Utc::now()))).await?;
        if !handed {
            return Ok(());
        }
        match self.send(&m).await {
            Ok(()) => {
                pass.sent += 1;
                tracing::info!(message_id = %m.id, channel = m.channel.as_str(), kind = %m.kind, "notification sent");
                self.settle(&m, OutboxState::Sent, None, None).await
            }
            Err(SendError::Retryable(why)) if m.attempts < self.config.max_attempts => {
                pass.retried += 1;
                let next = Utc::now() + self.backoff(m.attempts);
                tracing::warn!(message_id = %m.id, channel = m.channel.as_str(), attempt = m.attempts, error = %why, "notification will be retried");
                self.settle(&m, OutboxState::Pending, Some(next), Some(&why)).await
            }
            Err(SendError::Retryable(why) | SendError::Permanent(why)) => {
                pass.failed += 1;
                tracing::warn!(message_id = %m.id, channel = m.channel.as_str(), attempt = m.attempts, error = %why, "notification failed");
                self.settle(&m, OutboxState::Failed, None, Some(&why)).await
            }
        }
    }

    async fn send(&self, m: &OutboxMessage) -> Result<(), SendError> {
        match m.channel {
            Channel::Email => {
                let Some(smtp) = &self.transports.email else { return Err(SendError::Retryable("SMTP is not configured".into())) };
                let content = EmailContent { subject: m.subject.clone().unwrap_or_default(), body: m.body.clone() };
                smtp.send(&m.recipient, &content, &super::email::message_id(m.id)).await
            }
            Channel::Sms => {
                let Some(sns) = &self.transports.sms else { return Err(SendError::Retryable("SMS is not configured".into())) };
                sns.send(&m.recipient, &m.body).await.map(drop)
            }
        }
    }

    async fn settle(&self, m: &OutboxMessage, state: OutboxState, next: Option<DateTime<Utc>>, error: Option<&str>) -> Result<(), StoreError> {
        let settled = self
            .store
            .write((m.id, state, next, error.map(str::to_owned)), |c, (id, state, next, error)| {
                Box::pin(outbox::settle(c, *id, *state, Utc::now(), *next, error.as_deref()))
            })
            .await?;
        if !settled {
            tracing::warn!(message_id = %m.id, "an outbox message was settled by someone else meanwhile");
        }
        Ok(())
    }

    /// base · 2^(attempts−1), capped, with up to 20 % jitter so many messages failing together do not retry
    /// in lockstep.
    fn backoff(&self, attempts: u32) -> Duration {
        let base = self.config.retry_base.as_millis() as f64;
        let raw = base * 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
        let capped = raw.min(self.config.retry_max.as_millis() as f64);
        let jitter = 1.0 + rand::random::<f64>() * 0.2;
        Duration::milliseconds((capped * jitter) as i64)
    }
}
