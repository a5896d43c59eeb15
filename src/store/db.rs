//! The only place where the two databases differ in how a statement is run: SQLite stores GUIDs as text,
//! PostgreSQL as native UUIDs. Repositories write each statement once as a [`Stmt`] with typed [`Arg`]s and
//! read columns through [`Row`]; [`Conn`] binds and decodes them for whichever database it holds.
//!
//! Why not sqlx's `Any` driver: it knows no UUID or timestamp type, so the schemas would have to change. Why
//! not generic functions over `sqlx::Database`: every repository function would carry a dozen `Encode`/`Decode`
//! bounds, one per column type. A four-variant enum of argument kinds costs one small vector per statement.

use super::StoreError;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgRow, Postgres};
use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{Decode, Row as _, Type};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One bound value.
#[derive(Debug, Clone)]
pub enum Arg {
    Uuid(Option<Uuid>),
    Text(Option<String>),
    Int(Option<i64>),
    Time(Option<DateTime<Utc>>),
}

macro_rules! arg_from {
    ($variant:ident: $($t:ty => $conv:expr),* $(,)?) => {$(
        impl From<$t> for Arg {
            fn from(v: $t) -> Self { Arg::$variant(Some($conv(v))) }
        }
        impl From<Option<$t>> for Arg {
            fn from(v: Option<$t>) -> Self { Arg::$variant(v.map($conv)) }
        }
    )*};
}
arg_from!(Uuid: Uuid => |v| v);
arg_from!(Text: String => |v| v, &str => str::to_owned, &String => String::clone);
arg_from!(Int: i64 => |v| v, u32 => i64::from);
arg_from!(Time: DateTime<Utc> => |v| v);

/// A statement and its arguments, in `$n` order. Both dialects accept `$n` placeholders.
#[derive(Debug)]
pub struct Stmt {
    sql: &'static str,
    args: Vec<Arg>,
}

pub fn stmt(sql: &'static str) -> Stmt {
    Stmt { sql, args: Vec::new() }
}

impl Stmt {
    pub fn bind(mut self, v: impl Into<Arg>) -> Self {
        self.args.push(v.into());
        self
    }

    fn sqlite(self) -> Query<'static, Sqlite, SqliteArguments<'static>> {
        let mut q = sqlx::query(self.sql);
        for a in self.args {
            q = match a {
                Arg::Uuid(v) => q.bind(v.map(|u| u.to_string())),
                Arg::Text(v) => q.bind(v),
                Arg::Int(v) => q.bind(v),
                Arg::Time(v) => q.bind(v),
            };
        }
        q
    }

    fn postgres(self) -> Query<'static, Postgres, PgArguments> {
        let mut q = sqlx::query(self.sql);
        for a in self.args {
            q = match a {
                Arg::Uuid(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::Int(v) => q.bind(v),
                Arg::Time(v) => q.bind(v),
            };
        }
        q
    }
}

/// A result row of either database.
pub enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Row {
    /// Any column type both drivers decode the same way (text, integers, timestamps, and their `Option`s).
    pub fn get<T>(&self, col: &str) -> Result<T, StoreError>
    where
        T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>,
    {
        Ok(match self {
            Row::Sqlite(r) => r.try_get(col)?,
            Row::Postgres(r) => r.try_get(col)?,
        })
    }

    /// A GUID column as a typed id (text in SQLite, UUID in PostgreSQL). A bad stored value is an error.
    pub fn id<T: From<Uuid>>(&self, col: &str) -> Result<T, StoreError> {
        self.opt_id(col)?.ok_or_else(|| StoreError::corrupt(format!("{col} is NULL")))
    }

    pub fn opt_id<T: From<Uuid>>(&self, col: &str) -> Result<Option<T>, StoreError> {
        let uuid = match self {
            Row::Sqlite(r) => match r.try_get::<Option<String>, _>(col)? {
                None => None,
                Some(s) => Some(Uuid::parse_str(&s).map_err(|_| StoreError::corrupt(format!("{col} is not a GUID")))?),
            },
            Row::Postgres(r) => r.try_get::<Option<Uuid>, _>(col)?,
        };
        Ok(uuid.map(T::from))
    }
}

