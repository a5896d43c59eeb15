//! Group commit for the SQLite store: one task owns the only writing connection, takes write jobs from a
//! queue, and commits everything that queued up meanwhile in ONE transaction.
//!
//! Why: with `synchronous=FULL` every COMMIT waits for an fsync of the WAL, and the fsync, not the SQL, is
//! what a write costs. Committing jobs one by one capped create-meeting at about one fsync per request;
//! a batch pays one fsync for all of its jobs. Nothing waits on purpose: while one batch is being committed
//! the next one queues up, so under light load a batch is a single job and under heavy load batches grow.
//!
//! Durability is unchanged: a job is answered only after the COMMIT that holds it has returned.
//!
//! One bad job does not sink the batch. SQLite's default conflict resolution (ABORT) undoes only the failing
//! statement and keeps the transaction open, so the job gets its error and the others carry on (a job of two
//! statements, a change and its audit line, reverses the change if the line fails: see `audit_or_undo`). A few errors
//! (I/O, disk full, out of memory, busy) may end the whole transaction
//! (https://www.sqlite.org/lang_transaction.html); then everything the transaction held is rolled back, its
//! jobs get an error, and the jobs not yet run start a fresh transaction. A failed COMMIT fails every job of
//! its transaction.
//!
//! Each statement is a round trip to the thread sqlx runs the connection on; together with the fsync that is
//! what bounds the writer, so jobs are kept to as few statements as possible.

use super::{AttendeeId, AttendeeRecord, AuditEntry, MeetingId, MeetingRecord, SessionId, SessionRecord, StoreError, sql};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnection;
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};

/// Jobs per transaction at most, so one transaction (and the latency of its first job) stays bounded.
const MAX_BATCH: usize = 256;
/// Jobs waiting beyond this make writers wait to enqueue (back-pressure instead of unbounded memory).
const QUEUE: usize = 4096;

/// One write. Each variant is all-or-nothing on its own; `audit` is the line written with the change, and only
/// if the change happened.
pub(super) enum WriteOp {
    /// 0 rows when another live meeting holds its appointment.
    InsertMeeting { meeting: MeetingRecord, audit: AuditEntry },
    /// Only a live meeting (0 rows otherwise).
    MarkMeetingDeleted { id: MeetingId, at: DateTime<Utc>, audit: AuditEntry },
    /// Inserts only if the meeting is live and below `max_per_meeting` attendees (0 rows otherwise).
    InsertAttendee { attendee: AttendeeRecord, max_per_meeting: u32, audit: AuditEntry },
    AppendAudit(AuditEntry),
    StartSession { session: SessionRecord, audit: AuditEntry },
    /// Only an open session (0 rows otherwise).
    TouchSession { id: SessionId, at: DateTime<Utc> },
    /// Only an open session (0 rows otherwise).
    EndSession { id: SessionId, at: DateTime<Utc>, audit: AuditEntry },
    TouchNodeSessions { node: String, at: DateTime<Utc> },
    EndStaleSessions { seen_before: DateTime<Utc> },
}

struct Job {
    op: WriteOp,
    reply: Reply,
}

/// Where a job's outcome goes: the rows its main statement changed, or why it failed.
type Reply = oneshot::Sender<Result<u64, StoreError>>;

/// The queue's sending end; cheap to share. The writer task ends (closing its connection) once every handle
/// is dropped and the queue is drained.
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    pub(super) fn spawn(conn: SqliteConnection) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(conn, rx));
        Self { jobs }
    }

    /// Queues the write and waits until it is committed (or has failed). Rows changed by its main statement.
    pub(super) async fn write(&self, op: WriteOp) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { op, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError(anyhow::anyhow!("the SQLite writer has stopped"))
}

async fn run(mut conn: SqliteConnection, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut queue = batch.drain(..);
        while queue.len() > 0 {
            transaction(&mut conn, &mut queue).await;
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the SQLite writer connection failed");
    }
}

/// How a job failed.
enum Failure {
    /// SQLite undid only this job's statements; the transaction goes on.
    Job(sqlx::Error),
    /// The transaction may be gone (SQLite rolls back on some errors): it must not be committed.
    Transaction(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        if undoes_only_the_statement(&e) { Failure::Job(e) } else { Failure::Transaction(e) }
    }
}

/// True for errors after which SQLite keeps the transaction and has undone only the failing statement:
/// constraint violations (ABORT), a generic SQL error, a type mismatch, a value too big, a bad parameter.
/// Anything else (I/O, disk full, out of memory, busy, a crashed worker …) is treated as fatal to the
/// transaction, which is the safe guess.
fn undoes_only_the_statement(e: &sqlx::Error) -> bool {
    const ERROR: i32 = 1;
    const TOOBIG: i32 = 18;
    const CONSTRAINT: i32 = 19;
    const MISMATCH: i32 = 20;
    const RANGE: i32 = 25;
    let sqlx::Error::Database(db) = e else { return false };
    // sqlx reports SQLite's extended code; the primary code is its low byte.
    let Some(code) = db.code().and_then(|c| c.parse::<i32>().ok()) else { return false };
    matches!(code & 0xff, ERROR | TOOBIG | CONSTRAINT | MISMATCH | RANGE)
}

