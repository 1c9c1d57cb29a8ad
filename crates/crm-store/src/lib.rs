//! SeaORM adapters of the mini-crm ports. (Stub: being implemented.)

use crm_core::Store;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://path?mode=rwc` or `postgres://…`.
    pub database_url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
        }
    }
}

/// The embedded default database.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://crm.db?mode=rwc";

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL names no supported backend.
    #[error("unsupported database url {0:?}: expected sqlite:// or postgres://")]
    UnsupportedUrl(String),
}

/// A connected store.
pub struct DbStore {}

/// Opens the database, runs migrations and starts the writer.
///
/// # Errors
/// [`ConnectError`] when the database cannot be opened or migrated.
pub async fn connect(config: &StoreConfig) -> Result<DbStore, ConnectError> {
    Err(ConnectError::UnsupportedUrl(config.database_url.clone()))
}

impl DbStore {
    /// Stops taking writes, commits what is queued, and waits for the writer to finish.
    pub async fn shutdown(&self) {}
}

fn _assert_store<S: Store>() {}
