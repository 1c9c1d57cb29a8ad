//! The seam that lets every write be written once for both backends: a [`Conn`] runs
//! one SQL statement from `sql.rs` and hands back [`Row`]s. The SQLite writer's connection
//! is synchronous rusqlite (its futures are ready at once and are driven by `pollster`);
//! the PostgreSQL one is SeaORM's async transaction, or one pooled connection outside any
//! transaction ([`PgHeld`]) for a registration without a key.

use std::future::{Future, ready};

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use crm_core::{NewEvent, StoreError};
use rusqlite::types::{ToSqlOutput, ValueRef};
use sea_orm::sea_query::Value;

use crate::{error::db_err, sql, sqlite::outbox::Pending};

/// The row an `UPDATE … RETURNING` or `INSERT … RETURNING` must have returned.
pub(crate) fn returned(row: Option<Row>) -> Result<Row, StoreError> {
    row.ok_or_else(|| StoreError::Internal("a RETURNING statement returned no row".into()))
}

/// A driver error as the writes need to see it: unique violations are told apart so an
/// operation can name the field that clashed.
#[derive(Debug)]
pub enum DbError {
    /// A unique constraint refused the statement.
    Unique,
    /// A foreign key refused the statement (e.g. a row gained a reference meanwhile).
    ForeignKey,
    /// Anything else, already mapped.
    Other(StoreError),
}

impl From<DbError> for StoreError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unique => StoreError::Internal("unexpected unique violation".into()),
            DbError::ForeignKey => StoreError::Internal("unexpected foreign key violation".into()),
            DbError::Other(err) => err,
        }
    }
}

impl From<StoreError> for DbError {
    fn from(err: StoreError) -> Self {
        Self::Other(err)
    }
}

/// One result row of either driver.
pub enum Row {
    /// From the SQLite writer: the row's values, copied out of the statement.
    Sqlite(Vec<rusqlite::types::Value>),
    /// From PostgreSQL.
    Postgres(sea_orm::QueryResult),
}

impl Row {
    /// The column at `index`.
    pub fn get<T>(&self, index: usize) -> Result<T, StoreError>
    where
        T: sea_orm::TryGetable + rusqlite::types::FromSql,
    {
        match self {
            Self::Sqlite(values) => {
                let value = values.get(index).ok_or_else(|| {
                    StoreError::Internal(format!("a row has no column {index}").into())
                })?;
                T::column_result(value.into()).map_err(|err| StoreError::Internal(Box::new(err)))
            }
            Self::Postgres(row) => {
                sea_orm::QueryResult::try_get_by_index(row, index).map_err(db_err)
            }
        }
    }

    /// The timestamp at `index`: SQLite's text ([`sqlite_timestamp`], or a time without an
    /// offset, taken as UTC, as the read side's driver takes it), PostgreSQL's `timestamptz`.
    pub fn time(&self, index: usize) -> Result<DateTime<Utc>, StoreError> {
        match self {
            Self::Sqlite(_) => {
                let text: String = self.get(index)?;
                DateTime::parse_from_rfc3339(&text)
                    .map(|t| t.with_timezone(&Utc))
                    .or_else(|_| text.parse::<NaiveDateTime>().map(|t| t.and_utc()))
                    .or_else(|_| {
                        NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f")
                            .map(|t| t.and_utc())
                    })
                    .map_err(|err| StoreError::Internal(Box::new(err)))
            }
            Self::Postgres(row) => row.try_get_by_index(index).map_err(db_err),
        }
    }
}

