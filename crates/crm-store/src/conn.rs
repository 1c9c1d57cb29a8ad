//! The seam that lets every write be written once for both backends: a [`Conn`] runs
//! one SQL statement from `sql.rs` and hands back [`Row`]s. The SQLite writer's connection
//! is synchronous (its futures are ready at once and are driven by `pollster`); the
//! PostgreSQL one is SeaORM's async transaction.

use std::future::{Future, ready};

use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::StoreError;
use sea_orm::sea_query::Value;

use crate::error::{db_err, sync_err};

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
    /// From the SQLite writer.
    Sqlite(sea_orm_sync::QueryResult),
    /// From PostgreSQL.
    Postgres(sea_orm::QueryResult),
}

impl Row {
    /// The column at `index`.
    pub fn get<T>(&self, index: usize) -> Result<T, StoreError>
    where
        T: sea_orm::TryGetable + sea_orm_sync::TryGetable,
    {
        match self {
            Self::Sqlite(row) => {
                sea_orm_sync::QueryResult::try_get_by_index(row, index).map_err(sync_err)
            }
            Self::Postgres(row) => {
                sea_orm::QueryResult::try_get_by_index(row, index).map_err(db_err)
            }
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
}

/// The SQLite writer's connection.
pub struct SqliteConn<'a>(pub &'a sea_orm_sync::DatabaseConnection);

impl SqliteConn<'_> {
    /// SQLite reads `$2` as a *named* parameter numbered by first appearance, so the
    /// shared `$n` placeholders become `?n`, which it numbers explicitly.
    fn statement(sql: &str, values: Vec<Value>) -> sea_orm_sync::Statement {
        sea_orm_sync::Statement::from_sql_and_values(
            sea_orm_sync::DbBackend::Sqlite,
            sql.replace('$', "?"),
            values,
        )
    }
}

fn sync_db_err(err: sea_orm_sync::DbErr) -> DbError {
    match err.sql_err() {
        Some(sea_orm_sync::SqlErr::UniqueConstraintViolation(_)) => DbError::Unique,
        Some(sea_orm_sync::SqlErr::ForeignKeyConstraintViolation(_)) => DbError::ForeignKey,
        _ => DbError::Other(sync_err(err)),
    }
}

impl Conn for SqliteConn<'_> {
    fn one(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> impl Future<Output = Result<Option<Row>, DbError>> {
        use sea_orm_sync::ConnectionTrait;
        ready(
            self.0
                .query_one_raw(Self::statement(sql, values))
                .map(|row| row.map(Row::Sqlite))
                .map_err(sync_db_err),
        )
    }

    fn all(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Row>, DbError>> {
        use sea_orm_sync::ConnectionTrait;
        ready(
            self.0
                .query_all_raw(Self::statement(sql, values))
                .map(|rows| rows.into_iter().map(Row::Sqlite).collect())
                .map_err(sync_db_err),
        )
    }

    fn timestamp(&self, t: DateTime<Utc>) -> Value {
        // The text form the async driver reads back on the read side.
        t.to_rfc3339_opts(SecondsFormat::Micros, true).into()
    }
}

/// A PostgreSQL transaction.
pub struct PgConn<'a>(pub &'a sea_orm::DatabaseTransaction);

fn async_db_err(err: sea_orm::DbErr) -> DbError {
    if matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    ) {
        DbError::Unique
    } else {
        DbError::Other(db_err(err))
    }
}

impl Conn for PgConn<'_> {
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
}
