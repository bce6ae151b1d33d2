//! The request head limits on the Rust front, answered as the Python front answers them.
//!
//! hyper's own head limits answer with bodies of hyper's (or close the connection), and
//! its head timer closes without an answer; ferry's refusals are Python's bytes
//! (`ferry.protocols.http_limits`). So the socket is wrapped: a head is read here first,
//! judged as it arrives (`head_scan`, under its deadline `--http_header_timeout_seconds`),
//! and only handed to hyper once it is complete and within the limits. A refused head is
//! never handed to hyper: hyper gets a stand-in request instead, which the service answers
//! with the refusal (`Activity::take_refusal`), so the refusal follows any answer still
//! being written, in order. Then, as on the Python front, the connection sends its end
//! and lingers (reads and drops what the client still sends, bounded in time and bytes)
//! before it closes, so the client reads the answer instead of a reset.
//!
//! Watched are the heads that start a connection or arrive once every earlier request of
//! it is answered. A head pipelined behind a request still being handled reaches hyper
//! unwatched: hyper's limits (twice ferry's) bound it, the service judges it
//! (`Limits::head_refusal`), and hyper's head timer ends it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

use crate::activity::Activity;
use crate::head_scan::{HeadScan, Verdict};
use crate::limits::{Limits, Linger, Refusal};

/// What hyper reads in place of a refused head; the service answers it with the refusal.
pub const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

/// Bytes read from the socket at a time while a head is watched.
const READ_CHUNK: usize = 8 * 1024;

enum State {
    /// Reading a head: nothing of it is hyper's yet.
    Head(Box<Head>),
    /// A complete head (and whatever came with it) on its way to hyper.
    Handing { bytes: Vec<u8>, at: usize },
    /// Reads go to hyper unwatched until every request that entered after `entered`
    /// is answered.
    Passing { entered: usize },
    /// The stand-in request on its way to hyper.
    Refused { at: usize },
    /// After the stand-in: hyper answers it and closes; reads wait.
    Held,
}

struct Head {
    seen: Vec<u8>,
    scan: HeadScan,
    /// Armed at the head's first byte (at connection start: already).
    deadline: Option<Pin<Box<Sleep>>>,
    /// `Activity::entered` when the head began.
    entered: usize,
}

enum Closing {
    /// Sending the connection's end (FIN, or TLS close_notify and FIN).
    Ending,
    Lingering {
        until: Pin<Box<Sleep>>,
        left: usize,
        _slot: OwnedSemaphorePermit,
    },
    Closed,
}

/// A socket whose request heads are judged before hyper reads them.
pub struct HeadWatch<S> {
    inner: S,
    activity: Arc<Activity>,
    limits: Arc<Limits>,
    linger: Linger,
    state: State,
    /// A head was refused: closing lingers.
    refused: bool,
    closing: Closing,
}

impl<S> HeadWatch<S> {
    /// A connection's socket, its first head's deadline running from now.
    pub fn new(inner: S, activity: Arc<Activity>, limits: Arc<Limits>, linger: Linger) -> Self {
        let deadline = Some(Box::pin(tokio::time::sleep(limits.header_timeout)));
        Self {
            inner,
            activity,
            limits,
            linger,
            state: State::Head(Box::new(Head {
                seen: Vec::new(),
                scan: HeadScan::default(),
                deadline,
                entered: 0,
            })),
            refused: false,
            closing: Closing::Ending,
        }
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.activity.set_reading_head(false);
        self.activity.refuse(refusal);
        self.refused = true;
        self.state = State::Refused { at: 0 };
    }
}