/// Runs the shared statements.
pub trait Conn {
    /// Runs `sql` and returns its first row, if any.
    fn one(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> impl Future<Output = Result<Option<Row>, DbError>>;

    /// Runs `sql` and returns all its rows.
    fn all(&self, sql: &str, values: Vec<Value>)
    -> impl Future<Output = Result<Vec<Row>, DbError>>;

    /// A timestamp as this backend stores it.
    fn timestamp(&self, t: DateTime<Utc>) -> Value;

    /// A timestamp that may be absent, as this backend stores it (`NULL` of its type).
    fn timestamp_or_null(&self, t: Option<DateTime<Utc>>) -> Value;

    /// Notes that the statement just run stored `event`, at `at`, in the outbox. The
    /// SQLite writer keeps what its transaction inserted for the readers of the outbox
    /// (`sqlite::outbox`); PostgreSQL's replicas read the table.
    fn inserted_event(&self, _event: &NewEvent, _at: DateTime<Utc>) {}

    /// Notes that the statement just run pruned every event up to `through` (see
    /// [`Self::inserted_event`]).
    fn pruned_events(&self, _through: u64) {}

    /// How a write reads rows it goes on to change. Other units of work write at the same
    /// time on PostgreSQL, so it locks them; the SQLite writer is the only writer and runs
    /// one unit of work at a time: a plain read is exact there, and a write that fails must
    /// not have written anything first (see `sqlite::writer`), so it locks nothing.
    const LOCKS: sql::Locks;
}

/// The SQLite writer's connection (rusqlite: the writer is synchronous, and rusqlite's
/// cached prepared statements and direct row access are the cheapest way through SQLite),
/// with the events its transaction has inserted so far.
pub struct SqliteConn<'a> {
    conn: &'a rusqlite::Connection,
    pending: &'a Pending,
}

impl<'a> SqliteConn<'a> {
    /// The writer's connection, noting the events it inserts in `pending`.
    pub const fn new(conn: &'a rusqlite::Connection, pending: &'a Pending) -> Self {
        Self { conn, pending }
    }
}

/// A SeaQuery value bound as a SQLite parameter, without copying text.
struct Param<'a>(&'a Value);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let value = match self.0 {
            Value::Bool(Some(b)) => ValueRef::Integer(i64::from(*b)),
            Value::Int(Some(i)) => ValueRef::Integer(i64::from(*i)),
            Value::BigInt(Some(i)) => ValueRef::Integer(*i),
            Value::String(Some(s)) => ValueRef::Text(s.as_bytes()),
            Value::Bool(None) | Value::Int(None) | Value::BigInt(None) | Value::String(None) => {
                ValueRef::Null
            }
            other => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    format!("no SQLite binding for {other:?}").into(),
                ));
            }
        };
        Ok(ToSqlOutput::Borrowed(value))
    }
}

impl SqliteConn<'_> {
    /// Prepares (through the connection's statement cache) and binds `sql`, then hands
    /// its rows to `read`.
    fn query<T>(
        &self,
        sql: &str,
        values: &[Value],
        read: impl FnOnce(rusqlite::Rows<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        let mut statement = self.conn.prepare_cached(sql).map_err(sqlite_err)?;
        for (index, value) in values.iter().enumerate() {
            statement
                .raw_bind_parameter(index + 1, Param(value))
                .map_err(sqlite_err)?;
        }
        read(statement.raw_query()).map_err(sqlite_err)
    }
}

fn owned_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let count = row.as_ref().column_count();
    (0..count)
        .map(|index| row.get::<_, rusqlite::types::Value>(index))
        .collect::<rusqlite::Result<_>>()
        .map(Row::Sqlite)
}

/// Classifies a SQLite error: constraint violations by kind, and I/O or full-disk
/// failures as the database being unavailable (they are not the request's fault and
/// may pass).
pub fn sqlite_err(err: rusqlite::Error) -> DbError {
    use rusqlite::ffi;
    let Some(code) = err.sqlite_error() else {
        return DbError::Other(StoreError::Internal(Box::new(err)));
    };
    match code.extended_code {
        ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => DbError::Unique,
        ffi::SQLITE_CONSTRAINT_FOREIGNKEY => DbError::ForeignKey,
        _ => match code.code {
            rusqlite::ErrorCode::SystemIoFailure
            | rusqlite::ErrorCode::DiskFull
            | rusqlite::ErrorCode::CannotOpen
            | rusqlite::ErrorCode::DatabaseBusy
            | rusqlite::ErrorCode::DatabaseLocked => {
                DbError::Other(StoreError::Unavailable(Box::new(err)))
            }
            _ => DbError::Other(StoreError::Internal(Box::new(err))),
        },
    }
}

