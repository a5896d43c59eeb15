//! Opening SQLite: the zero-setup default (`sqlite://data/telehealth.db`). The file and its directory are created
//! on first start; WAL journaling lets readers proceed while one writer writes.
//!
//! Writes go through ONE connection owned by a writer task (`sqlite_writer`) that commits whatever queued up
//! meanwhile in a single transaction (group commit): SQLite admits one writer at a time anyway, and each
//! COMMIT costs an fsync, so one fsync per batch instead of one per write is what lets many concurrent
//! requests through. Several writing connections were worse still: the losers got SQLITE_BUSY and slept in
//! SQLite's busy handler (1–100 ms). Reads keep their own small pool.

use super::sqlite_writer::Writer;
use super::{Db, Store};
use anyhow::Context;
use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn options(url: &str) -> anyhow::Result<SqliteConnectOptions> {
    SqliteConnectOptions::from_str(url).context("DATABASE_URL is not a valid sqlite:// URL")
}

pub(super) async fn open(opts: SqliteConnectOptions) -> anyhow::Result<Store> {
    let file = opts.get_filename().to_owned();
    if let Some(dir) = file.parent() {
        crate::auth::create_private_dir(dir)?;
    }
    let opts = opts
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
        // SQLite's default, stated because it is the point: a write is acknowledged only once its COMMIT
        // has been fsynced to the WAL. (NORMAL would lose the last commits on power loss.)
        .synchronous(SqliteSynchronous::Full)
        // Statement logging would print bound values, i.e. attendee names.
        .disable_statement_logging();
    let mut writer = opts
        .connect()
        .await
        .with_context(|| format!("opening SQLite database {}", file.display()))?;
    sqlx::migrate!("migrations/sqlite").run(&mut writer).await.context("running SQLite migrations")?;
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        // A pool normally pings a connection before handing it out; a local file cannot have hung up,
        // and the ping is a round trip to the connection's thread on every read.
        .test_before_acquire(false)
        .connect_with(opts)
        .await
        .with_context(|| format!("opening SQLite database {}", file.display()))?;
    Ok(Store { db: Arc::new(Db::Sqlite { pool, writer: Writer::spawn(writer) }) })
}