/// Copies what fits of `bytes[*at..]` into `buf`; true once all of it is copied.
fn hand(bytes: &[u8], at: &mut usize, buf: &mut ReadBuf<'_>) -> bool {
    let n = buf.remaining().min(bytes.len() - *at);
    buf.put_slice(&bytes[*at..*at + n]);
    *at += n;
    *at == bytes.len()
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadWatch<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Passing { entered } => {
                    if !this.activity.awaits_head(*entered) {
                        return Pin::new(&mut this.inner).poll_read(cx, buf);
                    }
                    // Every request so far is answered: the next bytes start a head, whose
                    // deadline runs from its first byte (the keep-alive timer until then).
                    this.state = State::Head(Box::new(Head {
                        seen: Vec::new(),
                        scan: HeadScan::default(),
                        deadline: None,
                        entered: this.activity.entered(),
                    }));
                }
                State::Head(head) => {
                    if this.activity.entered() != head.entered {
                        // hyper parsed a head it already had (pipelined): what was read
                        // here is the next request's, and hyper's to read in order.
                        let bytes = std::mem::take(&mut head.seen);
                        this.activity.set_reading_head(false);
                        this.state = State::Handing { bytes, at: 0 };
                        continue;
                    }
                    let mut chunk = [0u8; READ_CHUNK];
                    let mut read = ReadBuf::new(&mut chunk);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                        Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                        Poll::Ready(Ok(())) if read.filled().is_empty() => {
                            // The client closed: hyper gets what there is, then the end.
                            let bytes = std::mem::take(&mut head.seen);
                            this.activity.set_reading_head(false);
                            if bytes.is_empty() {
                                return Poll::Ready(Ok(()));
                            }
                            this.state = State::Handing { bytes, at: 0 };
                        }
                        Poll::Ready(Ok(())) => {
                            head.seen.extend_from_slice(read.filled());
                            if head.deadline.is_none() {
                                let timeout = this.limits.header_timeout;
                                head.deadline = Some(Box::pin(tokio::time::sleep(timeout)));
                                this.activity.set_reading_head(true);
                            }
                            match head.scan.feed(&head.seen, &this.limits) {
                                Verdict::Partial => {}
                                Verdict::Complete(_) => {
                                    let bytes = std::mem::take(&mut head.seen);
                                    this.activity.set_reading_head(false);
                                    this.state = State::Handing { bytes, at: 0 };
                                }
                                Verdict::Refused(refusal) => {
                                    let refusal = refusal.clone();
                                    this.refuse(refusal);
                                }
                            }
                        }
                        Poll::Pending => {
                            let late = head
                                .deadline
                                .as_mut()
                                .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                            if !late {
                                return Poll::Pending;
                            }
                            let refusal = this.limits.head_timeout_refusal.clone();
                            this.refuse(refusal);
                        }
                    }
                }
                State::Handing { bytes, at } => {
                    if hand(bytes, at, buf) {
                        this.state = State::Passing {
                            entered: this.activity.entered(),
                        };
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Refused { at } => {
                    if hand(STAND_IN, at, buf) {
                        this.state = State::Held;
                    }
                    return Poll::Ready(Ok(()));
                }
                // hyper is answering the stand-in; its answer wakes the connection.
                State::Held => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadWatch<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// After a refusal: the end is sent, then the connection lingers before it closes.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.refused {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        loop {
            match &mut this.closing {
                Closing::Ending => {
                    let ended = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
                    let slot = this.linger.slots.clone().try_acquire_owned();
                    this.closing = match (ended, slot) {
                        // a flood of refusals: no descriptors to spare for lingering
                        (Err(_), _) | (_, Err(_)) => Closing::Closed,
                        (Ok(()), Ok(slot)) => Closing::Lingering {
                            until: Box::pin(tokio::time::sleep(this.linger.seconds)),
                            left: this.linger.bytes,
                            _slot: slot,
                        },
                    };
                }
                Closing::Lingering { until, left, .. } => {
                    let mut sink = [0u8; READ_CHUNK];
                    let mut read = ReadBuf::new(&mut sink);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                        Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                            *left = left.saturating_sub(read.filled().len());
                            if *left == 0 {
                                this.closing = Closing::Closed;
                            }
                        }
                        Poll::Ready(_) => this.closing = Closing::Closed,
                        Poll::Pending => {
                            ready!(until.as_mut().poll(cx));
                            this.closing = Closing::Closed;
                        }
                    }
                }
                Closing::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}