impl Conn for SqliteConn<'_> {
    const LOCKS: sql::Locks = sql::PLAIN_READS;

    fn one(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> impl Future<Output = Result<Option<Row>, DbError>> {
        ready(self.query(sql, &values, |mut rows| {
            rows.next()?.map(owned_row).transpose()
        }))
    }

    fn all(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Row>, DbError>> {
        ready(self.query(sql, &values, |rows| rows.mapped(owned_row).collect()))
    }

    fn timestamp(&self, t: DateTime<Utc>) -> Value {
        sqlite_timestamp(t).into()
    }

    fn timestamp_or_null(&self, t: Option<DateTime<Utc>>) -> Value {
        t.map(sqlite_timestamp).into()
    }

    fn inserted_event(&self, event: &NewEvent, at: DateTime<Utc>) {
        let data = event.data.clone();
        self.pending
            .inserted(self.conn, event.kind, at, event.contact_id, data);
    }

    fn pruned_events(&self, through: u64) {
        self.pending.pruned(through);
    }
}

/// A timestamp in the text form the async driver reads back on the read side.
pub fn sqlite_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A time to bind on the read pool, as `backend` compares it: SQLite keeps times as text,
/// compared as written ([`sqlite_timestamp`]).
pub fn read_side_time(backend: sea_orm::DbBackend, t: DateTime<Utc>) -> Value {
    match backend {
        sea_orm::DbBackend::Sqlite => sqlite_timestamp(t).into(),
        _ => t.into(),
    }
}

/// A PostgreSQL transaction.
pub struct PgConn<'a>(pub &'a sea_orm::DatabaseTransaction);

fn async_db_err(err: sea_orm::DbErr) -> DbError {
    match err.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => DbError::Unique,
        Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => DbError::ForeignKey,
        _ => DbError::Other(db_err(err)),
    }
}

impl Conn for PgConn<'_> {
    const LOCKS: sql::Locks = sql::ROW_LOCKS;

    async fn one(&self, sql: &str, values: Vec<Value>) -> Result<Option<Row>, DbError> {
        use sea_orm::ConnectionTrait;
        self.0
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                sql,
                values,
            ))
            .await
            .map(|row| row.map(Row::Postgres))
            .map_err(async_db_err)
    }

    async fn all(&self, sql: &str, values: Vec<Value>) -> Result<Vec<Row>, DbError> {
        use sea_orm::ConnectionTrait;
        self.0
            .query_all_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                sql,
                values,
            ))
            .await
            .map(|rows| rows.into_iter().map(Row::Postgres).collect())
            .map_err(async_db_err)
    }

    fn timestamp(&self, t: DateTime<Utc>) -> Value {
        t.into()
    }

    fn timestamp_or_null(&self, t: Option<DateTime<Utc>>) -> Value {
        t.into()
    }
}

/// One pooled PostgreSQL connection held outside any transaction, so that each statement
/// commits on its own: for a unit of work whose only write is a single statement (see
/// `pg::registration`). SeaORM runs each statement on the pool on a connection of its
/// own, and sqlx tests a connection with a round trip each time it goes back to the pool
/// (in a task of its own, after the answer, but a round trip on both sides all the same),
/// so holding one saves that round trip for every statement after the first.
pub struct PgHeld {
    conn: tokio::sync::Mutex<PoolConnection>,
    /// Where a broken connection is replaced (see [`PgHeld::read`]).
    pool: sea_orm::sqlx::PgPool,
}

type PoolConnection = sea_orm::sqlx::pool::PoolConnection<sea_orm::sqlx::Postgres>;

impl PgHeld {
    /// Takes a connection from `db`'s pool until this is dropped.
    pub async fn acquire(db: &sea_orm::DatabaseConnection) -> Result<Self, StoreError> {
        let pool = db.get_postgres_connection_pool().clone();
        let conn = Self::checkout(&pool).await?;
        Ok(Self {
            conn: tokio::sync::Mutex::new(conn),
            pool,
        })
    }

