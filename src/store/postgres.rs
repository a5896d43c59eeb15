//! Opening PostgreSQL (`DATABASE_URL=postgres://…`): for clinics that already run a database server, or
//! several gateway processes sharing one. Native UUID and TIMESTAMPTZ columns.

use super::{Db, Store};
use anyhow::Context;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn options(url: &str) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid postgres:// URL")
}

pub(super) async fn open(opts: PgConnectOptions) -> anyhow::Result<Store> {
    // Statement logging would print bound values, i.e. attendee names.
    let opts = opts.disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::migrate!("migrations/postgres").run(&pool).await.context("running PostgreSQL migrations")?;
    Ok(Store { db: Arc::new(Db::Postgres(pool)) })
}
