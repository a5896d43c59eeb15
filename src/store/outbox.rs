//! The durable outbox: every message an appointment causes is a row, written in the transaction of the change
//! that causes it, then claimed, sent and settled by the outbox worker (`notify::outbox`).
//!
//! States: `pending` → (claimed) `sending` → `sent` | `pending` again (retry later) | `failed`; `sending` left
//! behind by a stopped worker → `pending` if it never reached its server, else `unknown` (it may have
//! arrived; never re-sent by itself); `pending` →
//! `withdrawn` (its appointment was cancelled or moved) | `skipped` (a reminder whose visit had started).
//! `failed` and `unknown` go back to `pending` only when a person asks (the console's Retry).

use super::db::{Conn, Dialect, Row, stmt};
use super::{Store, StoreError};
use crate::ids::{AppointmentId, OutboxId};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "email" => Some(Channel::Email),
            "sms" => Some(Channel::Sms),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    Sending,
    Sent,
    Failed,
    Unknown,
    Withdrawn,
    Skipped,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sending => "sending",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
            OutboxState::Unknown => "unknown",
            OutboxState::Withdrawn => "withdrawn",
            OutboxState::Skipped => "skipped",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Sending, Self::Sent, Self::Failed, Self::Unknown, Self::Withdrawn, Self::Skipped]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: OutboxId,
    pub appointment_id: Option<AppointmentId>,
    /// `confirmation`, `update`, `cancellation`, `reminder`.
    pub kind: String,
    pub channel: Channel,
    /// An e-mail address or an E.164 number.
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub state: OutboxState,
    /// For reminders: a reminder found due after this is skipped, not sent.
    pub visit_starts_at: Option<DateTime<Utc>>,
    /// Not sent before (a reminder's due time).
    pub not_before: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub attempts: u32,
    /// A kind or code only, never message text or a recipient.
    pub last_error: Option<String>,
    pub claimed_by: Option<String>,
    /// When the worker started handing it to the mail or SMS server.
    pub handed_over_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OutboxMessage {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        let channel: String = row.get("channel")?;
        let state: String = row.get("state")?;
        let attempts: i64 = row.get("attempts")?;
        Ok(Self {
            id: row.id("id")?,
            appointment_id: row.opt_id("appointment_id")?,
            kind: row.get("kind")?,
            channel: Channel::parse(&channel).ok_or_else(|| StoreError::corrupt(format!("channel {channel:?}")))?,
            recipient: row.get("recipient")?,
            subject: row.get("subject")?,
            body: row.get("body")?,
            state: OutboxState::parse(&state).ok_or_else(|| StoreError::corrupt(format!("state {state:?}")))?,
            visit_starts_at: row.get("visit_starts_at")?,
            not_before: row.get("not_before")?,
            next_attempt_at: row.get("next_attempt_at")?,
            attempts: u32::try_from(attempts).map_err(|_| StoreError::corrupt("attempts"))?,
            last_error: row.get("last_error")?,
            claimed_by: row.get("claimed_by")?,
            handed_over_at: row.get("handed_over_at")?,
            sent_at: row.get("sent_at")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }

    fn all(rows: Vec<Row>) -> Result<Vec<Self>, StoreError> {
        rows.iter().map(Self::from_row).collect()
    }
}

const COLUMNS: &str = "id, appointment_id, kind, channel, recipient, subject, body, state, visit_starts_at, not_before, \
    next_attempt_at, attempts, last_error, claimed_by, handed_over_at, sent_at, created_at, updated_at";
const PER_ROW: usize = 18;
/// Rows per INSERT at most: an appointment's messages (two channels, a notice and a few reminders) fit in one.
const MAX_ROWS: usize = 8;

/// `INSERT INTO outbox (…) VALUES (…), (…)` for `rows` rows, built once per size: one statement for all of a
/// change's messages instead of one each (each statement is a round trip to SQLite's thread).
fn insert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (1..=MAX_ROWS)
            .map(|n| {
                let values: Vec<String> = (0..n)
                    .map(|r| {
                        let params: Vec<String> = (1..=PER_ROW).map(|c| format!("${}", r * PER_ROW + c)).collect();
                        format!("({})", params.join(", "))
                    })
                    .collect();
                format!("INSERT INTO outbox ({COLUMNS}) VALUES {}", values.join(", "))
            })
            .collect()
    });
    &all[rows - 1]
}

