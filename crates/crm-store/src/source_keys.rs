//! Sources' ingest keys (`/api/sources/{id}/keys`) as read from the read pool; they are
//! written through the backend's writer like every change (`ops.rs`).

use crm_core::{Entity, SourceId, SourceKey, SourceKeyId, StoreError};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};

use crate::{
    entity::{source, source_key},
    error::db_err,
};

/// A source's keys.
pub async fn source_keys(
    db: &DatabaseConnection,
    id: SourceId,
) -> Result<Vec<SourceKey>, StoreError> {
    if source::Entity::find_by_id(id.get())
        .one(db)
        .await
        .map_err(db_err)?
        .is_none()
    {
        return Err(StoreError::NotFound(Entity::Source));
    }
    let rows = source_key::Entity::find()
        .filter(source_key::Column::SourceId.eq(id.get()))
        .order_by_asc(source_key::Column::Id)
        .all(db)
        .await
        .map_err(db_err)?;
    Ok(rows.into_iter().map(to_source_key).collect())
}

/// One key.
pub async fn source_key(db: &DatabaseConnection, id: SourceKeyId) -> Result<SourceKey, StoreError> {
    source_key::Entity::find_by_id(id.get())
        .one(db)
        .await
        .map_err(db_err)?
        .map(to_source_key)
        .ok_or(StoreError::NotFound(Entity::Source))
}

/// The key with this hash.
pub async fn source_key_by_hash(
    db: &DatabaseConnection,
    hash: &str,
) -> Result<Option<SourceKey>, StoreError> {
    Ok(source_key::Entity::find()
        .filter(source_key::Column::Hash.eq(hash))
        .one(db)
        .await
        .map_err(db_err)?
        .map(to_source_key))
}

fn to_source_key(row: source_key::Model) -> SourceKey {
    SourceKey {
        id: SourceKeyId(row.id),
        source_id: SourceId(row.source_id),
        label: row.label,
        prefix: row.prefix,
        created_at: row.created_at,
        last_used_at: row.last_used_at,
    }
}
