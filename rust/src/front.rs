//! `HttpFront`: the listening socket, the accept loop with its connection limit, and the
//! drain. Its threads are a tokio runtime of their own, so a busy Python loop never
//! delays accepting, parsing or writing.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::CONNECTION;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{watch, Semaphore};

use crate::activity::Activity;
use crate::auth::{KeyTable, Keys};
use crate::handoff::{Handoff, Request};
use crate::head_watch::HeadWatch;
use crate::http::{handle, refusal, Shared};
use crate::idle::IdleIo;
use crate::limits::{Limits, Linger, Refusal};
use crate::tls::{ClientCertificate, Tls, HANDSHAKE_RECORD};

/// An HTTP/1.1 front on one address; see the module docs of `ferry.dataplane`.
#[pyclass(frozen, module = "ferry._dataplane")]
pub struct HttpFront {
    runtime: Mutex<Option<Runtime>>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    drained: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    address: SocketAddr,
    tls_on: bool,
}

/// HTTPS settings as Python passes them: the PEM texts of the certificate chain, its key
/// and the client CAs, the client certificate mode, and the answer to plain HTTP.
type TlsArguments<'py> = (
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Option<Bound<'py, PyBytes>>,
    String,
    (u16, Bound<'py, PyBytes>),
);

fn tls_of(arguments: TlsArguments<'_>) -> PyResult<Tls> {
    let (cert, key, ca, mode, plain_http) = arguments;
    let mode = ClientCertificate::parse(&mode).map_err(PyValueError::new_err)?;
    Tls::new(
        cert.as_bytes(),
        key.as_bytes(),
        ca.as_ref().map(|ca| ca.as_bytes()),
        mode,
        &refusal_of(plain_http),
    )
    .map_err(PyValueError::new_err)
}