/// Runs jobs from `queue` in one transaction until the queue is empty or a job breaks the transaction, and
/// answers every job it took.
async fn transaction(conn: &mut SqliteConnection, queue: &mut std::vec::Drain<'_, Job>) {
    // IMMEDIATE takes the write lock now: if another process holds it, the jobs fail here (after the busy
    // timeout) rather than halfway through.
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE").await {
        tracing::error!(error = %e, "SQLite BEGIN failed");
        for job in queue {
            let _ = job.reply.send(Err(batch_error("BEGIN", &e)));
        }
        return;
    }
    // Outcomes are held back until the COMMIT has returned.
    let mut done: Vec<(Reply, Result<u64, sqlx::Error>)> = Vec::with_capacity(queue.len());
    for job in queue.by_ref() {
        match apply(conn, job.op).await {
            Ok(rows) => done.push((job.reply, Ok(rows))),
            Err(Failure::Job(e)) => done.push((job.reply, Err(e))),
            Err(Failure::Transaction(e)) => {
                tracing::error!(error = %e, "SQLite write failed; rolling back its batch");
                rollback(conn).await;
                for (reply, _) in done {
                    let _ = reply.send(Err(batch_error("a write in the same transaction", &e)));
                }
                let _ = job.reply.send(Err(e.into()));
                return;
            }
        }
    }
    match exec(conn, "COMMIT").await {
        Ok(_) => {
            for (reply, result) in done {
                let _ = reply.send(result.map_err(StoreError::from));
            }
        }
        Err(e) => {
            // Whether a failed COMMIT reached the disk cannot be known; reporting failure is the honest
            // answer (the caller may retry; ids are fresh GUIDs, so a retry cannot collide).
            tracing::error!(error = %e, "SQLite COMMIT failed");
            rollback(conn).await;
            for (reply, _) in done {
                let _ = reply.send(Err(batch_error("COMMIT", &e)));
            }
        }
    }
}

/// Ends the transaction if SQLite has not already done so ("no transaction is active" is then expected).
async fn rollback(conn: &mut SqliteConnection) {
    let _ = exec(conn, "ROLLBACK").await;
}

/// A statement without parameters (prepared once, then cached like every other).
async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(&mut *conn).await.map(drop)
}

fn batch_error(what: &str, e: &sqlx::Error) -> StoreError {
    StoreError(anyhow::anyhow!("the write was rolled back: {what} failed: {e}"))
}

