//! The hand-off of requests from Rust's threads to Python's event loop, and of answers
//! back, with no Rust thread ever waiting for the GIL.
//!
//! Rust pushes a request onto a queue and, when the queue was empty, writes one byte to a
//! socket pair whose other end the Python loop watches (`loop.add_reader`); the loop then
//! takes every queued request at once (`HttpFront.take`), with the GIL it already holds.
//! Answers go back through `Request.respond`, which only sends on a channel. Why not a
//! GIL-taking callback per request: while the event loop is busy, a thread asking for the
//! GIL waits for the loop's switch interval (5 ms), which caps a loaded server.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyTuple};

use crate::auth::Verified;
use crate::codec::float_rows::FloatRows;
use crate::codec::v2_inputs::{Parameter, V2Inputs};
use tokio::sync::oneshot;

/// Python's answer to one request.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(Bytes, Bytes)>,
    pub body: Bytes,
}

/// A body decoded on the front's threads, for the handler of its route to use.
#[derive(Default)]
pub struct Decoded {
    pub float_rows: Option<FloatRows>,
    pub v2_inputs: Option<V2Inputs>,
}

/// One request as Python's handlers see it (`ferry.dataplane` makes an ASGI scope of it).
#[pyclass(frozen, module = "ferry._dataplane")]
pub struct Request {
    method: String,
    path: Bytes,
    query: Bytes,
    headers: Vec<(Bytes, Bytes)>,
    /// Taken by Python once (`take_body`), so a large body is not held twice.
    body: Mutex<Bytes>,
    client: (String, u16),
    /// Taken by Python once, as the body.
    decoded: Mutex<Decoded>,
    verified: Option<Verified>,
    reply: Mutex<Option<oneshot::Sender<Reply>>>,
}

/// `FloatRows` as Python takes it: (signature_name, rows, width, doubles as a bytearray).
pub type PyFloatRows<'py> = (Option<String>, usize, usize, Bound<'py, PyByteArray>);

pub fn float_rows_to_python<'py>(py: Python<'py>, rows: &FloatRows) -> PyResult<PyFloatRows<'py>> {
    Ok((
        rows.signature_name.clone(),
        rows.rows,
        rows.width,
        doubles_to_python(py, &rows.values)?,
    ))
}

/// `V2Inputs` as Python takes it: (id, parameters, [(name, datatype, shape, doubles as a
/// bytearray)]).
pub type PyV2Inputs<'py> = (
    Option<String>,
    Option<Bound<'py, PyDict>>,
    Vec<(String, &'static str, Vec<i64>, Bound<'py, PyByteArray>)>,
);

pub fn v2_inputs_to_python<'py>(py: Python<'py>, decoded: &V2Inputs) -> PyResult<PyV2Inputs<'py>> {
    let parameters = match &decoded.parameters {
        None => None,
        Some(given) => {
            let dict = PyDict::new(py);
            for (key, value) in given {
                match value {
                    Parameter::Bool(v) => dict.set_item(key, *v)?,
                    Parameter::Int(v) => dict.set_item(key, *v)?,
                    Parameter::Str(v) => dict.set_item(key, v)?,
                }
            }
            Some(dict)
        }
    };
    let inputs = decoded
        .inputs
        .iter()
        .map(|input| {
            Ok((
                input.name.clone(),
                input.datatype,
                input.shape.clone(),
                doubles_to_python(py, &input.values)?,
            ))
        })
        .collect::<PyResult<_>>()?;
    Ok((decoded.id.clone(), parameters, inputs))
}

/// Doubles as a bytearray of their little-endian bytes, written in place (one copy, made
/// with the GIL held on the event loop, so no second one through a Vec).
fn doubles_to_python<'py>(py: Python<'py>, values: &[f64]) -> PyResult<Bound<'py, PyByteArray>> {
    PyByteArray::new_with(py, values.len() * 8, |buffer| {
        for (slot, value) in buffer.chunks_exact_mut(8).zip(values) {
            slot.copy_from_slice(&value.to_le_bytes());
        }
        Ok(())
    })
}

impl Request {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        method: String,
        path: Bytes,
        query: Bytes,
        headers: Vec<(Bytes, Bytes)>,
        body: Bytes,
        client: (String, u16),
        decoded: Decoded,
        verified: Option<Verified>,
        reply: oneshot::Sender<Reply>,
    ) -> Self {
        Self {
            method,
            path,
            query,
            headers,
            body: Mutex::new(body),
            client,
            decoded: Mutex::new(decoded),
            verified,
            reply: Mutex::new(Some(reply)),
        }
    }
}

#[pymethods]
impl Request {
    /// The request method (`GET`, `POST`, ...).
    #[getter]
    fn method(&self) -> &str {
        &self.method
    }