fn refusal_of(pair: (u16, Bound<'_, PyBytes>)) -> Refusal {
    Refusal {
        status: pair.0,
        body: Bytes::copy_from_slice(pair.1.as_bytes()),
    }
}

#[pymethods]
impl HttpFront {
    /// Binds `host:port` at once (so a port in use fails here, as an OSError) and starts
    /// serving on `threads` threads; requests queue for `take` until Python drains them.
    #[new]
    #[pyo3(signature = (
        host, port, *, threads, max_header_bytes, max_header_count, header_timeout_seconds,
        body_timeout_seconds, keep_alive_timeout_seconds, max_connections, max_request_bytes,
        too_many_connections, head_timeout, body_timeout, head_too_large, url_too_long, too_many_headers,
        refusal_linger_seconds, refusal_linger_bytes, max_lingering_refusals, tls = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        host: &str,
        port: u16,
        threads: usize,
        max_header_bytes: usize,
        max_header_count: usize,
        header_timeout_seconds: f64,
        body_timeout_seconds: f64,
        keep_alive_timeout_seconds: f64,
        max_connections: usize,
        max_request_bytes: usize,
        too_many_connections: (u16, Bound<'_, PyBytes>),
        head_timeout: (u16, Bound<'_, PyBytes>),
        body_timeout: (u16, Bound<'_, PyBytes>),
        head_too_large: (u16, Bound<'_, PyBytes>),
        url_too_long: (u16, Bound<'_, PyBytes>),
        too_many_headers: (u16, Bound<'_, PyBytes>),
        refusal_linger_seconds: f64,
        refusal_linger_bytes: usize,
        max_lingering_refusals: usize,
        tls: Option<TlsArguments<'_>>,
    ) -> PyResult<Self> {
        let seconds = |s: f64| Duration::from_secs_f64(s.max(0.001));
        let limits = Limits {
            max_header_bytes,
            max_header_count,
            header_timeout: seconds(header_timeout_seconds),
            body_timeout: seconds(body_timeout_seconds),
            keep_alive_timeout: seconds(keep_alive_timeout_seconds),
            max_connections,
            max_request_bytes,
            too_many_connections: refusal_of(too_many_connections),
            head_timeout_refusal: refusal_of(head_timeout),
            body_timeout_refusal: refusal_of(body_timeout),
            head_too_large: refusal_of(head_too_large),
            url_too_long: refusal_of(url_too_long),
            too_many_headers: refusal_of(too_many_headers),
            refusal_linger: seconds(refusal_linger_seconds),
            refusal_linger_bytes,
            max_lingering_refusals,
        };
        let tls = tls.map(tls_of).transpose()?.map(Arc::new);
        let listener = StdListener::bind((host, port))
            .map_err(|e| PyOSError::new_err((e.raw_os_error().unwrap_or(0), e.to_string())))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("ferry-http")
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let listener = {
            let _inside = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let handoff = Arc::new(Handoff::new()?);
        let shared = Arc::new(Shared {
            limits,
            handoff,
            in_flight: AtomicUsize::new(0),
            keys: Keys::default(),
            refused_connections: AtomicUsize::new(0),
        });
        let tls_on = tls.is_some();
        let (stop, stopped) = watch::channel(false);
        let drained = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        runtime.spawn(accept_loop(
            listener,
            shared.clone(),
            tls,
            stopped,
            drained.clone(),
            connections.clone(),
        ));
        Ok(Self {
            runtime: Mutex::new(Some(runtime)),
            shared,
            stop,
            drained,
            connections,
            address,
            tls_on,
        })
    }

    /// Whether the front serves HTTPS.
    #[getter]
    fn tls(&self) -> bool {
        self.tls_on
    }

    /// The port listened on (the one asked for, or the one the system chose for 0).
    #[getter]
    fn port(&self) -> u16 {
        self.address.port()
    }

    /// The descriptor that becomes readable when requests wait in `take`.
    #[getter]
    fn wake_fd(&self) -> i32 {
        self.shared.handoff.wake_fd()
    }

    /// Every request waiting for Python.
    fn take(&self, py: Python<'_>) -> PyResult<Vec<Py<Request>>> {
        self.shared
            .handoff
            .take()
            .into_iter()
            .map(|request| Py::new(py, request))
            .collect()
    }

    /// Publishes `--auth`'s keys (SigV4 secrets by access key id, token key ids by the
    /// token's SHA-256): from now on requests they sign validly reach Python marked
    /// (`Request.credentials`) with `generation`.
    fn set_keys(
        &self,
        generation: u64,
        secrets: HashMap<String, String>,
        token_ids: HashMap<String, String>,
        max_skew_seconds: f64,
    ) {
        self.shared.keys.publish(KeyTable::new(
            generation,
            secrets,
            token_ids,
            max_skew_seconds,
        ));
    }

    /// Requests handed to Python and not answered yet.
    #[getter]
    fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Connections refused over `--max_connections` since the front started.
    #[getter]
    fn refused_connections(&self) -> usize {
        self.shared.refused_connections.load(Ordering::Relaxed)
    }

    /// Open connections.
    #[getter]
    fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting; open connections finish the request they are on and close (idle
    /// keep-alive ones at once). `drained` turns true when the last one has closed.
    fn close(&self) {
        let _ = self.stop.send(true);
    }

    /// Whether `close` has run its course: no connection is left.
    #[getter]
    fn drained(&self) -> bool {
        self.drained.load(Ordering::Acquire)
    }

    /// Stops the front's threads (connections still open are dropped).
    fn shutdown(&self, py: Python<'_>) {
        let _ = self.stop.send(true);
        let runtime = self.runtime.lock().ok().and_then(|mut slot| slot.take());
        if let Some(runtime) = runtime {
            py.detach(|| runtime.shutdown_timeout(Duration::from_secs(1)));
        }
    }
}

/// A connection over `--max_connections`: Python's refusal, a bounded linger, close.
/// Bounded in time so a client that never reads cannot hold the descriptor.
async fn refuse(mut stream: TcpStream, response: Arc<Vec<u8>>, linger: Linger) {
    let slot = linger.slots.clone().try_acquire_owned().ok();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&response).await;
        let _ = stream.shutdown().await;
    })
    .await;
    if slot.is_none() {
        return; // too many lingering already: close at once
    }
    let mut sink = vec![0u8; 16 * 1024];
    let mut drained = 0;
    let _ = tokio::time::timeout(linger.seconds, async {
        while drained < linger.bytes {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

enum Handshake {
    Done(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    PlainHttp(TcpStream),
    Failed,
}

/// The TLS handshake of an accepted connection, within the head deadline (counted from
/// accept, as the Python front counts it); a first byte that starts no handshake is
/// plain HTTP, which gets Python's 400.
async fn tls_handshake(stream: TcpStream, tls: &Tls, deadline: tokio::time::Instant) -> Handshake {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => return Handshake::PlainHttp(stream),
        _ => return Handshake::Failed, // closed, reset or silent past the deadline
    }
    match tokio::time::timeout_at(deadline, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Handshake::Done(Box::new(stream)),
        _ => Handshake::Failed,
    }
}

/// A connection's socket as hyper reads it: heads judged first (`HeadWatch`), idle
/// kept-alive connections closed (`IdleIo`).
fn watched<S>(
    stream: S,
    activity: Arc<Activity>,
    limits: &Arc<Limits>,
    linger: &Linger,
    keep_alive: Duration,
) -> HeadWatch<IdleIo<S>> {
    let idle = IdleIo::new(stream, activity.clone(), keep_alive);
    HeadWatch::new(idle, activity, limits.clone(), linger.clone())
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<Tls>>,
    mut stopped: watch::Receiver<bool>,
    drained: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
) {
    let limits = shared.limits.clone();
    let permits =
        (limits.max_connections > 0).then(|| Arc::new(Semaphore::new(limits.max_connections)));
    let over_limit = Arc::new(limits.too_many_connections.raw_response());
    let linger = Linger {
        seconds: limits.refusal_linger,
        bytes: limits.refusal_linger_bytes,
        slots: Arc::new(Semaphore::new(limits.max_lingering_refusals)),
    };
    let watch_limits = Arc::new(limits.clone());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .pipeline_flush(true)
        .max_headers(limits.hyper_header_count())
        .max_header_size(limits.hyper_header_size())
        .max_buf_size(limits.read_buffer())
        .header_read_timeout(limits.hyper_header_timeout())
        .auto_date_header(false);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => break,
        };
        let Ok((stream, peer)) = accepted else {
            // Out of descriptors or a connection reset before accept: keep serving.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let permit = match &permits {
            Some(permits) => match permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    shared.refused_connections.fetch_add(1, Ordering::Relaxed);
                    shared.handoff.wake();
                    tokio::spawn(refuse(stream, over_limit.clone(), linger.clone()));
                    continue;
                }
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let activity = Arc::new(Activity::default());
        let keep_alive = limits.keep_alive_timeout;
        let handled = activity.clone();
        let service = service_fn(move |request| {
            let refused = handled.take_refusal();
            let handling = handled.enter();
            let shared = shared.clone();
            let activity = handled.clone();
            async move {
                let answer = match refused {
                    Some(refused) => refusal(&refused), // the stand-in of a refused head
                    None => match handle(request, shared, peer).await {
                        Ok(answer) => answer,
                        Err(never) => match never {},
                    },
                };
                if answer
                    .headers()
                    .get(CONNECTION)
                    .is_some_and(|v| v == "close")
                {
                    activity.close(); // what the client still sends is no head
                }
                drop(handling);
                Ok::<_, Infallible>(answer)
            }
        });
        let open = connections.clone();
        open.fetch_add(1, Ordering::Relaxed);
        let Some(tls) = tls.clone() else {
            let connection = graceful.watch(builder.serve_connection(
                TokioIo::new(watched(
                    stream,
                    activity,
                    &watch_limits,
                    &linger,
                    keep_alive,
                )),
                service,
            ));
            tokio::spawn(async move {
                let _ = connection.await;
                open.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
            continue;
        };
        let (builder, watcher, linger) = (builder.clone(), graceful.watcher(), linger.clone());
        let watch_limits = watch_limits.clone();
        let head_deadline = tokio::time::Instant::now() + limits.header_timeout;
        let mut stopping = stopped.clone();
        tokio::spawn(async move {
            // A drain does not wait for handshakes: the connection has no request yet.
            let handshake = tokio::select! {
                handshake = tls_handshake(stream, &tls, head_deadline) => handshake,
                _ = stopping.wait_for(|stop| *stop) => Handshake::Failed,
            };
            match handshake {
                Handshake::Done(stream) => {
                    let stream = watched(*stream, activity, &watch_limits, &linger, keep_alive);
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection).await;
                }
                Handshake::PlainHttp(stream) => {
                    refuse(stream, tls.plain_http.clone(), linger).await
                }
                Handshake::Failed => {}
            }
            open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    drained.store(true, Ordering::Release);
}