    async fn checkout(pool: &sea_orm::sqlx::PgPool) -> Result<PoolConnection, StoreError> {
        pool.acquire().await.map_err(|err| {
            db_err(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(
                err.into(),
            )))
        })
    }

    /// Runs a statement that only reads, as [`Conn::all`]; but when its connection turns
    /// out to be broken (the server restarted, a proxy dropped it), runs it once more on
    /// a fresh one instead of failing. Nothing has been written on a held connection
    /// before its read (see `pg::registration`), and a read writes nothing, so the retry
    /// can repeat nothing. The loss is noted first, so the pool checks the connection it
    /// hands out for the retry, and every other one for a while (`error::lost_recently`).
    pub async fn read(&self, sql: &str, values: Vec<Value>) -> Result<Vec<Row>, DbError> {
        let mut conn = self.conn.lock().await;
        let err = match Self::query(sql, values.clone())
            .fetch_all(&mut **conn)
            .await
        {
            Ok(rows) => return Ok(pg_rows(rows)),
            Err(err) if crate::error::lost(&err) => err,
            Err(err) => return Err(sqlx_db_err(err)),
        };
        crate::error::note_lost();
        tracing::warn!(error = %err, "a pooled connection was broken; reading again on another");
        // The broken connection is dropped here: sqlx's check on its return closes it.
        *conn = Self::checkout(&self.pool).await.map_err(DbError::Other)?;
        Self::query(sql, values)
            .fetch_all(&mut **conn)
            .await
            .map(pg_rows)
            .map_err(sqlx_db_err)
    }

    fn query(
        sql: &str,
        values: Vec<Value>,
    ) -> sea_orm::sqlx::query::Query<'_, sea_orm::sqlx::Postgres, sea_query_sqlx::SqlxValues> {
        sea_orm::sqlx::query_with(
            sea_orm::sqlx::AssertSqlSafe(sql),
            sea_query_sqlx::SqlxValues(sea_orm::sea_query::Values(values)),
        )
    }
}

fn pg_rows(rows: Vec<sea_orm::sqlx::postgres::PgRow>) -> Vec<Row> {
    rows.into_iter()
        .map(|row| Row::Postgres(row.into()))
        .collect()
}

fn sqlx_db_err(err: sea_orm::sqlx::Error) -> DbError {
    async_db_err(sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(
        err.into(),
    )))
}

impl Conn for PgHeld {
    const LOCKS: sql::Locks = sql::ROW_LOCKS;

    async fn one(&self, sql: &str, values: Vec<Value>) -> Result<Option<Row>, DbError> {
        let mut conn = self.conn.lock().await;
        Self::query(sql, values)
            .fetch_optional(&mut **conn)
            .await
            .map(|row| row.map(|row| Row::Postgres(row.into())))
            .map_err(sqlx_db_err)
    }

    async fn all(&self, sql: &str, values: Vec<Value>) -> Result<Vec<Row>, DbError> {
        let mut conn = self.conn.lock().await;
        Self::query(sql, values)
            .fetch_all(&mut **conn)
            .await
            .map(pg_rows)
            .map_err(sqlx_db_err)
    }

    fn timestamp(&self, t: DateTime<Utc>) -> Value {
        t.into()
    }

    fn timestamp_or_null(&self, t: Option<DateTime<Utc>>) -> Value {
        t.into()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::{Row, sqlite_timestamp};

    #[test]
    fn a_sqlite_time_reads_back_as_written_or_as_utc_without_an_offset() {
        let at = Utc
            .with_ymd_and_hms(2026, 12, 7, 1, 2, 3)
            .single()
            .expect("a time")
            + chrono::Duration::microseconds(456_789);
        let row = |text: &str| Row::Sqlite(vec![rusqlite::types::Value::Text(text.into())]);
        assert_eq!(row(&sqlite_timestamp(at)).time(0).expect("ours"), at);
        assert_eq!(row("2026-12-07T01:02:03.456789").time(0).expect("T"), at);
        assert_eq!(
            row("2026-12-07 01:02:03.456789").time(0).expect("space"),
            at
        );
        assert!(row("yesterday").time(0).is_err());
    }
}
