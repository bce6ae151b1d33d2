//! One HTTP/1.1 connection: hyper parses heads (keep-alive, pipelining, head limits), this
//! module reads bodies under their limits and hands each request to Python.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
};
use hyper::{Method, Request as HttpRequest, Response, StatusCode};
use tokio::sync::oneshot;

use crate::auth::Keys;
use crate::codec::float_rows::parse_float_rows;
use crate::codec::v2_inputs::parse_v2_inputs;
use crate::handoff::{Decoded, Handoff, Reply, Request};
use crate::limits::{Limits, Refusal};

/// What every connection of one front shares.
pub struct Shared {
    pub limits: Limits,
    pub handoff: Arc<Handoff>,
    /// Requests handed to Python and not answered yet.
    pub in_flight: AtomicUsize,
    /// `--auth`'s keys, once Python has published them.
    pub keys: Keys,
    /// Connections refused over `--max_connections` since start (Python logs them).
    pub refused_connections: AtomicUsize,
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A body as read: all of it, or the first `cap` bytes and the rest still to come.
struct ReadBody {
    bytes: Bytes,
    over_cap: bool,
    /// The unread rest of a body over the cap, drained after the answer (`linger`).
    rest: Option<Incoming>,
}

/// Reads at most `cap` bytes of the body (the rest is never buffered).
async fn read_capped(mut body: Incoming, cap: usize) -> Result<ReadBody, hyper::Error> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            let room = cap - buffer.len();
            if data.len() > room {
                buffer.extend_from_slice(&data[..room]);
                return Ok(ReadBody {
                    bytes: buffer.freeze(),
                    over_cap: true,
                    rest: Some(body),
                });
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(ReadBody {
        bytes: buffer.freeze(),
        over_cap: false,
        rest: None,
    })
}

/// Reads and drops the rest of a refused body for a bounded time and byte count, as the
/// Python front lingers: a client still sending then reads the answer instead of a reset
/// from its unread bytes. The connection closes once this ends (its answer said so).
async fn linger(mut rest: Incoming, seconds: std::time::Duration, most: usize) {
    let mut drained = 0;
    let _ = tokio::time::timeout(seconds, async {
        while drained < most {
            match rest.frame().await {
                Some(Ok(frame)) => drained += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    })
    .await;
}

/// The routes whose handlers read a body of plain numeric rows (`{"instances": [[...]]}`)
/// from the rows decoded here: TF Serving's `:predict`, and SageMaker's `/invocations`
/// and runtime API (`/endpoints/{name}/invocations`), whose JSON payloads of that shape
/// are TF Serving bodies. The handler alone decides whether it uses them (a CSV payload
/// never does), so a route listed here needlessly costs a parse, never an answer.
fn takes_float_rows(path: &[u8]) -> bool {
    path.ends_with(b":predict")
        || path == b"/invocations"
        || (path.starts_with(b"/endpoints/") && path.ends_with(b"/invocations"))
}

/// V2 infer routes (`/v2/models/{name}[/versions/{v}]/infer`), whose handler reads a
/// JSON body of numeric inputs from the inputs decoded here (`codec::v2_inputs`).
fn takes_v2_inputs(path: &[u8]) -> bool {
    path.starts_with(b"/v2/models/") && path.ends_with(b"/infer")
}

/// Triton's binary extension: the JSON header is only the body's first bytes.
const BINARY_HEADER_LENGTH: &str = "inference-header-content-length";

fn declared_length(request: &HttpRequest<Incoming>) -> Option<u64> {
    request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse().ok())
}

pub fn refusal(refusal: &Refusal) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(refusal.body.clone()));
    *response.status_mut() =
        StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request Python never answered (its handler task died): no text of Rust's own.
fn unanswered() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn build_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in reply.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_maybe_shared(value),
        ) else {
            continue;
        };
        if name == CONTENT_LENGTH {
            continue; // hyper frames the body it is given
        }
        headers.append(name, value);
    }
    response
}

