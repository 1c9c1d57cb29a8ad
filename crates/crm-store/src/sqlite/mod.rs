//! The SQLite backend: one writer thread (see [`writer`]) for every write, a read-only
//! pool for reads, and an exclusive `flock` on the database file itself so that only one
//! process writes it.

pub mod checkpoint;
pub mod registration;
pub mod writer;

use std::{fs::File, path::PathBuf};

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, DatabaseConnection, TransactionTrait};

use crate::{ConnectError, StoreConfig};
use checkpoint::Checkpointer;
use writer::Writer;

/// Prepared statements the writer keeps: more than it has.
const STATEMENT_CACHE: usize = 96;
/// The writer's page cache, in KiB (SQLite's default is 2,000 KiB, `-2000`). A registration looks up
/// a returning lead and inserts into the contacts' lead index at that lead's place: two
/// random pages, which a 2 MB cache missed about once per registration (a `pread` each).
/// 8 MiB keeps those indexes hot for ~700,000 contacts; it is memory the writer only
/// uses as the database grows into it.
const WRITER_CACHE_KIB: u32 = 8 * 1024;

/// What [`open`] hands back.
pub struct Opened {
    /// Read-only pool.
    pub reader: DatabaseConnection,
    /// The writer thread.
    pub writer: Writer,
    /// Held for the life of the store; the kernel releases it when the process dies.
    pub lock: File,
}

/// Extracts the file path of a `sqlite:` URL; in-memory databases cannot be shared
/// between the writer and the readers, so they are refused.
fn file_path(url: &str) -> Result<PathBuf, ConnectError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| ConnectError::UnsupportedUrl(url.to_owned()))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") || path.starts_with("file:") {
        return Err(ConnectError::UnsupportedUrl(url.to_owned()));
    }
    Ok(PathBuf::from(path))
}

/// Takes an exclusive `flock` on the database file named by `url` itself (creating the
/// file, empty, if it does not exist: SQLite reads an empty file as an empty database);
/// returns the file's path and the open file that holds the lock.
///
/// The lock belongs to the open file, so it is the same whatever path, symlink or hard
/// link reached it, and the kernel releases it when the process dies. It does not
/// conflict with the `fcntl` locks SQLite takes on the same file. But closing *any*
/// descriptor of a file drops every `fcntl` lock the process holds on it, so the returned
/// file must stay open until SQLite's own connections to it have closed.
pub fn lock(url: &str) -> Result<(String, File), ConnectError> {
    let path = file_path(url)?;
    let display = path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| ConnectError::Io {
            path: display.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok((display, file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(ConnectError::InUse(display)),
        Err(std::fs::TryLockError::Error(source)) => Err(ConnectError::Io {
            path: display,
            source,
        }),
    }
}

/// Opens (creating if needed) and migrates the database, then starts the writer.
pub async fn open(config: &StoreConfig) -> Result<Opened, ConnectError> {
    let (display, lock) = lock(&config.database_url)?;

    let admin = sea_orm::Database::connect(
        ConnectOptions::new(format!("sqlite://{display}?mode=rwc"))
            .max_connections(1)
            .sqlx_logging(false)
            .to_owned(),
    )
    .await
    .map_err(|err| ConnectError::Database(Box::new(err)))?;
    admin
        .execute_unprepared("PRAGMA journal_mode = WAL")
        .await
        .map_err(|err| ConnectError::Database(Box::new(err)))?;
    // In one transaction (SQLite's DDL is transactional): a crash mid-migration leaves
    // the schema as it was, never tables without their row in `seaql_migrations`.
    let migrated = async {
        let txn = admin.begin().await?;
        Migrator::up(&txn, None).await?;
        txn.commit().await
    };
    migrated
        .await
        .map_err(|err| ConnectError::Migration(Box::new(err)))?;
    admin
        .close()
        .await
        .map_err(|err| ConnectError::Database(Box::new(err)))?;

    let synchronous = if config.sqlite_synchronous_normal {
        "NORMAL"
    } else {
        "FULL"
    };
    let open_rw = move |path: String| {
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;"
        ))?;
        Ok::<_, rusqlite::Error>(conn)
    };
    let path = display.clone();
    let checkpointer =
        Checkpointer::start(move || open_rw(path)).map_err(|source| ConnectError::Io {
            path: display.clone(),
            source,
        })?;
    let path = display.clone();
    let connect = move || {
        let conn = open_rw(path)?;
        // Every statement the writer runs stays prepared (there are about forty).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.execute_batch(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB}"))?;
        Ok(conn)
    };
    let writer = Writer::start(connect, config.write_queue, config.seed, Some(checkpointer))
        .map_err(|err| ConnectError::Database(Box::new(err)))?;

    let reader = sea_orm::Database::connect(
        ConnectOptions::new(format!("sqlite://{display}?mode=ro"))
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            // A file does not hang up: sqlx's ping on every checkout would only cost
            // each read a trip to the connection's thread.
            .test_before_acquire(false)
            .sqlx_logging(false)
            .to_owned(),
    )
    .await
    .map_err(|err| ConnectError::Database(Box::new(err)))?;

    Ok(Opened {
        reader,
        writer,
        lock,
    })
}