/// Queues messages, up to `MAX_ROWS` per statement.
pub async fn enqueue_all(c: &mut Conn<'_>, messages: &[OutboxMessage]) -> Result<(), StoreError> {
    for chunk in messages.chunks(MAX_ROWS) {
        let mut q = stmt(insert_sql(chunk.len()));
        for m in chunk {
            q = q
                .bind(m.id.as_uuid())
                .bind(m.appointment_id.map(|a| a.as_uuid()))
                .bind(&m.kind)
                .bind(m.channel.as_str())
                .bind(&m.recipient)
                .bind(m.subject.as_ref())
                .bind(&m.body)
                .bind(m.state.as_str())
                .bind(m.visit_starts_at)
                .bind(m.not_before)
                .bind(m.next_attempt_at)
                .bind(m.attempts)
                .bind(m.last_error.as_ref())
                .bind(m.claimed_by.as_ref())
                .bind(m.handed_over_at)
                .bind(m.sent_at)
                .bind(m.created_at)
                .bind(m.updated_at);
        }
        c.execute(q).await?;
    }
    Ok(())
}

/// Withdraws an appointment's messages that have not started to go out. How many.
pub async fn withdraw_pending(c: &mut Conn<'_>, appointment: AppointmentId, at: DateTime<Utc>) -> Result<u64, StoreError> {
    c.execute(
        stmt("UPDATE outbox SET state = 'withdrawn', updated_at = $2 WHERE appointment_id = $1 AND state = 'pending'")
            .bind(appointment.as_uuid())
            .bind(at),
    )
    .await
}

/// Claims up to `limit` due messages on the given channels for `worker`: they become `sending` with one more
/// attempt, committed before anything is sent, so a message is never handed to two workers and an attempt
/// that dies midway is known. PostgreSQL skips rows another gateway is claiming; SQLite has one writer.
pub async fn claim_due(
    c: &mut Conn<'_>,
    worker: &str,
    channels: &[Channel],
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<OutboxMessage>, StoreError> {
    let email = channels.contains(&Channel::Email).then_some("email");
    let sms = channels.contains(&Channel::Sms).then_some("sms");
    let sql = match c.dialect() {
        Dialect::Sqlite => {
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1, claimed_by = $1, updated_at = $2, handed_over_at = NULL \
             WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $2 \
                          AND (channel = $3 OR channel = $4) ORDER BY next_attempt_at LIMIT $5) \
             RETURNING *"
        }
        Dialect::Postgres => {
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1, claimed_by = $1, updated_at = $2, handed_over_at = NULL \
             WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $2 \
                          AND (channel = $3 OR channel = $4) ORDER BY next_attempt_at LIMIT $5 \
                          FOR UPDATE SKIP LOCKED) \
             RETURNING *"
        }
    };
    let q = stmt(sql).bind(worker).bind(now).bind(email).bind(sms).bind(limit);
    let rows = c.fetch_all(q).await?;
    c.changed += rows.len() as u64;
    OutboxMessage::all(rows)
}

/// Settles a claimed message: `sent`, `failed`, `skipped`, or `pending` again at `next_attempt_at`. Only if
/// it is still `sending` (a sweep may have declared it unknown meanwhile). False otherwise.
pub async fn settle(
    c: &mut Conn<'_>,
    id: OutboxId,
    state: OutboxState,
    at: DateTime<Utc>,
    next_attempt_at: Option<DateTime<Utc>>,
    error: Option<&str>,
) -> Result<bool, StoreError> {
    let sent_at = (state == OutboxState::Sent).then_some(at);
    let rows = c
        .execute(
            stmt("UPDATE outbox SET state = $2, updated_at = $3, sent_at = $4, \
                  next_attempt_at = COALESCE($5, next_attempt_at), last_error = $6, claimed_by = NULL \
                  WHERE id = $1 AND state = 'sending'")
            .bind(id.as_uuid())
            .bind(state.as_str())
            .bind(at)
            .bind(sent_at)
            .bind(next_attempt_at)
            .bind(error),
        )
        .await?;
    Ok(rows == 1)
}