/// Hands one request to Python and waits for its answer.
pub async fn handle(
    request: HttpRequest<Incoming>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _counted = InFlight::enter(&shared.in_flight);
    let target = request
        .uri()
        .path_and_query()
        .map_or(1, |pq| pq.as_str().len());
    let sizes = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().len(), value.len()));
    if let Some(over) = shared.limits.head_refusal(target, sizes) {
        return Ok(refusal(over));
    }
    let limit = shared.limits.max_request_bytes;
    // A declared length over the limit is refused by Python from the header alone; the
    // body is never read, and the connection closes after the answer.
    let declared_over = declared_length(&request).is_some_and(|n| n > limit as u64);
    let (parts, body) = request.into_parts();
    let mut read = if declared_over {
        ReadBody {
            bytes: Bytes::new(),
            over_cap: true,
            rest: Some(body),
        }
    } else {
        match tokio::time::timeout(
            shared.limits.body_timeout,
            read_capped(body, limit.saturating_add(1)),
        )
        .await
        {
            Err(_) => return Ok(refusal(&shared.limits.body_timeout_refusal)),
            Ok(Err(_)) => return Ok(unanswered()), // the client broke off mid-body
            Ok(Ok(read)) => read,
        }
    };
    let verified = if read.over_cap {
        None // refused by Python for its size, credentials or not
    } else {
        shared.keys.verify(
            parts.method.as_str(),
            parts.uri.path().as_bytes(),
            parts.uri.query().unwrap_or("").as_bytes(),
            &parts.headers,
            &read.bytes,
        )
    };
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                Bytes::copy_from_slice(name.as_str().as_bytes()),
                Bytes::copy_from_slice(value.as_bytes()),
            )
        })
        .collect();
    let (path, query) = match parts.uri.path_and_query() {
        Some(pq) => (
            Bytes::copy_from_slice(pq.path().as_bytes()),
            Bytes::copy_from_slice(pq.query().unwrap_or("").as_bytes()),
        ),
        None => (Bytes::from_static(b"/"), Bytes::new()),
    };
    let plain_post = parts.method == Method::POST
        && !parts.headers.contains_key(CONTENT_ENCODING)
        && !read.over_cap;
    let float_rows = (plain_post && takes_float_rows(&path))
        .then(|| parse_float_rows(&read.bytes))
        .flatten();
    let v2_inputs =
        (plain_post && takes_v2_inputs(&path) && !parts.headers.contains_key(BINARY_HEADER_LENGTH))
            .then(|| parse_v2_inputs(&read.bytes))
            .flatten();
    let (sender, receiver) = oneshot::channel();
    shared.handoff.push(Request::new(
        parts.method.as_str().to_owned(),
        path,
        query,
        headers,
        read.bytes,
        (peer.ip().to_string(), peer.port()),
        Decoded {
            float_rows,
            v2_inputs,
        },
        verified,
        sender,
    ));
    let mut response = match receiver.await {
        Ok(reply) => build_response(reply),
        Err(_) => unanswered(),
    };
    if read.over_cap {
        // The rest of that body is still on its way: the connection cannot carry more.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        if let Some(rest) = read.rest.take() {
            let limits = &shared.limits;
            tokio::spawn(linger(
                rest,
                limits.refusal_linger,
                limits.refusal_linger_bytes,
            ));
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::{takes_float_rows, takes_v2_inputs};

    #[test]
    fn rows_are_decoded_for_the_routes_that_read_them() {
        assert!(takes_float_rows(b"/v1/models/m:predict"));
        assert!(takes_float_rows(b"/v1/models/m/versions/2:predict"));
        assert!(takes_float_rows(b"/invocations"));
        assert!(takes_float_rows(b"/endpoints/e/invocations"));
        assert!(!takes_float_rows(b"/invocations/x"));
        assert!(!takes_float_rows(b"/v1/models/m:classify"));
        assert!(!takes_float_rows(b"/v2/models/m/infer"));
        assert!(takes_v2_inputs(b"/v2/models/m/infer"));
        assert!(takes_v2_inputs(b"/v2/models/m/versions/3/infer"));
        assert!(!takes_v2_inputs(b"/v2/repository/models/m/load"));
    }
}
