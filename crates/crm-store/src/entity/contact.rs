//! `contacts`.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "contacts")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Lead.
    pub lead_id: i64,
    /// Source.
    pub source_id: i64,
    /// Operator, if assigned.
    pub operator_id: Option<i64>,
    /// `open` or `closed`.
    pub status: String,
    /// Compact JSON text.
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    /// Its registration's decision record: the first entry of its decision history.
    #[sea_orm(column_type = "Text", nullable)]
    pub decision: Option<String>,
    /// The operator its registration chose; `None` when it was stored waiting.
    pub registered_operator_id: Option<i64>,
    /// Created.
    pub created_at: ChronoDateTimeUtc,
    /// Closed.
    pub closed_at: Option<ChronoDateTimeUtc>,
}

/// The contact's operator.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// `operator_id` → `operators.id`.
    #[sea_orm(
        belongs_to = "super::operator::Entity",
        from = "Column::OperatorId",
        to = "super::operator::Column::Id"
    )]
    Operator,
}

impl Related<super::operator::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Operator.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
