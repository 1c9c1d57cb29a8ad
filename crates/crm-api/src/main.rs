//! The mini-crm server: reads its configuration, opens the store, serves HTTP until
//! SIGINT or SIGTERM, then lets the store commit what is queued.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;
use crm_api::Config;
use poem::{
    Server,
    listener::{Acceptor as _, Listener as _, TcpListener},
};
use tracing_subscriber::EnvFilter;

/// How long open connections may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let store = crm_store::connect(&config.store_config())
        .await
        // Not the URL itself: it may carry a password.
        .context("cannot open the database")?;
    let store = Arc::new(store);

    let acceptor = TcpListener::bind(config.bind)
        .into_acceptor()
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .unwrap_or(config.bind);
    tracing::info!("listening on http://{addr}, docs at http://{addr}/docs");

    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            crm_api::app(Arc::clone(&store)),
            shutdown_signal(),
            Some(SHUTDOWN_GRACE),
        )
        .await
        .context("server failed")?;
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