    /// The raw (still percent-encoded) path, without the query.
    #[getter]
    fn path<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.path)
    }

    /// The raw query string, without the `?`.
    #[getter]
    fn query<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.query)
    }

    /// The headers as ASGI has them: a list of `(name, value)`, names in lower case.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let pairs = self
            .headers
            .iter()
            .map(|(name, value)| {
                PyTuple::new(py, [PyBytes::new(py, name), PyBytes::new(py, value)])
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, pairs)
    }

    /// The body as read: at most `--max_request_bytes` + 1 bytes (one more than the limit
    /// tells Python's handlers that it is over, and they refuse it in their protocol's form).
    /// Taken: the front's copy is dropped, and a second call gets an empty body.
    fn take_body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let body = std::mem::take(&mut *lock(&self.body));
        PyBytes::new(py, &body)
    }

    /// A `:predict` body of plain numeric rows, decoded on the front's threads
    /// (`codec::float_rows`); None for any other request or body. Taken, as the body.
    fn take_float_rows<'py>(&self, py: Python<'py>) -> PyResult<Option<PyFloatRows<'py>>> {
        let rows = lock(&self.decoded).float_rows.take();
        rows.map(|rows| float_rows_to_python(py, &rows)).transpose()
    }

    /// A V2 infer body of numeric inputs, decoded on the front's threads
    /// (`codec::v2_inputs`); None for any other request or body. Taken, as the body.
    fn take_v2_inputs<'py>(&self, py: Python<'py>) -> PyResult<Option<PyV2Inputs<'py>>> {
        let inputs = lock(&self.decoded).v2_inputs.take();
        inputs
            .map(|inputs| v2_inputs_to_python(py, &inputs))
            .transpose()
    }

    /// `(generation, key id, check seconds)` when the front verified the request's
    /// credentials against the keys of that generation (`auth`); None otherwise, and
    /// Python's check judges the request.
    #[getter]
    fn credentials(&self) -> Option<(u64, String, f64)> {
        self.verified
            .as_ref()
            .map(|v| (v.generation, v.key_id.clone(), v.seconds))
    }

    /// The peer's address and port.
    #[getter]
    fn client(&self) -> (String, u16) {
        self.client.clone()
    }

    /// Answers the request; False when it was answered already or its client is gone.
    fn respond(
        &self,
        status: u16,
        headers: Vec<(Bound<'_, PyBytes>, Bound<'_, PyBytes>)>,
        body: &Bound<'_, PyBytes>,
    ) -> bool {
        let Some(sender) = self.reply.lock().ok().and_then(|mut slot| slot.take()) else {
            return false;
        };
        let reply = Reply {
            status,
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (
                        Bytes::copy_from_slice(name.as_bytes()),
                        Bytes::copy_from_slice(value.as_bytes()),
                    )
                })
                .collect(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        };
        sender.send(reply).is_ok()
    }
}

/// The queue between the front's threads and Python's event loop.
pub struct Handoff {
    queue: Mutex<Vec<Request>>,
    wake_writer: UnixStream,
    wake_reader: UnixStream,
}

impl Handoff {
    pub fn new() -> std::io::Result<Self> {
        let (wake_writer, wake_reader) = UnixStream::pair()?;
        wake_writer.set_nonblocking(true)?;
        wake_reader.set_nonblocking(true)?;
        Ok(Self {
            queue: Mutex::new(Vec::new()),
            wake_writer,
            wake_reader,
        })
    }

    /// The descriptor Python's loop watches for readability.
    pub fn wake_fd(&self) -> i32 {
        self.wake_reader.as_raw_fd()
    }

    /// Queues a request; wakes the loop when the queue was empty (a full socket buffer
    /// means a wake-up is pending already).
    pub fn push(&self, request: Request) {
        let was_empty = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = queue.is_empty();
            queue.push(request);
            was_empty
        };
        if was_empty {
            let _ = (&self.wake_writer).write(&[1]);
        }
    }

    /// Wakes the loop with no request queued (it then looks at the front's counters:
    /// a refused connection is logged at once, as on the Python front).
    pub fn wake(&self) {
        let _ = (&self.wake_writer).write(&[1]);
    }

    /// Every queued request. The wake-up bytes are read first, so a request pushed after
    /// this call's swap always writes a new one.
    pub fn take(&self) -> Vec<Request> {
        let mut sink = [0u8; 256];
        loop {
            match (&self.wake_reader).read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *queue)
    }
}

/// A lock whose holder cannot have panicked midway (each holder only moves a value out).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &'static [u8]) -> (Request, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        let request = Request::new(
            "GET".into(),
            Bytes::from_static(path),
            Bytes::new(),
            vec![],
            Bytes::new(),
            ("127.0.0.1".into(), 1),
            Decoded::default(),
            None,
            tx,
        );
        (request, rx)
    }

    fn pending_wake_bytes(handoff: &Handoff) -> usize {
        let mut sink = [0u8; 16];
        (&handoff.wake_reader).read(&mut sink).unwrap_or(0)
    }

    #[test]
    fn only_the_first_push_into_an_empty_queue_wakes() {
        let handoff = Handoff::new().unwrap();
        handoff.push(request(b"/a").0);
        handoff.push(request(b"/b").0);
        assert_eq!(pending_wake_bytes(&handoff), 1);
        let taken = handoff.take();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].path.as_ref(), b"/a");
        handoff.push(request(b"/c").0);
        assert_eq!(pending_wake_bytes(&handoff), 1);
    }

    #[test]
    fn take_reads_the_wake_bytes_before_the_queue() {
        let handoff = Handoff::new().unwrap();
        handoff.push(request(b"/a").0);
        assert_eq!(handoff.take().len(), 1);
        assert_eq!(pending_wake_bytes(&handoff), 0);
        assert!(handoff.take().is_empty());
    }
}
