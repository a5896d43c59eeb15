//! Persistence, in repositories per aggregate: meetings with their attendees and sessions (`meetings`), the
//! append-only audit log (`audit`), the clinic's appointments (`appointments`), and the notification outbox
//! (`outbox`). One [`Store`] handle serves either database: SQLite (the zero-setup
//! default) or PostgreSQL. Migrations run at connect time, so a fresh file or database is usable immediately
//! and a restart loses nothing already stored.
//!
//! Every change goes through [`Store::write`], one transaction in which a change, its audit line (and its
//! outbox messages) commit together or not at all. Statements are written once for both databases (`db`
//! binds them); a repository picks a dialect's own statement only where the two disagree.
//!
//! The store speaks in typed ids and records; it knows nothing of HTTP, tokens or Chime's JSON.

pub mod appointments;
pub mod audit;
mod db;
pub mod meetings;
pub mod outbox;
mod postgres;
mod sqlite;
mod sqlite_writer;

pub use audit::{AuditAction, AuditActor, AuditEntry, AuditRecord};
pub use db::{Arg, Conn, Dialect, Row, Stmt, stmt};
pub use meetings::{AttendeeRecord, InsertAttendee, InsertMeeting, MeetingRecord, SessionRecord};

use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use std::sync::Arc;

/// What went wrong, in terms a caller can act on. Messages name constraints and kinds, never stored values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness or reference rule refused the change (the constraint's name).
    #[error("conflicts with stored data ({0})")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    /// The database cannot be reached or cannot take writes right now (connection, pool, disk, lock); a retry
    /// later may succeed.
    #[error("the database is unavailable: {0}")]
    Unavailable(anyhow::Error),
    /// A stored row does not decode into its record.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("store: {0}")]
    Other(#[from] anyhow::Error),
}

impl StoreError {
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt(what.into())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match e {
            E::Database(ref db) if db.is_unique_violation() || db.is_foreign_key_violation() || db.is_check_violation() => {
                StoreError::Conflict(db.constraint().unwrap_or("constraint").to_owned())
            }
            E::Database(ref db) if unavailable_code(db.code().as_deref()) => StoreError::Unavailable(e.into()),
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed | E::Protocol(_) => {
                StoreError::Unavailable(e.into())
            }
            E::ColumnDecode { .. } | E::Decode(_) | E::ColumnNotFound(_) | E::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
            other => StoreError::Other(other.into()),
        }
    }
}

/// Database error codes that mean "not now" rather than "never": SQLite busy/locked/I/O/full/cannot open
/// (primary codes 5, 6, 10, 13, 14; sqlx reports extended codes, whose low byte is the primary one), and
/// PostgreSQL's connection exceptions (class 08), insufficient resources (53) and operator intervention (57).
fn unavailable_code(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    if let Ok(n) = code.parse::<i32>() {
        return matches!(n & 0xff, 5 | 6 | 10 | 13 | 14);
    }
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57")
}

/// The body of a write: given the transaction and the write's own inputs, run its statements. It may be run
/// more than once (the SQLite writer runs a batch again when another write in it fails midway), so it keeps
/// its inputs in `state` rather than moving them.
pub trait WriteFn<S, T>: for<'c, 'a> Fn(&'c mut Conn<'a>, &'c S) -> BoxFuture<'c, Result<T, StoreError>> + Send + Sync + 'static {}
impl<S, T, F> WriteFn<S, T> for F where F: for<'c, 'a> Fn(&'c mut Conn<'a>, &'c S) -> BoxFuture<'c, Result<T, StoreError>> + Send + Sync + 'static {}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Db>,
}

enum Db {
    /// Reads from a small pool; every write through the one group-committing writer (see `sqlite_writer`).
    Sqlite { pool: SqlitePool, writer: sqlite_writer::Writer },
    Postgres(PgPool),
}

impl Store {
    /// Opens the database named by `url` (`sqlite://…` or `postgres://…`) and runs its migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        if url.starts_with("sqlite:") {
            sqlite::open(sqlite::options(url)?).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            postgres::open(postgres::options(url)?).await
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite:// or postgres://")
        }
    }

    pub async fn connect_sqlite(opts: SqliteConnectOptions) -> anyhow::Result<Store> {
        sqlite::open(opts).await
    }

    pub async fn connect_postgres(opts: PgConnectOptions) -> anyhow::Result<Store> {
        postgres::open(opts).await
    }

    pub fn dialect(&self) -> Dialect {
        match *self.db {
            Db::Sqlite { .. } => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// A connection for reads outside any transaction (it refuses writes).
    pub fn reader(&self) -> Conn<'_> {
        match &*self.db {
            Db::Sqlite { pool, .. } => Conn::sqlite_read(pool),
            Db::Postgres(pool) => Conn::postgres_read(pool),
        }
    }

    /// Runs `f` in one transaction and commits it: everything `f` wrote, or nothing. `state` holds the write's
    /// inputs (`f` borrows them; see [`WriteFn`]).
    pub async fn write<S, T, F>(&self, state: S, f: F) -> Result<T, StoreError>
    where
        S: Send + Sync + 'static,
        T: Send + 'static,
        // Spelled out rather than `WriteFn<S, T>`: closures get their higher-ranked signature only from a
        // direct `Fn` bound.
        F: for<'c, 'a> Fn(&'c mut Conn<'a>, &'c S) -> BoxFuture<'c, Result<T, StoreError>> + Send + Sync + 'static,
    {
        match &*self.db {
            Db::Sqlite { writer, .. } => writer.write(state, f).await,
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let out = f(&mut Conn::postgres_tx(&mut tx), &state).await?;
                tx.commit().await?;
                Ok(out)
            }
        }
    }

    /// The SQLite pool, for tests that poke at the file directly.
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &*self.db {
            Db::Sqlite { pool, .. } => Some(pool),
            Db::Postgres(_) => None,
        }
    }

    /// The PostgreSQL pool, for tests that poke at the database directly.
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &*self.db {
            Db::Postgres(pool) => Some(pool),
            Db::Sqlite { .. } => None,
        }
    }
}
