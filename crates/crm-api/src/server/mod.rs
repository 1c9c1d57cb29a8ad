//! The HTTP server under the app: poem's endpoint served on hyper HTTP/1 connections with
//! the limits `poem::Server` cannot set, so slow and idle clients cannot hold it.
//!
//! poem 3.1's `Server` builds each hyper connection itself and gives hyper no timer, so
//! hyper's header timeout never runs; its one deadline (`idle_timeout`) restarts on every
//! byte, so a client trickling its headers is never idle; it caps nothing; and its accept
//! loop retries a failed `accept` at once, spinning a core while the process is out of file
//! descriptors. This module keeps poem for everything above the connection (the endpoint,
//! its `Request` and `Response`) and replaces the loop under it:
//!
//! - **Connection cap.** A semaphore holds one permit per allowed connection and the loop
//!   takes one *before* it calls `accept`: at the cap it waits, and new connections queue in
//!   the kernel's listen backlog (or are refused once that is full) without costing CPU. A
//!   permit goes back when its connection ends. [`connection_cap`] keeps the cap below the
//!   process's file-descriptor limit.
//! - **No busy loop.** An `accept` error that is not one connection's own (EMFILE, ENFILE,
//!   ENOBUFS…) waits [`ACCEPT_BACKOFF`] before the next try.
//! - **Header and idle timeouts**, kept by [`Deadlines`] around each socket. It learns from
//!   the service when a request head was parsed and from the response body when the answer
//!   is out: a new connection must deliver its first request head within the header
//!   timeout; a kept-alive one may wait the idle timeout for the next request's first byte,
//!   and then has the header timeout for the rest of the head; while a request is served
//!   neither runs. A missed deadline fails the read, and hyper closes the connection without
//!   an answer. (hyper's own header timeout, given a timer, starts when hyper begins waiting
//!   for a head, so it would also end every idle keep-alive connection at the header
//!   timeout.)
//! - **Body timeout.** A request body must arrive within the body timeout of its head
//!   ([`TimedBody`]); past it, reading the body fails (the app answers 400) and hyper closes
//!   the connection, whose body was not read to the end.
//! - **Header section** of at most [`MAX_HEADER_BYTES`]: hyper answers 431 beyond it.
//! - **HTTP/1 only**: no cleartext HTTP/2 (h2c), whose streams none of the above bounds.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use http_body_util::combinators::BoxBody;
use hyper::{
    body::{Body as HttpBody, Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use poem::{
    Endpoint,
    http::uri::Scheme,
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    time::Instant,
};

mod guards;

use guards::{Answer, Deadlines, Progress, TimedBody};

/// The largest request header section (request line and header fields) hyper reads;
/// a larger one is answered 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How long the accept loop waits after an `accept` error that is not a connection's own,
/// such as running out of file descriptors: long enough to cost no CPU, short enough that
/// the backlog is served soon after descriptors are free again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long connections still open after the shutdown grace get to close once told to.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What slow and idle clients are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From a connection's start, or a kept-alive connection's first byte of a request, to
    /// the end of that request's head.
    pub header_timeout: Duration,
    /// From the end of a request's head to the end of its body.
    pub body_timeout: Duration,
    /// A kept-alive connection's wait for the first byte of its next request.
    pub idle_timeout: Duration,
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: u32,
}

impl Limits {
    /// The defaults of the `CRM_HTTP_*` settings (docs/configuration.md).
    pub const DEFAULT: Self = Self {
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        max_connections: 10_000,
    };
}

/// The process's soft limit on open file descriptors (`ulimit -n`), read from
/// `/proc/self/limits`; `None` when it is unlimited or cannot be read (not Linux).
#[must_use]
pub fn fd_limit() -> Option<u64> {
    parse_fd_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The connection cap: `configured`, lowered to the file-descriptor limit minus `reserve`
/// (the descriptors everything but client connections needs). Zero when the limit leaves
/// no room for connections at all.
#[must_use]
pub fn connection_cap(configured: u32, fd_limit: Option<u64>, reserve: u64) -> u32 {
    match fd_limit {
        Some(limit) => {
            let room = u32::try_from(limit.saturating_sub(reserve)).unwrap_or(u32::MAX);
            configured.min(room)
        }
        None => configured,
    }
}

/// Serves `endpoint` on `listener` within `limits` until `signal` resolves; then stops
/// accepting, lets open connections finish their requests for up to `grace` and closes
/// the rest.
///
/// # Errors
/// When the listener's address cannot be read.
pub async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    limits: Limits,
    signal: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()>
where
    E: Endpoint + 'static,
{
    let local = listener.local_addr()?;
    let endpoint = Arc::new(endpoint);
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    let (stage, stages) = watch::channel(Stage::Serving);
    tokio::pin!(signal);
    let mut failing = false;
    loop {
        // The permit first: at the cap, nothing is accepted and nothing spins.
        let permit = tokio::select! {
            () = &mut signal => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                failing = false;
                let connection = Connection {
                    endpoint: Arc::clone(&endpoint),
                    local,
                    peer,
                    limits,
                    stages: stages.clone(),
                    _permit: permit,
                };
                tokio::spawn(connection.serve(stream));
            }
            // That connection is gone already; the next one may be fine.
            Err(err) if is_connection_error(&err) => {}
            Err(err) => {
                drop(permit);
                if !failing {
                    tracing::warn!(
                        error = %err,
                        "cannot accept connections; retrying every {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    );
                    failing = true;
                }
                tokio::select! {
                    () = &mut signal => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    // New connections are refused from here on.
    drop(listener);
    stage.send_replace(Stage::Draining);
    let all = limits.max_connections;
    if tokio::time::timeout(grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("closing the connections still open after {grace:?}");
        stage.send_replace(Stage::Closing);
        let _ = tokio::time::timeout(CLOSE_GRACE, permits.acquire_many(all)).await;
    }
    Ok(())
}

/// Where the server is in its life; connections follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Serving,
    /// Finish the request in hand, take no new one.
    Draining,
    /// Close now.
    Closing,
}

/// Resolves once the server has reached `stage` (or is gone).
async fn reached(stages: &mut watch::Receiver<Stage>, stage: Stage) {
    let _ = stages.wait_for(|now| *now >= stage).await;
}

/// Errors of one connection that `accept` reports (it was reset before being accepted):
/// the listener itself is fine.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// `Max open files  <soft>  <hard>  files` in `/proc/<pid>/limits`.
fn parse_fd_limit(limits: &str) -> Option<u64> {
    let rest = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// One accepted connection and what serving it needs.
struct Connection<E> {
    endpoint: Arc<E>,
    local: SocketAddr,
    peer: SocketAddr,
    limits: Limits,
    stages: watch::Receiver<Stage>,
    /// Its place under the cap, given back when it ends.
    _permit: OwnedSemaphorePermit,
}

impl<E: Endpoint + 'static> Connection<E> {
    async fn serve(self, stream: TcpStream) {
        let Self {
            endpoint,
            local,
            peer,
            limits,
            stages,
            _permit,
        } = self;
        let progress = Arc::new(Progress::default());
        let io = Deadlines::new(stream, Arc::clone(&progress), limits);
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            // Called as soon as hyper has parsed a head: the connection is busy.
            progress.requests.fetch_add(1, Ordering::Release);
            let has_body = !req.body().is_end_stream();
            let mut req = poem::Request::from((
                req,
                LocalAddr(local.into()),
                RemoteAddr(peer.into()),
                Scheme::HTTP,
            ));
            if has_body {
                let body: BoxBody<Bytes, io::Error> = req.take_body().into();
                let deadline = Instant::now() + limits.body_timeout;
                req.set_body(BoxBody::new(TimedBody::new(body, deadline)));
            }
            let endpoint = Arc::clone(&endpoint);
            let progress = Arc::clone(&progress);
            async move {
                let resp = endpoint.get_response(req).await;
                let resp: hyper::Response<BoxBody<Bytes, io::Error>> = resp.into();
                Ok::<_, Infallible>(resp.map(|body| Answer::new(body, progress)))
            }
        });
        let conn = http1::Builder::new()
            // `Deadlines` keeps it instead (see the module's doc).
            .header_read_timeout(None)
            .max_header_size(MAX_HEADER_BYTES)
            .serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut draining = stages.clone();
        let mut closing = stages;
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = reached(&mut draining, Stage::Draining) => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    result = conn.as_mut() => result,
                    () = reached(&mut closing, Stage::Closing) => Ok(()),
                }
            }
        };
        if let Err(err) = result {
            tracing::debug!(peer = %peer, error = %err, "connection ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_descriptor_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63704                63704                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_fd_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_fd_limit(unlimited), None);
        assert_eq!(parse_fd_limit(""), None);
    }

    #[test]
    fn the_cap_never_exceeds_the_descriptors_left_after_the_reserve() {
        assert_eq!(connection_cap(10_000, Some(1024), 64), 960);
        assert_eq!(connection_cap(100, Some(1024), 64), 100);
        assert_eq!(connection_cap(10_000, None, 64), 10_000);
        assert_eq!(connection_cap(10_000, Some(40), 64), 0);
    }
}
