//! A minimal HTTP/1.1 client: one keep-alive connection carrying one request at a time,
//! which is exactly what a load-test user is. hyper's low-level connection API has no
//! pool to contend on and does the least work per request, so the generator takes as
//! little CPU as possible from the server it shares two cores with.
//!
//! The connection is polled by the task that sends the request, not by a task of its
//! own: then a request and its answer wake one task, never hand over between two (with
//! a spawned connection task every request crossed a channel twice, often between the
//! runtime's threads; docs/benchmarks.md has the cost).

use std::{net::SocketAddr, pin::Pin, time::Duration};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request,
    client::conn::http1::{self, SendRequest},
    header,
};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// The longest a request may take before it counts as an error: far beyond any
/// acceptable latency, short enough that a hung server cannot stall the harness.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// An answer: the status and the whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON, with the status in the error when it is not.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "answer {} is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

type Driver = Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>;

/// One connection to one server, opened on first use and again after a failure.
pub struct Connection {
    addr: SocketAddr,
    host: String,
    /// The request side and the connection future that does its I/O.
    open: Option<(SendRequest<Full<Bytes>>, Driver)>,
    /// How long a request may take: [`REQUEST_TIMEOUT`] unless set.
    timeout: Duration,
}

impl Connection {
    /// A connection to `addr`; nothing is opened yet.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            open: None,
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// The same, for requests that may take up to `timeout` (reports over a large window).
    pub fn with_timeout(addr: SocketAddr, timeout: Duration) -> Self {
        Self {
            timeout,
            ..Self::new(addr)
        }
    }

    /// Sends one request and reads the whole answer, within the timeout. On a
    /// transport error or a timeout the connection is dropped; the next request opens a
    /// new one.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer> {
        self.send_with(method, path, body, None).await
    }

    /// [`Connection::send`] with one extra header (e.g. `Idempotency-Key`).
    pub async fn send_with(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        extra: Option<(&'static str, &str)>,
    ) -> Result<Answer> {
        let timeout = self.timeout;
        let request = self.send_once(method, path, body, extra);
        let result = tokio::time::timeout(timeout, request)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {timeout:?}")));
        if result.is_err() {
            self.open = None;
        }
        result
    }

    /// Sends JSON (or nothing) and expects a 2xx JSON answer.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let bytes = body.map(|b| Bytes::from(b.to_string()));
        let answer = self
            .send(method.clone(), path, bytes)
            .await
            .with_context(|| format!("{method} {path}"))?;
        if !(200..300).contains(&answer.status) {
            bail!(
                "{method} {path} answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        answer.json()
    }

    async fn send_once(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        extra: Option<(&'static str, &str)>,
    ) -> Result<Answer> {
        let (sender, driver) = match &mut self.open {
            Some(open) => open,
            None => self.open.insert(connect(self.addr).await?),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        let exchange = async {
            sender.ready().await.context("connection closed")?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok(Answer { status, body })
        };
        // The exchange only progresses while the connection is polled beside it; the
        // connection future ends only when the connection does.
        tokio::select! {
            answer = exchange => answer,
            ended = driver.as_mut() => match ended {
                Ok(()) => bail!("the server closed the connection"),
                Err(err) => Err(err).context("connection failed"),
            },
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<(SendRequest<Full<Bytes>>, Driver)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    Ok((sender, Box::pin(connection)))
}
