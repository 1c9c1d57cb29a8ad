//! The mini-crm server binary: reads its configuration (flags, environment, an optional
//! `.env` file), then serves HTTP until SIGINT or SIGTERM (`crm-api`, `crm-api serve`),
//! runs migrations alone (`crm-api migrate …`) or prints the OpenAPI document
//! (`crm-api openapi`).

mod cli;

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser as _, error::ErrorKind};
use crm_api::{Config, config::LogFormat, server};
use crm_store::MigrateAction;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};

// mimalloc instead of glibc's allocator: allocation was ~15 % of the server's
// instructions per registration (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long open connections may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The optional settings file, looked up in the current directory only.
const DOTENV: &str = ".env";

fn main() -> anyhow::Result<()> {
    // Before any thread exists: loading sets environment variables.
    let dotenv = load_dotenv(Path::new(DOTENV))?;
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => start(&cli.config, dotenv, Logs::Stdout)?.block_on(serve(&cli.config)),
        Command::Migrate { action } => {
            start(&cli.config, dotenv, Logs::Stderr)?.block_on(migrate(&cli.config, action.into()))
        }
        Command::Openapi => print_openapi(),
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy)]
enum Logs {
    /// While serving, as they always have.
    Stdout,
    /// For the one-shot commands, whose stdout is their result.
    Stderr,
}

/// Validates the settings (exiting with a usage error like clap's own), starts logging
/// and builds the async runtime.
fn start(
    config: &Config,
    dotenv: Option<PathBuf>,
    logs: Logs,
) -> anyhow::Result<tokio::runtime::Runtime> {
    if let Err(err) = config.validate() {
        Cli::command().error(ErrorKind::ValueValidation, err).exit();
    }
    init_tracing(config.log_format, logs);
    if let Some(path) = dotenv {
        tracing::info!("read settings from {}", path.display());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Reads `path` into the environment when it exists; variables already set win.
fn load_dotenv(path: &Path) -> anyhow::Result<Option<PathBuf>> {
    match dotenvy::from_path(path) {
        Ok(()) => Ok(Some(path.to_path_buf())),
        Err(err) if err.not_found() => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Logs with the `RUST_LOG` filter (default `info`), in the configured format.
fn init_tracing(format: LogFormat, logs: Logs) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (format, logs) {
        (LogFormat::Text, Logs::Stdout) => builder.init(),
        (LogFormat::Text, Logs::Stderr) => builder.with_writer(io::stderr).init(),
        (LogFormat::Json, Logs::Stdout) => builder.json().init(),
        (LogFormat::Json, Logs::Stderr) => builder.json().with_writer(io::stderr).init(),
    }
}

/// `crm-api openapi`: the document as served at `/openapi.json`.
fn print_openapi() -> anyhow::Result<()> {
    write_stdout(&format!("{}\n", crm_api::openapi_spec()))
}

/// `crm-api migrate …`: runs `action`, then prints every migration with its state.
async fn migrate(config: &Config, action: MigrateAction) -> anyhow::Result<()> {
    let states = crm_store::migrate(&config.store_config(), action)
        .await
        // Not the URL itself: it may carry a password.
        .context("migration failed")?;
    let listing: String = states
        .iter()
        .map(|state| {
            let label = if state.applied { "applied" } else { "pending" };
            format!("{label}  {}\n", state.name)
        })
        .collect();
    write_stdout(&listing)
}

/// Writes a command's result; a reader that went away early (`crm-api openapi | head`)
/// is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => {
            Err(err).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// `crm-api` / `crm-api serve`: opens the store, serves HTTP until a shutdown signal,
/// then lets the store commit what is queued.
async fn serve(config: &Config) -> anyhow::Result<()> {
    let store = crm_store::connect(&config.store_config())
        .await
        // Not the URL itself: it may carry a password.
        .context("cannot open the database")?;
    let store = Arc::new(store);

    let mut limits = config.http_limits();
    let fd_limit = server::fd_limit();
    limits.max_connections =
        server::connection_cap(limits.max_connections, fd_limit, config.fd_reserve());
    if limits.max_connections == 0 {
        anyhow::bail!(
            "the file-descriptor limit ({}) leaves no room for connections: the server keeps \
             {} for itself; raise `ulimit -n`",
            fd_limit.unwrap_or_default(),
            config.fd_reserve()
        );
    }
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let addr = listener.local_addr().unwrap_or(config.bind);
    let fd_limit = fd_limit.map_or_else(|| "none".to_owned(), |limit| limit.to_string());
    tracing::info!(
        "accepting at most {} open connections (CRM_HTTP_MAX_CONNECTIONS {}, \
         file-descriptor limit {fd_limit})",
        limits.max_connections,
        config.http_max_connections
    );
    tracing::info!("listening on http://{addr}, docs at http://{addr}/docs");
    if config.admin_token.is_none() {
        tracing::warn!(
            "no CRM_ADMIN_TOKEN: the API is open to anyone who can reach {addr}; \
             set one before exposing the service"
        );
    }
    // Expired idempotency keys are ignored anyway; this keeps their table small.
    let sweeper = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60 * 60));
            loop {
                every.tick().await;
                match store.expire_idempotency_keys().await {
                    Ok(n) if n > 0 => {
                        tracing::info!(expired = n, "forgot expired idempotency keys")
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "cannot expire idempotency keys"),
                }
            }
        })
    };

    // The queue drains itself after every write that frees capacity; this sweep catches
    // what another replica freed, and at start whatever waited before.
    let drainer = {
        let store = Arc::clone(&store);
        let every = Duration::from_secs(config.queue_sweep_seconds);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(every);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // Every sweep, and as soon as a paced operator's bucket refills while
                // contacts wait.
                tokio::select! {
                    _ = every.tick() => {}
                    () = store.paced_drain_due() => {}
                }
                match crm_core::Store::drain_queue(store.as_ref()).await {
                    Ok(n) if n > 0 => tracing::info!(assigned = n, "the sweep drained the queue"),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "cannot drain the queue"),
                }
            }
        })
    };

    // Old events go in the background, a batch at a time (each batch is one write).
    let pruner = {
        let store = Arc::clone(&store);
        let (keep_for, keep) = config.event_retention();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                loop {
                    let before = chrono::Utc::now() - keep_for;
                    match crm_core::Store::prune_events(store.as_ref(), before, keep, 10_000).await
                    {
                        Ok(0) => break,
                        Ok(n) => tracing::debug!(pruned = n, "pruned old events"),
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot prune events");
                            break;
                        }
                    }
                }
            }
        })
    };

    // Streams end when the server starts shutting down, so their connections can close.
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let events = crm_api::EventSettings {
        closing: Some(closing_rx),
        webhooks: config.webhooks(),
        ..crm_api::EventSettings::default()
    };
    let shutdown = async move {
        shutdown_signal().await;
        closing.send_replace(true);
    };
    server::serve(
        listener,
        crm_api::app_with_events(
            Arc::clone(&store),
            config.security(),
            config.queue(),
            events,
        ),
        limits,
        shutdown,
        SHUTDOWN_GRACE,
    )
    .await
    .context("server failed")?;
    sweeper.abort();
    drainer.abort();
    pruner.abort();
    store.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
