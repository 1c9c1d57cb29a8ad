//! `source_keys`.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "source_keys")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Source.
    pub source_id: i64,
    /// Description.
    pub label: Option<String>,
    /// First characters of the key.
    pub prefix: String,
    /// SHA-256 of the key, hex.
    pub hash: String,
    /// Issued.
    pub created_at: ChronoDateTimeUtc,
    /// Last used.
    pub last_used_at: Option<ChronoDateTimeUtc>,
}

/// No navigated relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
