//! What each connection's socket and bodies are wrapped in to keep the deadlines of the
//! server's module doc: [`Deadlines`] around the socket, [`TimedBody`] around a request
//! body, [`Answer`] around a response body.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::task::AtomicWaker;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

use super::Limits;

/// Requests a connection has started and answers it has finished; both change on the
/// connection's own task, so the pair read there is consistent.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) requests: AtomicU64,
    answers: AtomicU64,
    /// The last read that waited: hyper may have asked for the next request before the
    /// answer was done, and nothing else would make it read again to start the idle
    /// deadline.
    reader: AtomicWaker,
}

impl Progress {
    fn now(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Acquire),
            self.answers.load(Ordering::Acquire),
        )
    }
}

/// What a connection is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The first byte of the next request: the idle timeout.
    Idle,
    /// The rest of a request head: the header timeout.
    Head,
    /// A request is being served: no deadline here.
    Busy,
}

/// A socket whose reads fail once the connection has waited too long for a request head
/// (see the module's doc). Writes pass through.
pub(super) struct Deadlines<S> {
    inner: S,
    progress: Arc<Progress>,
    seen: (u64, u64),
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
    limits: Limits,
}

impl<S> Deadlines<S> {
    /// A new connection: its first head is due within the header timeout.
    pub(super) fn new(inner: S, progress: Arc<Progress>, limits: Limits) -> Self {
        Self {
            inner,
            progress,
            seen: (0, 0),
            phase: Phase::Head,
            deadline: Box::pin(tokio::time::sleep(limits.header_timeout)),
            limits,
        }
    }

    /// Moves to `Busy` when a request has started since the last read, to `Idle` (with a
    /// fresh deadline) when its answer has been sent.
    fn follow(&mut self) {
        let now = self.progress.now();
        if now != self.seen {
            self.seen = now;
            if now.0 > now.1 {
                self.phase = Phase::Busy;
            } else {
                self.start(Phase::Idle, self.limits.idle_timeout);
            }
        }
    }

    fn start(&mut self, phase: Phase, timeout: Duration) {
        self.phase = phase;
        self.deadline.as_mut().reset(Instant::now() + timeout);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadlines<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.follow();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    this.start(Phase::Head, this.limits.header_timeout);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                this.progress.reader.register(cx.waker());
                if this.phase != Phase::Busy && this.deadline.as_mut().poll(cx).is_ready() {
                    let what = match this.phase {
                        Phase::Idle => "idle timeout",
                        _ => "header timeout",
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlines<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A request body that fails with `TimedOut` when it has not ended by its deadline.
pub(super) struct TimedBody<B> {
    inner: B,
    deadline: Instant,
    /// Made at the first wait, so a body that is already there costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> TimedBody<B> {
    pub(super) fn new(inner: B, deadline: Instant) -> Self {
        Self {
            inner,
            deadline,
            timer: None,
        }
    }
}

impl<B> HttpBody for TimedBody<B>
where
    B: HttpBody<Data = Bytes, Error = io::Error> + Unpin,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request body timeout",
                    ))))
                } else {
                    Poll::Pending
                }
            }
            ready => ready,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that tells the connection's [`Progress`] when it has been sent (or
/// dropped unsent): from then on the connection is idle.
pub(super) struct Answer {
    inner: BoxBody<Bytes, io::Error>,
    progress: Option<Arc<Progress>>,
}

impl Answer {
    pub(super) fn new(inner: BoxBody<Bytes, io::Error>, progress: Arc<Progress>) -> Self {
        Self {
            inner,
            progress: Some(progress),
        }
    }

    fn finish(&mut self) {
        if let Some(progress) = self.progress.take() {
            progress.answers.fetch_add(1, Ordering::Release);
            progress.reader.wake();
        }
    }
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.finish();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.finish();
    }
}