/// Records that a claimed message is about to be handed to its server (committed before it is). False if the
/// claim was swept meanwhile: it must not be sent then.
pub async fn hand_over(c: &mut Conn<'_>, id: OutboxId, at: DateTime<Utc>) -> Result<bool, StoreError> {
    let q = stmt("UPDATE outbox SET handed_over_at = $2, updated_at = $2 WHERE id = $1 AND state = 'sending'").bind(id.as_uuid()).bind(at);
    Ok(c.execute(q).await? == 1)
}

/// Claims older than `claimed_before` belong to a worker that stopped (a send takes far less): one that never
/// reached its server goes back to `pending` (sending it again cannot make a duplicate); one that was handed
/// over may have arrived, so it becomes `unknown` and is never sent again by itself. Both counts.
pub async fn sweep_abandoned(c: &mut Conn<'_>, claimed_before: DateTime<Utc>, now: DateTime<Utc>) -> Result<(u64, u64), StoreError> {
    let requeued = c
        .execute(
            stmt("UPDATE outbox SET state = 'pending', next_attempt_at = $2, updated_at = $2, claimed_by = NULL \
                  WHERE state = 'sending' AND handed_over_at IS NULL AND updated_at < $1")
            .bind(claimed_before)
            .bind(now),
        )
        .await?;
    let unknown = c
        .execute(
            stmt("UPDATE outbox SET state = 'unknown', updated_at = $2, claimed_by = NULL, \
                  last_error = 'the gateway stopped while handing it over; it may have been delivered' \
                  WHERE state = 'sending' AND handed_over_at IS NOT NULL AND updated_at < $1")
            .bind(claimed_before)
            .bind(now),
        )
        .await?;
    Ok((requeued, unknown))
}

/// A person asked to send a `failed` or `unknown` message again: `pending` now, with a fresh attempt count.
/// False if it is in another state.
pub async fn retry(c: &mut Conn<'_>, id: OutboxId, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let rows = c
        .execute(
            stmt("UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $2, updated_at = $2 \
                  WHERE id = $1 AND state IN ('failed', 'unknown')")
            .bind(id.as_uuid())
            .bind(now),
        )
        .await?;
    Ok(rows == 1)
}

pub async fn find(c: &mut Conn<'_>, id: OutboxId) -> Result<Option<OutboxMessage>, StoreError> {
    let row = c.fetch_optional(stmt("SELECT * FROM outbox WHERE id = $1").bind(id.as_uuid())).await?;
    row.as_ref().map(OutboxMessage::from_row).transpose()
}

/// Newest first, of one state and/or one appointment, at most `limit`.
pub async fn list(
    c: &mut Conn<'_>,
    state: Option<OutboxState>,
    appointment: Option<AppointmentId>,
    limit: u32,
) -> Result<Vec<OutboxMessage>, StoreError> {
    let q = stmt(
        "SELECT * FROM outbox WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR appointment_id = $2) \
         ORDER BY created_at DESC, id LIMIT $3",
    )
    .bind(state.map(OutboxState::as_str))
    .bind(appointment.map(|a| a.as_uuid()))
    .bind(limit);
    OutboxMessage::all(c.fetch_all(q).await?)
}

/// The earliest time a pending message on one of `channels` becomes due, if any (the worker sleeps until then).
pub async fn next_due(c: &mut Conn<'_>, channels: &[Channel]) -> Result<Option<DateTime<Utc>>, StoreError> {
    let email = channels.contains(&Channel::Email).then_some("email");
    let sms = channels.contains(&Channel::Sms).then_some("sms");
    // ORDER BY … LIMIT 1 rather than MIN(): walking the partial index in order stops at the first match.
    let q = stmt(
        "SELECT next_attempt_at FROM outbox WHERE state = 'pending' AND (channel = $1 OR channel = $2) \
         ORDER BY next_attempt_at LIMIT 1",
    )
    .bind(email)
    .bind(sms);
    c.fetch_optional(q).await?.map(|row| row.get("next_attempt_at")).transpose()
}

impl Store {
    pub async fn outbox_message(&self, id: OutboxId) -> Result<Option<OutboxMessage>, StoreError> {
        find(&mut self.reader(), id).await
    }

    pub async fn list_outbox(
        &self,
        state: Option<OutboxState>,
        appointment: Option<AppointmentId>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        list(&mut self.reader(), state, appointment, limit).await
    }
}
