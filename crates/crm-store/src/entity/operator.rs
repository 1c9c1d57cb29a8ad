//! `operators`.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "operators")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Name.
    pub name: String,
    /// Takes contacts.
    pub is_active: bool,
    /// Limit.
    pub max_active_contacts: i64,
    /// Pace, if any.
    pub max_assignments_per_minute: Option<i64>,
    /// Pace bucket's instant (µs since the epoch).
    pub pace_tat_us: i64,
    /// Load counter.
    pub open_contacts: i64,
    /// Created.
    pub created_at: ChronoDateTimeUtc,
}

/// No navigated relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
