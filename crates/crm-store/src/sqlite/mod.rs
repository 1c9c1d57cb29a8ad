//! The SQLite backend: one writer thread (see [`writer`]) for every write, a read-only
//! pool for reads, and an exclusive lock file so that only one process writes the file.

pub mod checkpoint;
pub mod registration;
pub mod walbuf;
pub mod writer;

use std::{ffi::CStr, fs::File, path::PathBuf};

use fs2::FileExt;
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

/// Takes the exclusive lock beside the database file named by `url`; returns the file's
/// path and the held lock.
pub fn lock(url: &str) -> Result<(String, File), ConnectError> {
    let path = file_path(url)?;
    let display = path.display().to_string();
    let lock_path = PathBuf::from(format!("{display}.lock"));
    let lock = File::create(&lock_path).map_err(|source| ConnectError::Io {
        path: lock_path.display().to_string(),
        source,
    })?;
    lock.try_lock_exclusive()
        .map_err(|_| ConnectError::InUse(display.clone()))?;
    Ok((display, lock))
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
    // The writer's WAL writes are gathered into one `pwrite` per commit, which is only
    // safe when every commit syncs the WAL (see `walbuf`).
    let gather_wal = !config.sqlite_synchronous_normal;
    if gather_wal {
        walbuf::register().map_err(|rc| {
            ConnectError::Database(Box::new(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rc),
                Some("cannot register the WAL write buffer".into()),
            )))
        })?;
    }
    let open_rw = move |path: String, vfs: Option<&CStr>| {
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match vfs {
            Some(vfs) => rusqlite::Connection::open_with_flags_and_vfs(path, flags, vfs)?,
            None => rusqlite::Connection::open_with_flags(path, flags)?,
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;"
        ))?;
        Ok::<_, rusqlite::Error>(conn)
    };
    let path = display.clone();
    let checkpointer =
        Checkpointer::start(move || open_rw(path, None)).map_err(|source| ConnectError::Io {
            path: display.clone(),
            source,
        })?;
    let path = display.clone();
    let connect = move || {
        let conn = open_rw(path, gather_wal.then_some(walbuf::NAME))?;
        if gather_wal {
            // The buffer is only safe if every commit syncs the WAL (0 OFF, 1 NORMAL,
            // 2 FULL, 3 EXTRA).
            let level: i64 = conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
            if level < 2 {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
                    Some("the WAL write buffer needs synchronous = FULL".into()),
                ));
            }
        }
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
