//! A deadline on a connection's first bytes. hyper's header-read timeout only starts once a connection has
//! been handed to its HTTP/1 code, but hyper-util's connection builder (with upgrades, as the WebSocket needs)
//! first reads up to 24 bytes to tell HTTP/1 from HTTP/2, with no timer: a client that connects and says
//! nothing, or trickles the HTTP/2 preface, would hold its connection for ever. So each accepted stream (after
//! TLS, on the HTTPS listener) fails its reads with `TimedOut` if those 24 bytes have not arrived within the
//! header timeout; after them hyper's own timers take over.

use axum_server::accept::Accept;
use futures::future::BoxFuture;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// What hyper-util reads before it picks a protocol: the length of the HTTP/2 connection preface.
const VERSION_SNIFF_BYTES: usize = 24;

/// Wraps the streams `inner` accepts in `Deadline`.
#[derive(Clone)]
pub struct FirstBytes<A> {
    inner: A,
    timeout: Duration,
}

impl<A> FirstBytes<A> {
    pub fn new(inner: A, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

impl<A, I, S> Accept<I, S> for FirstBytes<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Deadline<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        let timeout = self.timeout;
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((Deadline::new(stream, timeout), service))
        })
    }
}

/// A stream whose reads fail once `timeout` has passed, until `VERSION_SNIFF_BYTES` have been read.
pub struct Deadline<S> {
    inner: S,
    /// None once enough has been read: the deadline no longer applies.
    sleep: Option<Pin<Box<Sleep>>>,
    remaining: usize,
}

impl<S> Deadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, sleep: Some(Box::pin(tokio::time::sleep(timeout))), remaining: VERSION_SNIFF_BYTES }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadline<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.sleep.is_some() {
                    this.remaining = this.remaining.saturating_sub(buf.filled().len() - before);
                    if this.remaining == 0 {
                        this.sleep = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request within the header timeout")))
                }
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadline<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_fail_at_the_deadline_until_enough_has_arrived_and_never_after() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut stream = Deadline::new(server, Duration::from_millis(100));
        let mut buf = [0u8; 64];
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(stream.read(&mut buf).await.unwrap(), 16);
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (mut client, server) = tokio::io::duplex(64);
        let mut stream = Deadline::new(server, Duration::from_millis(100));
        client.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        assert_eq!(stream.read(&mut buf).await.unwrap(), 32);
        // Past the first bytes, a quiet connection is hyper's business, not this stream's.
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            client.write_all(b"\r\n").await.unwrap();
            client
        });
        assert_eq!(stream.read(&mut buf).await.unwrap(), 2);
        drop(later.await.unwrap());
    }
}
