//! The transport limits of the HTTP front and the refusals that answer them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

/// One refusal: HTTP status and the whole JSON body, both from Python's table
/// (`ferry.protocols.http_limits`), so the two fronts answer with the same bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub body: Bytes,
}

impl Refusal {
    /// The whole HTTP/1.1 response, written straight to a socket that hyper never saw
    /// (a connection over the limit).
    pub fn raw_response(&self) -> Vec<u8> {
        let reason = hyper::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            self.status,
            reason,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// What one HTTP front enforces (the same flags as Python's front: `--max_header_bytes`,
/// `--max_header_count`, `--http_header_timeout_seconds`, `--http_body_timeout_seconds`,
/// `--max_connections`, `--max_request_bytes`). An idle keep-alive connection closes at
/// the head deadline: hyper arms it as soon as it waits for the next head.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_header_count: usize,
    pub header_timeout: Duration,
    /// An answered connection idle this long is closed (`idle::IdleIo`).
    pub keep_alive_timeout: Duration,
    pub body_timeout: Duration,
    /// 0: no limit.
    pub max_connections: usize,
    pub max_request_bytes: usize,
    pub too_many_connections: Refusal,
    pub body_timeout_refusal: Refusal,
    pub head_timeout_refusal: Refusal,
    pub head_too_large: Refusal,
    pub url_too_long: Refusal,
    pub too_many_headers: Refusal,
    pub refusal_linger: Duration,
    pub refusal_linger_bytes: usize,
    pub max_lingering_refusals: usize,
}

/// hyper's smallest read buffer.
pub const MIN_READ_BUFFER: usize = 8192;

impl Limits {
    /// Limits with these head limits and one-second, one-byte others, each refusal an
    /// empty body with its status (too many headers: 432, to tell it from 431), for the
    /// unit tests and the fuzz targets of the head checks.
    #[doc(hidden)]
    pub fn of_heads(max_header_bytes: usize, max_header_count: usize) -> Self {
        let refusal = |status| Refusal {
            status,
            body: Bytes::new(),
        };
        let second = Duration::from_secs(1);
        Self {
            max_header_bytes,
            max_header_count,
            header_timeout: second,
            keep_alive_timeout: second,
            body_timeout: second,
            max_connections: 0,
            max_request_bytes: 10,
            too_many_connections: refusal(503),
            body_timeout_refusal: refusal(408),
            head_timeout_refusal: refusal(408),
            head_too_large: refusal(431),
            url_too_long: refusal(414),
            too_many_headers: refusal(432),
            refusal_linger: second,
            refusal_linger_bytes: 1,
            max_lingering_refusals: 1,
        }
    }

    /// hyper's own head limit: twice ferry's. A head between the two is read, measured
    /// as Python's front measures it (`head_refusal`) and refused with Python's answer;
    /// hyper closes a connection whose head is larger still without an answer, so the
    /// memory a head may take stays bounded either way.
    pub fn hyper_header_size(&self) -> usize {
        self.max_header_bytes.saturating_mul(2).max(1024)
    }

    /// hyper's own head timer, a backstop behind `head_watch` (which answers a late head
    /// with Python's 408 at `header_timeout` from its first byte): it runs from when hyper
    /// waits for a head, so it also spans the keep-alive wait before the head.
    pub fn hyper_header_timeout(&self) -> Duration {
        self.keep_alive_timeout + self.header_timeout + Duration::from_secs(1)
    }

    /// hyper's own header count limit (see `hyper_header_size`).
    pub fn hyper_header_count(&self) -> usize {
        self.max_header_count.saturating_mul(2).max(16)
    }

    /// The read buffer hyper may grow to: room for hyper's largest head and a pipelined
    /// next request's start.
    pub fn read_buffer(&self) -> usize {
        self.hyper_header_size().saturating_add(MIN_READ_BUFFER)
    }

    /// The refusal of a head over ferry's limits, counted as Python's front counts it:
    /// the request target, then each header as name, value and 4 bytes (": ", CRLF).
    pub fn head_refusal<I>(&self, target_bytes: usize, headers: I) -> Option<&Refusal>
    where
        I: IntoIterator<Item = (usize, usize)>,
    {
        let mut count = HeadCount::default();
        if let Some(refusal) = self.count_target(&mut count, target_bytes) {
            return Some(refusal);
        }
        headers
            .into_iter()
            .find_map(|(name, value)| self.count_header(&mut count, name, value))
    }

    /// Counts the request target (llhttp's URL) of a head (see `head_refusal`).
    pub fn count_target(&self, count: &mut HeadCount, target_bytes: usize) -> Option<&Refusal> {
        count.bytes += target_bytes;
        (count.bytes > self.max_header_bytes).then_some(&self.url_too_long)
    }

    /// Counts one header of a head (see `head_refusal`): the count first, then the bytes.
    pub fn count_header(
        &self,
        count: &mut HeadCount,
        name_bytes: usize,
        value_bytes: usize,
    ) -> Option<&Refusal> {
        count.headers += 1;
        count.bytes += name_bytes + value_bytes + 4;
        if count.headers > self.max_header_count {
            return Some(&self.too_many_headers);
        }
        (count.bytes > self.max_header_bytes).then_some(&self.head_too_large)
    }
}

/// A head as counted so far (`Limits::count_target`, `Limits::count_header`).
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadCount {
    bytes: usize,
    headers: usize,
}

/// How a refused connection lingers (`ferry.transport_limits`' REFUSAL_LINGER_SECONDS,
/// REFUSAL_LINGER_BYTES, MAX_LINGERING_REFUSALS): read and dropped for a while after the
/// refusal, so the client reads the answer instead of a reset from its unread request.
#[derive(Clone)]
pub struct Linger {
    pub seconds: Duration,
    pub bytes: usize,
    pub slots: Arc<Semaphore>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn raw_refusal_is_a_complete_response() {
        let refusal = Refusal {
            status: 503,
            body: Bytes::from_static(b"{\"error\": \"x\"}"),
        };
        let text = String::from_utf8(refusal.raw_response()).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("content-length: 14\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"error\": \"x\"}"));
    }

    pub(crate) fn limits(max_header_bytes: usize, max_header_count: usize) -> Limits {
        Limits::of_heads(max_header_bytes, max_header_count)
    }

    #[test]
    fn read_buffer_never_below_hypers_minimum() {
        assert!(limits(100, 10).read_buffer() >= MIN_READ_BUFFER);
    }

    #[test]
    fn heads_are_counted_as_pythons_front_counts_them() {
        let limits = limits(20, 2);
        assert!(limits.head_refusal(10, [(2, 4)]).is_none()); // 10 + 2 + 4 + 4 = 20
        assert_eq!(limits.head_refusal(10, [(2, 5)]).unwrap().status, 431);
        assert_eq!(limits.head_refusal(21, []).unwrap().status, 414);
        assert_eq!(
            limits
                .head_refusal(1, [(1, 1), (1, 1), (1, 1)])
                .unwrap()
                .status,
            432
        );
    }
}
