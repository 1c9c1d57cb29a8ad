//! Keys of `/api/keys` (viewer keys): stored as a hash, written through the backend's
//! writer like every change, read from the read pool.

use chrono::{DateTime, Utc};
use crm_core::{ApiKey, ApiKeyId, Entity, KeyScope, NewApiKey, StoreError};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::{
    clock::now,
    conn::{Conn, returned},
    error::{broken, db_err},
};

const INSERT: &str = "INSERT INTO api_keys (scope, label, prefix, hash, created_at) \
     VALUES ($1, $2, $3, $4, $5) RETURNING id";
const DELETE: &str = "DELETE FROM api_keys WHERE id = $1 RETURNING id";
const TOUCH: &str = "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 RETURNING id";
const COLUMNS: &str = "SELECT id, scope, label, prefix, created_at, last_used_at FROM api_keys";

/// Stores a key; returns its id.
pub async fn create(conn: &impl Conn, new: &NewApiKey) -> Result<ApiKeyId, StoreError> {
    let values = vec![
        new.scope.as_str().into(),
        new.label.as_ref().map(|l| l.as_str().to_owned()).into(),
        new.prefix.as_str().into(),
        new.hash.as_str().into(),
        conn.timestamp(now()),
    ];
    let row = returned(conn.one(INSERT, values).await?)?;
    Ok(ApiKeyId(row.get(0)?))
}

/// Revokes a key.
pub async fn delete(conn: &impl Conn, id: ApiKeyId) -> Result<(), StoreError> {
    conn.one(DELETE, vec![id.get().into()])
        .await?
        .map(drop)
        .ok_or(StoreError::NotFound(Entity::Key))
}

/// Notes that a key was used now.
pub async fn touch(conn: &impl Conn, id: ApiKeyId) -> Result<(), StoreError> {
    conn.one(TOUCH, vec![conn.timestamp(now()), id.get().into()])
        .await?;
    Ok(())
}

/// The keys matching `filter` (an SQL condition on `$1`, or none), by id.
async fn select(
    db: &DatabaseConnection,
    filter: Option<(&str, sea_orm::Value)>,
) -> Result<Vec<ApiKey>, StoreError> {
    let backend = db.get_database_backend();
    let statement = match filter {
        Some((condition, value)) => Statement::from_sql_and_values(
            backend,
            format!("{COLUMNS} WHERE {condition} ORDER BY id"),
            [value],
        ),
        None => Statement::from_string(backend, format!("{COLUMNS} ORDER BY id")),
    };
    let rows = db.query_all_raw(statement).await.map_err(db_err)?;
    rows.iter()
        .map(|row| {
            let scope: String = row.try_get_by_index(1).map_err(db_err)?;
            Ok(ApiKey {
                id: ApiKeyId(row.try_get_by_index(0).map_err(db_err)?),
                scope: KeyScope::parse(&scope).map_err(|_| broken("key scope"))?,
                label: row.try_get_by_index(2).map_err(db_err)?,
                prefix: row.try_get_by_index(3).map_err(db_err)?,
                created_at: row.try_get_by_index(4).map_err(db_err)?,
                last_used_at: row
                    .try_get_by_index::<Option<DateTime<Utc>>>(5)
                    .map_err(db_err)?,
            })
        })
        .collect()
}

/// Every key, by id.
pub async fn list(db: &DatabaseConnection) -> Result<Vec<ApiKey>, StoreError> {
    select(db, None).await
}

/// The key `id`.
pub async fn one(db: &DatabaseConnection, id: ApiKeyId) -> Result<ApiKey, StoreError> {
    select(db, Some(("id = $1", id.get().into())))
        .await?
        .pop()
        .ok_or(StoreError::NotFound(Entity::Key))
}

/// The key with this hash, if any.
pub async fn by_hash(db: &DatabaseConnection, hash: &str) -> Result<Option<ApiKey>, StoreError> {
    Ok(select(db, Some(("hash = $1", hash.into()))).await?.pop())
}
