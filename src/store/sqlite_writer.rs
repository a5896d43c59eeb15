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
//! A job is a whole `Store::write` (a change, its audit line, its outbox messages), and one bad job does not
//! sink the batch:
//! - a job that fails having changed nothing (SQLite's default conflict resolution, ABORT, undid the failing
//!   statement and kept the transaction) just gets its error;
//! - a job that fails after changing rows cannot be undone on its own without a SAVEPOINT around every job
//!   (two more round trips each, on the path every write takes), so the batch transaction is rolled back and
//!   the other jobs are run again in a fresh one. Jobs are closures over their own inputs, so running one
//!   again is exactly running it once; this costs something only when a job fails midway, which is rare;
//! - a few errors (I/O, disk full, out of memory, busy) may end the whole transaction
//!   (https://www.sqlite.org/lang_transaction.html); then every job of the transaction gets an error, and the
//!   jobs not yet run start a fresh transaction. A failed COMMIT fails every job of its transaction.
//!
//! Each statement is a round trip to the thread sqlx runs the connection on; together with the fsync that is
//! what bounds the writer, so jobs are kept to as few statements as possible.

use super::db::Conn;
use super::{StoreError, WriteFn};
use futures::future::BoxFuture;
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use std::collections::VecDeque;
use tokio::sync::{mpsc, oneshot};

/// Jobs per transaction at most, so one transaction (and the latency of its first job) stays bounded.
const MAX_BATCH: usize = 256;
/// Jobs waiting beyond this make writers wait to enqueue (back-pressure instead of unbounded memory).
const QUEUE: usize = 4096;

/// A queued `Store::write`, its output type erased so one queue carries every kind of write.
trait Job: Send {
    /// Runs the job's statements; its output is kept until `answer`.
    fn run<'c>(&'c mut self, conn: &'c mut Conn<'_>) -> BoxFuture<'c, Result<(), StoreError>>;
    /// Sends the kept output, or `failure`.
    fn answer(self: Box<Self>, failure: Option<StoreError>);
}

struct TypedJob<S, F, T> {
    state: S,
    f: F,
    output: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<S, F, T> Job for TypedJob<S, F, T>
where
    S: Send + Sync + 'static,
    F: WriteFn<S, T>,
    T: Send + 'static,
{
    fn run<'c>(&'c mut self, conn: &'c mut Conn<'_>) -> BoxFuture<'c, Result<(), StoreError>> {
        Box::pin(async move {
            let out = (self.f)(conn, &self.state).await?;
            self.output = Some(out);
            Ok(())
        })
    }

    fn answer(self: Box<Self>, failure: Option<StoreError>) {
        let result = match (failure, self.output) {
            (Some(e), _) => Err(e),
            (None, Some(out)) => Ok(out),
            (None, None) => Err(StoreError::Other(anyhow::anyhow!("a write was answered before it ran"))),
        };
        let _ = self.reply.send(result);
    }
}

/// The queue's sending end; cheap to share. The writer task ends (closing its connection) once every handle
/// is dropped and the queue is drained.
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    pub(super) fn spawn(conn: SqliteConnection) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(conn, rx));
        Self { jobs }
    }

    /// Queues the write and waits until it is committed (or has failed).
    pub(super) async fn write<S, F, T>(&self, state: S, f: F) -> Result<T, StoreError>
    where
        S: Send + Sync + 'static,
        F: WriteFn<S, T>,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(TypedJob { state, f, output: None, reply });
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable(anyhow::anyhow!("the SQLite writer has stopped"))
}

async fn run(mut conn: SqliteConnection, mut jobs: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut queue: VecDeque<Box<dyn Job>> = batch.drain(..).collect();
        while !queue.is_empty() {
            transaction(&mut conn, &mut queue).await;
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the SQLite writer connection failed");
    }
}

/// Runs jobs from the front of `queue` in one transaction until the queue is empty or a job breaks the
/// transaction, and answers every job it took. Jobs to be run again are put back at the front.
async fn transaction(conn: &mut SqliteConnection, queue: &mut VecDeque<Box<dyn Job>>) {
    // IMMEDIATE takes the write lock now: if another process holds it, the jobs fail here (after the busy
    // timeout) rather than halfway through.
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE").await {
        tracing::error!(error = %e, "SQLite BEGIN failed");
        for job in queue.drain(..) {
            job.answer(Some(batch_error("BEGIN", &e)));
        }
        return;
    }
    // Outputs are held back until the COMMIT has returned.
    let mut done: Vec<Box<dyn Job>> = Vec::with_capacity(queue.len());
    while let Some(mut job) = queue.pop_front() {
        let mut c = Conn::sqlite_tx(conn);
        let result = job.run(&mut c).await;
        let (changed, broken) = (c.changed, c.broken);
        let Err(e) = result else {
            done.push(job);
            continue;
        };
        if broken {
            tracing::error!(error = %e, "SQLite write failed; rolling back its batch");
            rollback(conn).await;
            for other in done {
                other.answer(Some(StoreError::Unavailable(anyhow::anyhow!(
                    "the write was rolled back: a write in the same transaction failed"
                ))));
            }
            job.answer(Some(e));
            return;
        }
        if changed > 0 {
            // Its earlier statements stand; only a rollback removes them. The others run again.
            rollback(conn).await;
            job.answer(Some(e));
            for other in done.into_iter().rev() {
                queue.push_front(other);
            }
            return;
        }
        job.answer(Some(e));
    }
    match exec(conn, "COMMIT").await {
        Ok(()) => done.into_iter().for_each(|job| job.answer(None)),
        Err(e) => {
            // Whether a failed COMMIT reached the disk cannot be known; reporting failure is the honest
            // answer (the caller may retry; ids are fresh GUIDs, so a retry cannot collide).
            tracing::error!(error = %e, "SQLite COMMIT failed");
            rollback(conn).await;
            for job in done {
                job.answer(Some(batch_error("COMMIT", &e)));
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
    StoreError::Unavailable(anyhow::anyhow!("the write was rolled back: {what} failed: {e}"))
}
