//! SeaORM entities of the schema in `migrations`, used by the read side. Writes on the hot
//! path are explicit SQL (see `sql.rs`), so these types never travel beyond the store.

pub mod contact;
pub mod lead;
pub mod operator;
pub mod source;
pub mod source_key;
pub mod weight;