/// Runs one job's statements. Rows changed by its main statement.
async fn apply(conn: &mut SqliteConnection, op: WriteOp) -> Result<u64, Failure> {
    match op {
        WriteOp::InsertMeeting { meeting, audit } => {
            match insert_meeting(conn, &meeting).await {
                Ok(()) => {}
                // The appointment's live meeting exists: the statement was undone, the caller finds that one.
                Err(e) if super::is_appointment_conflict(&e) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
            audit_or_undo(conn, audit, Undo::InsertMeeting(meeting.id)).await?;
            Ok(1)
        }
        WriteOp::MarkMeetingDeleted { id, at, audit } => {
            let rows = update_at(conn, sql::MARK_MEETING_DELETED, at, &id.to_string()).await?;
            if rows == 1 {
                audit_or_undo(conn, audit, Undo::MarkMeetingDeleted(id)).await?;
            }
            Ok(rows)
        }
        WriteOp::InsertAttendee { attendee, max_per_meeting, audit } => {
            let rows = insert_attendee(conn, &attendee, max_per_meeting).await?;
            if rows == 1 {
                audit_or_undo(conn, audit, Undo::InsertAttendee(attendee.attendee_id)).await?;
            }
            Ok(rows)
        }
        WriteOp::AppendAudit(entry) => Ok(append_audit(conn, entry).await?),
        WriteOp::StartSession { session, audit } => {
            insert_session(conn, &session).await?;
            audit_or_undo(conn, audit, Undo::StartSession(session.id)).await?;
            Ok(1)
        }
        WriteOp::TouchSession { id, at } => Ok(update_at(conn, sql::TOUCH_SESSION, at, &id.to_string()).await?),
        WriteOp::EndSession { id, at, audit } => {
            let rows = update_at(conn, sql::END_SESSION, at, &id.to_string()).await?;
            if rows == 1 {
                audit_or_undo(conn, audit, Undo::EndSession(id)).await?;
            }
            Ok(rows)
        }
        WriteOp::TouchNodeSessions { node, at } => Ok(update_at(conn, sql::TOUCH_NODE_SESSIONS, at, &node).await?),
        WriteOp::EndStaleSessions { seen_before } => {
            let done = sqlx::query(sql::END_STALE_SESSIONS).bind(seen_before).execute(&mut *conn).await?;
            Ok(done.rows_affected())
        }
    }
}

/// The reverse of a job's main statement, run in the same still-open transaction.
enum Undo {
    InsertMeeting(MeetingId),
    /// Only `deleted_at IS NULL` rows were marked, so clearing it again restores exactly what was there.
    MarkMeetingDeleted(MeetingId),
    InsertAttendee(AttendeeId),
    StartSession(SessionId),
    /// Only open sessions were ended, so reopening it restores exactly what was there.
    EndSession(SessionId),
}

/// Appends the audit line of a change that was just made in this transaction; if the line fails on its own,
/// reverses the change. No SAVEPOINT around the pair: every statement is a round trip to sqlx's connection
/// thread, and the savepoint's own two would double the job's cost. The changed row is known to no other job
/// yet (the writer runs one job at a time and nothing is committed), so undoing it is exactly what rolling
/// back to a savepoint would do.
async fn audit_or_undo(conn: &mut SqliteConnection, audit: AuditEntry, undo: Undo) -> Result<(), Failure> {
    let Err(e) = append_audit(conn, audit).await else { return Ok(()) };
    let failure = Failure::from(e);
    if let Failure::Job(_) = failure {
        let (sql, id) = match undo {
            Undo::InsertMeeting(id) => ("DELETE FROM meetings WHERE id = $1", id.to_string()),
            Undo::MarkMeetingDeleted(id) => ("UPDATE meetings SET deleted_at = NULL WHERE id = $1", id.to_string()),
            Undo::InsertAttendee(id) => ("DELETE FROM attendees WHERE id = $1", id.to_string()),
            Undo::StartSession(id) => ("DELETE FROM attendee_sessions WHERE id = $1", id.to_string()),
            Undo::EndSession(id) => ("UPDATE attendee_sessions SET ended_at = NULL WHERE id = $1", id.to_string()),
        };
        sqlx::query(sql).bind(id).execute(&mut *conn).await.map_err(Failure::Transaction)?;
    }
    Err(failure)
}

async fn insert_meeting(conn: &mut SqliteConnection, m: &MeetingRecord) -> Result<(), sqlx::Error> {
    sqlx::query(sql::INSERT_MEETING)
        .bind(m.id.to_string())
        .bind(m.external_meeting_id.as_str())
        .bind(&m.appointment_id)
        .bind(m.provider.as_str())
        .bind(&m.media_region)
        .bind(m.created_at)
        .bind(m.deleted_at)
        .bind(m.ends_at)
        .bind(m.provider_meeting.as_ref().map(|v| v.to_string()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn insert_session(conn: &mut SqliteConnection, s: &SessionRecord) -> Result<(), sqlx::Error> {
    sqlx::query(sql::INSERT_SESSION)
        .bind(s.id.to_string())
        .bind(s.meeting_id.to_string())
        .bind(s.attendee_id.to_string())
        .bind(s.provider.as_str())
        .bind(&s.node)
        .bind(s.started_at)
        .bind(s.last_seen_at)
        .bind(s.ended_at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// `UPDATE … SET x = $1 WHERE key = $2 …`: rows changed.
async fn update_at(conn: &mut SqliteConnection, sql: &'static str, at: DateTime<Utc>, key: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(sql).bind(at).bind(key).execute(&mut *conn).await?.rows_affected())
}

/// One statement, inside the writer's transaction: the liveness check, the count and the insert cannot
/// interleave with another write.
async fn insert_attendee(
    conn: &mut SqliteConnection,
    a: &AttendeeRecord,
    max_per_meeting: u32,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO attendees (id, meeting_id, external_user_id, created_at) \
         SELECT $1, $2, $3, $4 \
         WHERE EXISTS (SELECT 1 FROM meetings WHERE id = $2 AND deleted_at IS NULL) \
           AND (SELECT COUNT(*) FROM attendees WHERE meeting_id = $2) < $5",
    )
    .bind(a.attendee_id.to_string())
    .bind(a.meeting_id.to_string())
    .bind(a.external_user_id.as_str())
    .bind(a.created_at)
    .bind(i64::from(max_per_meeting))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Stamped when it is written, so the log's time order matches its id order even across batches.
async fn append_audit(conn: &mut SqliteConnection, e: AuditEntry) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(sql::INSERT_AUDIT)
    .bind(Utc::now())
    .bind(e.action.as_str())
    .bind(e.meeting_id.map(|m| m.to_string()))
    .bind(e.attendee_id.map(|a| a.to_string()))
    .bind(e.actor.to_column())
    .bind(e.detail)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
