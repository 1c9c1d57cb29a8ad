//! Throwaway databases for tests, for this crate and for crates built on it: a fresh
//! SQLite file in a temporary directory, or a fresh database on the PostgreSQL server
//! named by `CRM_TEST_POSTGRES_URL` (`cargo xtask test` starts one).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

/// The webhook queries that must read only the deliveries still due (a test looks at their
/// plans): an endpoint's claim of due retries, the scrape's count, retention's floor.
pub use crate::{events::WEBHOOK_FLOOR, sql::CLAIM_DUE, webhooks::BACKLOG as WEBHOOK_BACKLOG};
/// The query a metrics scrape counts the unassigned backlog with, for a test to look
/// at its plan.
pub use crate::{read::QUEUE_SQL, sql::LATEST_OWNER};

/// The environment variable naming the PostgreSQL server tests may use.
pub const POSTGRES_URL_VAR: &str = "CRM_TEST_POSTGRES_URL";

/// Runs each named test function (an `async fn(Backend)`) once per backend:
/// `sqlite::name` always, and `postgres::name` when the *calling* crate's
/// `postgres-tests` feature is on (the `cfg` is evaluated where the macro expands; every
/// crate that uses it has such a feature, which `cargo xtask test` turns on).
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::testing::Backend::Sqlite).await;
                }
            )*
        }
        #[cfg(feature = "postgres-tests")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::testing::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A temporary database on the test PostgreSQL server.
    Postgres,
}

/// A database that exists until dropped (or [`TestDatabase::drop_database`]).
pub struct TestDatabase {
    /// The URL to connect the store to.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    Postgres { admin_url: String, name: String },
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name() -> String {
    format!(
        "crm_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestDatabase {
    /// Creates an empty database on `backend`.
    ///
    /// # Panics
    /// When it cannot be created: this is test support, a failure is the test's failure.
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(unique_name());
                std::fs::create_dir_all(&dir).expect("create a temporary directory");
                Self {
                    url: format!("sqlite://{}?mode=rwc", dir.join("crm.db").display()),
                    cleanup: Cleanup::Dir(dir),
                }
            }
            Backend::Postgres => {
                let admin_url = std::env::var(POSTGRES_URL_VAR)
                    .unwrap_or_else(|_| panic!("{POSTGRES_URL_VAR} is not set"));
                let name = unique_name();
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("connect to the test postgres");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create a test database");
                let _ = admin.close().await;
                let base = admin_url
                    .rsplit_once('/')
                    .map_or(admin_url.as_str(), |(base, _)| base);
                Self {
                    url: format!("{base}/{name}"),
                    cleanup: Cleanup::Postgres { admin_url, name },
                }
            }
        }
    }

    /// [`Self::url`], parsed.
    ///
    /// # Panics
    /// Never: both kinds of URL this module makes parse.
    #[must_use]
    pub fn database_url(&self) -> crate::DatabaseUrl {
        self.url.parse().expect("a test database url parses")
    }

    /// Every table's number of rows, by table name (the migrations' own table included):
    /// what a test compares before and after a call that must write nothing. Reads through
    /// a connection of its own.
    ///
    /// # Panics
    /// When the database cannot be read: this is test support.
    pub async fn row_counts(&self) -> BTreeMap<String, i64> {
        let db = Database::connect(&self.url)
            .await
            .expect("connect to the test database");
        let backend = db.get_database_backend();
        let tables = match backend {
            DbBackend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            }
            _ => "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
        };
        let mut counts = BTreeMap::new();
        for row in db
            .query_all_raw(Statement::from_string(backend, tables))
            .await
            .expect("list the tables")
        {
            let table: String = row.try_get_by_index(0).expect("a table name");
            let count = db
                .query_one_raw(Statement::from_string(
                    backend,
                    format!("SELECT COUNT(*) FROM \"{table}\""),
                ))
                .await
                .expect("count a table's rows")
                .expect("one row")
                .try_get_by_index::<i64>(0)
                .expect("a count");
            counts.insert(table, count);
        }
        let _ = db.close().await;
        counts
    }

    /// Removes a PostgreSQL test database now (dropping the value does it too).
    pub async fn drop_database(&self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            drop_postgres_database(admin_url, name).await;
        }
    }
}

async fn drop_postgres_database(admin_url: &str, name: &str) {
    if let Ok(admin) = Database::connect(admin_url).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
        let _ = admin.close().await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                // Drop runs inside the test's runtime, which must not be blocked on; a
                // helper thread with its own runtime removes the database.
                let (admin_url, name) = (admin_url.clone(), name.clone());
                let _ = std::thread::spawn(move || {
                    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        rt.block_on(drop_postgres_database(&admin_url, &name));
                    }
                })
                .join();
            }
        }
    }
}

/// Every event of `store`'s outbox after `after` that may be delivered now, read in pages
/// of `page` as a stream reader reads them (through the gaps rule of
/// [`crm_core::EventCursor`]).
///
/// # Panics
/// When a read fails: this is for tests.
pub async fn events_after(
    store: &impl crm_core::Store,
    after: u64,
    page: u32,
) -> Vec<crm_core::Event> {
    let (mut cursor, mut all) = (crm_core::EventCursor::at(after), Vec::new());
    loop {
        let (next, read) = store.read_events(cursor, page).await.expect("read events");
        if read.events.is_empty() {
            return all;
        }
        cursor = next;
        all.extend(read.events);
    }
}

/// Whether reads of the events after `after` are answered from the SQLite writer's memory
/// of the newest events rather than from the table (never on PostgreSQL).
#[must_use]
pub fn answered_from_memory(store: &crate::DbStore, after: u64) -> bool {
    store
        .tail()
        .is_some_and(|tail| tail.between(after, after, 0).is_some())
}

/// Every event after `after` as the table holds it, read from the database even where
/// the SQLite writer keeps the newest in memory: what the memory must equal.
pub async fn stored_events(store: &crate::DbStore, after: u64) -> Vec<crm_core::Event> {
    crate::events::between(store.reader(), after, u64::MAX, u32::MAX)
        .await
        .expect("read the events table")
        .events
}
