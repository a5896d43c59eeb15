//! The real PostgreSQL for tests (127.0.0.1:5432, database `test`, or `TEST_DATABASE_URL`), each test in a fresh
//! schema of its own. Unreachable outside CI: the PostgreSQL half is skipped with a note; in CI it is a failure.
#![allow(dead_code)]

use sqlx::postgres::{PgConnectOptions, PgPool};
use std::str::FromStr;

pub fn pg_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema made for one test, an admin pool to drop it with, and a DATABASE_URL whose connections use it.
pub struct FreshSchema {
    pub admin: PgPool,
    pub name: String,
    pub url: String,
}

/// Creates `<prefix>_<random>`. None (skip) when PostgreSQL is unreachable outside CI; a panic in CI.
pub async fn fresh_schema(prefix: &str) -> Option<FreshSchema> {
    let admin = match PgPool::connect(&pg_url()).await {
        Ok(pool) => pool,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("PostgreSQL is unreachable in CI: {e}"),
        Err(e) => {
            eprintln!("skipping the PostgreSQL part: {e} (set CI=true to make this a failure)");
            return None;
        }
    };
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {name}")).execute(&admin).await.unwrap();
    let sep = if pg_url().contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}options=-c%20search_path%3D{name}", pg_url());
    Some(FreshSchema { admin, name, url })
}

impl FreshSchema {
    /// Connection options whose sessions use the schema.
    pub fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&pg_url()).unwrap().options([("search_path", self.name.as_str())])
    }

    pub async fn drop(self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name)).execute(&self.admin).await.unwrap();
    }
}