/// A connection to run statements on: a writing transaction, or a read-only pool.
///
/// Writes happen only inside [`super::Store::write`], which hands out the `Tx*` kinds; the pool kinds refuse
/// them, so a write can never bypass SQLite's single writer or PostgreSQL's transaction.
pub struct Conn<'a> {
    kind: Kind<'a>,
    /// Rows changed by this job's statements so far: zero means a failing job left nothing to undo.
    pub(super) changed: u64,
    /// Set when a statement failed in a way that may have ended the transaction (SQLite rolls back on some
    /// errors); the transaction must then not be committed.
    pub(super) broken: bool,
}

enum Kind<'a> {
    SqliteTx(&'a mut SqliteConnection),
    PostgresTx(&'a mut PgConnection),
    SqliteRead(&'a SqlitePool),
    PostgresRead(&'a PgPool),
}

impl<'a> Conn<'a> {
    pub(super) fn sqlite_tx(c: &'a mut SqliteConnection) -> Self {
        Self::of(Kind::SqliteTx(c))
    }
    pub(super) fn postgres_tx(c: &'a mut PgConnection) -> Self {
        Self::of(Kind::PostgresTx(c))
    }
    pub(super) fn sqlite_read(p: &'a SqlitePool) -> Self {
        Self::of(Kind::SqliteRead(p))
    }
    pub(super) fn postgres_read(p: &'a PgPool) -> Self {
        Self::of(Kind::PostgresRead(p))
    }
    fn of(kind: Kind<'a>) -> Self {
        Self { kind, changed: 0, broken: false }
    }

    pub fn dialect(&self) -> Dialect {
        match self.kind {
            Kind::SqliteTx(_) | Kind::SqliteRead(_) => Dialect::Sqlite,
            Kind::PostgresTx(_) | Kind::PostgresRead(_) => Dialect::Postgres,
        }
    }

    /// Runs a write; rows changed.
    pub async fn execute(&mut self, s: Stmt) -> Result<u64, StoreError> {
        let done = match &mut self.kind {
            Kind::SqliteTx(c) => s.sqlite().execute(&mut **c).await.map(|d| d.rows_affected()),
            Kind::PostgresTx(c) => s.postgres().execute(&mut **c).await.map(|d| d.rows_affected()),
            Kind::SqliteRead(_) | Kind::PostgresRead(_) => {
                return Err(StoreError::Other(anyhow::anyhow!("a write outside Store::write")));
            }
        };
        let rows = self.note(done)?;
        self.changed += rows;
        Ok(rows)
    }

    pub async fn fetch_optional(&mut self, s: Stmt) -> Result<Option<Row>, StoreError> {
        let row = match &mut self.kind {
            Kind::SqliteTx(c) => s.sqlite().fetch_optional(&mut **c).await.map(|r| r.map(Row::Sqlite)),
            Kind::PostgresTx(c) => s.postgres().fetch_optional(&mut **c).await.map(|r| r.map(Row::Postgres)),
            Kind::SqliteRead(p) => s.sqlite().fetch_optional(*p).await.map(|r| r.map(Row::Sqlite)),
            Kind::PostgresRead(p) => s.postgres().fetch_optional(*p).await.map(|r| r.map(Row::Postgres)),
        };
        self.note(row)
    }

    pub async fn fetch_all(&mut self, s: Stmt) -> Result<Vec<Row>, StoreError> {
        fn wrap<R>(rows: Vec<R>, f: fn(R) -> Row) -> Vec<Row> {
            rows.into_iter().map(f).collect()
        }
        let rows = match &mut self.kind {
            Kind::SqliteTx(c) => s.sqlite().fetch_all(&mut **c).await.map(|r| wrap(r, Row::Sqlite)),
            Kind::PostgresTx(c) => s.postgres().fetch_all(&mut **c).await.map(|r| wrap(r, Row::Postgres)),
            Kind::SqliteRead(p) => s.sqlite().fetch_all(*p).await.map(|r| wrap(r, Row::Sqlite)),
            Kind::PostgresRead(p) => s.postgres().fetch_all(*p).await.map(|r| wrap(r, Row::Postgres)),
        };
        self.note(rows)
    }

    /// One row or `NotFound`.
    pub async fn fetch_one(&mut self, s: Stmt) -> Result<Row, StoreError> {
        self.fetch_optional(s).await?.ok_or(StoreError::NotFound)
    }

    /// Remembers whether a failure may have ended the transaction, then converts it.
    fn note<T>(&mut self, r: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        r.map_err(|e| {
            if self.dialect() == Dialect::Sqlite && !undoes_only_the_statement(&e) {
                self.broken = true;
            }
            StoreError::from(e)
        })
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
