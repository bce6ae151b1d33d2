//! `--http_keep_alive_timeout_seconds` on the Rust front: a kept-alive connection that
//! has been answered and then sends nothing for that long is closed quietly, as the
//! Python front closes it. hyper has no such timer of its own (its head timer also runs
//! between requests, at `--http_header_timeout_seconds`), so the connection's socket is
//! wrapped: while no request of the connection is being handled and neither side has
//! moved a byte for the timeout, a read ends as if the client had closed, and hyper
//! closes the connection. Before the first answer the head deadline alone applies.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::activity::Activity;

/// A socket that reads as closed once its connection has been idle for `timeout`.
pub struct IdleIo<S> {
    inner: S,
    activity: Arc<Activity>,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleIo<S> {
    pub fn new(inner: S, activity: Arc<Activity>, timeout: Duration) -> Self {
        Self {
            inner,
            activity,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn moved(&mut self) {
        let next = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.activity.idle() {
                    // A request is being handled (or none answered yet): hyper writes
                    // its answer next, which moves the deadline anyway.
                    self.moved();
                    return Poll::Pending;
                }
                match self.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Ok(())), // reads as closed: hyper closes
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = written {
            if n > 0 {
                self.moved();
            }
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn an_answered_connection_reads_as_closed_after_the_timeout() {
        let (client, server) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::default());
        let mut io = IdleIo::new(server, activity.clone(), Duration::from_secs(5));
        drop(activity.enter()); // one request handled and answered
        let started = Instant::now();
        let mut byte = [0u8; 1];
        assert_eq!(io.read(&mut byte).await.unwrap(), 0);
        assert!(started.elapsed() >= Duration::from_secs(5));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn before_the_first_answer_or_while_handling_nothing_times_out() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::default());
        let mut io = IdleIo::new(server, activity.clone(), Duration::from_secs(5));
        let reader = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            io.read(&mut byte).await.map(|n| (n, byte[0]))
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), (1, b'x'));
    }
}
