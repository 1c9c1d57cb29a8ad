//! The database URL, parsed once: it decides the backend, and everything that differs by
//! backend (how to open it, the pool's default size) follows from its variant.

use std::{fmt, path::PathBuf, str::FromStr};

use sea_orm::sqlx::{postgres::PgConnectOptions, sqlite::SqliteConnectOptions};

/// Where the data lives. Parsed with sqlx's own option parsers; shown without a password.
#[derive(Clone)]
pub enum DatabaseUrl {
    /// An SQLite file: the embedded default.
    Sqlite(SqliteUrl),
    /// A PostgreSQL database, shared by any number of replicas.
    Postgres(PgUrl),
}

/// An SQLite database file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteUrl {
    path: PathBuf,
}

/// A PostgreSQL connection URL, checked by sqlx's parser.
#[derive(Clone)]
pub struct PgUrl {
    url: String,
    /// Boxed: sqlx's options are ten times the size of an SQLite path.
    options: Box<PgConnectOptions>,
}

/// Why a database URL was refused. No message repeats the URL: it may carry a password.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// The URL names a backend this service does not have.
    #[error(
        "unsupported database url scheme {scheme:?}: expected sqlite://PATH?mode=rwc \
         or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    UnsupportedScheme {
        /// What stood before the first `:`.
        scheme: String,
    },
    /// An SQLite URL without a file: the writer and the readers must share one file.
    #[error(
        "the SQLite database must be a file, e.g. sqlite://crm.db?mode=rwc \
         (in-memory databases cannot be served)"
    )]
    SqliteWithoutFile,
    /// sqlx's parser refused the rest of the URL.
    #[error("malformed database url: {0}")]
    Malformed(#[source] sea_orm::sqlx::Error),
}

/// The embedded default database.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://crm.db?mode=rwc";

impl FromStr for DatabaseUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => {
                let options = SqliteConnectOptions::from_str(url).map_err(UrlError::Malformed)?;
                // sqlx names an in-memory database `file:sqlx-in-memory-…`.
                let path = options.get_filename();
                let text = path.to_string_lossy();
                if text.is_empty() || text.starts_with("file:") {
                    return Err(UrlError::SqliteWithoutFile);
                }
                Ok(Self::Sqlite(SqliteUrl {
                    path: path.to_path_buf(),
                }))
            }
            "postgres" | "postgresql" => Ok(Self::Postgres(PgUrl {
                options: Box::new(PgConnectOptions::from_str(url).map_err(UrlError::Malformed)?),
                url: url.to_owned(),
            })),
            _ => Err(UrlError::UnsupportedScheme {
                scheme: scheme.to_owned(),
            }),
        }
    }
}

impl DatabaseUrl {
    /// The read pool's size when the configuration gives none. An SQLite connection runs
    /// its queries on a thread of its own in this process, so more of them than the cores
    /// can run at once only add threads and memory (8 on 2 cores: 64.8–66.8 MiB peak RSS in
    /// the realistic bench scenario against 62.1–62.6 at 4, for the same throughput;
    /// docs/benchmarks.md). A PostgreSQL connection waits on the network and the server,
    /// so that backend keeps 8.
    #[must_use]
    pub fn default_max_connections(&self) -> u32 {
        match self {
            Self::Sqlite(_) => 4,
            Self::Postgres(_) => 8,
        }
    }
}

/// [`DEFAULT_DATABASE_URL`].
impl Default for DatabaseUrl {
    fn default() -> Self {
        DEFAULT_DATABASE_URL
            .parse()
            .expect("the default database url parses")
    }
}

impl SqliteUrl {
    /// The database file.
    #[must_use]
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The URL SeaORM opens the file with, in `mode` (`rwc` or `ro`).
    pub(crate) fn with_mode(&self, mode: &str) -> String {
        format!("sqlite://{}?mode={mode}", self.path.display())
    }
}

impl PgUrl {
    /// The URL as given, password included, for the driver only.
    pub(crate) fn as_secret_str(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(sqlite) => write!(f, "sqlite://{}", sqlite.path.display()),
            Self::Postgres(pg) => {
                let o = &pg.options;
                write!(
                    f,
                    "postgres://{}@{}:{}",
                    o.get_username(),
                    o.get_host(),
                    o.get_port()
                )?;
                match o.get_database() {
                    Some(database) => write!(f, "/{database}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// As [`fmt::Display`]: never the password.
impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<DatabaseUrl, UrlError> {
        url.parse()
    }

    #[test]
    fn sqlite_files_and_postgres_urls_are_accepted() {
        for (url, shown) in [
            ("sqlite://crm.db?mode=rwc", "sqlite://crm.db"),
            ("sqlite:///data/crm.db?mode=rwc", "sqlite:///data/crm.db"),
            ("sqlite:crm.db", "sqlite://crm.db"),
            (
                "postgres://crm:secret@db:5432/crm",
                "postgres://crm@db:5432/crm",
            ),
            (
                "postgresql://u@localhost/crm",
                "postgres://u@localhost:5432/crm",
            ),
        ] {
            let parsed = parse(url).unwrap_or_else(|err| panic!("{url}: {err}"));
            assert_eq!(parsed.to_string(), shown);
            assert!(!format!("{parsed:?}").contains("secret"));
        }
    }

    #[test]
    fn another_scheme_is_refused_without_echoing_the_url() {
        let err = parse("mysql://root:hunter2@db/crm").expect_err("mysql is not supported");
        assert!(
            matches!(&err, UrlError::UnsupportedScheme { scheme } if scheme == "mysql"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            !message.contains("hunter2") && !message.contains('\n'),
            "{message}"
        );
    }

    #[test]
    fn in_memory_and_empty_sqlite_urls_are_refused() {
        for url in ["sqlite::memory:", "sqlite://", "sqlite://?mode=rwc"] {
            assert!(
                matches!(parse(url), Err(UrlError::SqliteWithoutFile)),
                "{url}"
            );
        }
    }

    #[test]
    fn the_pool_defaults_to_the_backend_s_size() {
        let pool = |url: &str| parse(url).expect("url").default_max_connections();
        assert_eq!(pool("sqlite://crm.db?mode=rwc"), 4);
        assert_eq!(pool("postgres://db/crm"), 8);
        assert_eq!(pool("postgresql://db/crm"), 8);
    }
}
