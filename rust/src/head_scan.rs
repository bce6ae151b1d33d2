//! A request head judged as its bytes arrive, by the Python front's rules
//! (`ferry.protocols.http_limits.LimitedHttpToolsProtocol`): the request target in
//! progress is refused with 414 once it is over `--max_header_bytes`; each complete header
//! is counted (`Limits::count_header`: 431 for the count or the bytes); a head whose raw
//! bytes pass `--max_header_bytes` before it ends is refused with 431. So a head is
//! refused after at most `--max_header_bytes` plus one read, however large it is sent.
//!
//! Lines end at LF (a CR before it is dropped), as llhttp and httparse end them; what the
//! scan does not judge (a malformed request line or header), hyper parses and answers.

use crate::limits::{HeadCount, Limits, Refusal};

/// What the bytes of a head seen so far amount to.
#[derive(Debug, PartialEq)]
pub enum Verdict<'a> {
    /// No refusal yet, and the head goes on.
    Partial,
    /// The head ends at this offset (after its empty line) within the limits.
    Complete(usize),
    Refused(&'a Refusal),
}

/// The scan of one head; `feed` is given all of the head's bytes so far each time, and
/// looks at each byte once.
#[derive(Default)]
pub struct HeadScan {
    /// Start of the line not ended yet.
    line_start: usize,
    /// Bytes of that line already searched for its LF.
    searched: usize,
    request_line_done: bool,
    count: HeadCount,
}

impl HeadScan {
    pub fn feed<'a>(&mut self, seen: &[u8], limits: &'a Limits) -> Verdict<'a> {
        while let Some(offset) = seen[self.searched..].iter().position(|&b| b == b'\n') {
            let end = self.searched + offset;
            let line = strip_cr(&seen[self.line_start..end]);
            self.line_start = end + 1;
            self.searched = end + 1;
            if !self.request_line_done {
                if line.is_empty() {
                    continue; // empty lines before a request line are skipped (llhttp, hyper)
                }
                self.request_line_done = true;
                let target = request_target(line).len();
                if let Some(refusal) = limits.count_target(&mut self.count, target) {
                    return Verdict::Refused(refusal);
                }
            } else if line.is_empty() {
                return Verdict::Complete(end + 1);
            } else {
                let (name, value) = header_parts(line);
                if let Some(refusal) = limits.count_header(&mut self.count, name, value) {
                    return Verdict::Refused(refusal);
                }
            }
        }
        self.searched = seen.len();
        if !self.request_line_done {
            // llhttp hands the URL over piece by piece: one over the limit is cut at once
            // (with 414, however its bytes arrive); the method before it is bounded too.
            let line = &seen[self.line_start..];
            return match line.iter().position(|&b| b == b' ') {
                Some(space) if line.len() - space - 1 > limits.max_header_bytes => {
                    Verdict::Refused(&limits.url_too_long)
                }
                None if seen.len() > limits.max_header_bytes => {
                    Verdict::Refused(&limits.head_too_large)
                }
                _ => Verdict::Partial,
            };
        }
        if seen.len() > limits.max_header_bytes {
            return Verdict::Refused(&limits.head_too_large);
        }
        Verdict::Partial
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The request target of `METHOD SP target SP version` (all after the method when the
/// line has no version).
fn request_target(line: &[u8]) -> &[u8] {
    let Some(first) = line.iter().position(|&b| b == b' ') else {
        return &[];
    };
    let rest = &line[first + 1..];
    match rest.iter().rposition(|&b| b == b' ') {
        Some(last) => &rest[..last],
        None => rest,
    }
}

/// Name and value lengths of `name: value`, the value without the white space around it
/// (as llhttp hands it over).
fn header_parts(line: &[u8]) -> (usize, usize) {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return (line.len(), 0);
    };
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let value = &line[colon + 1..];
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    (colon, end - start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::tests::limits;

    fn judge(bytes: &[u8], limits: &Limits) -> Option<u16> {
        match HeadScan::default().feed(bytes, limits) {
            Verdict::Refused(refusal) => Some(refusal.status),
            Verdict::Complete(_) | Verdict::Partial => None,
        }
    }

    #[test]
    fn a_head_within_the_limits_completes_where_its_empty_line_ends() {
        let limits = limits(64, 4);
        let head = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nbody";
        assert_eq!(
            HeadScan::default().feed(head, &limits),
            Verdict::Complete(head.len() - 4)
        );
        assert_eq!(
            HeadScan::default().feed(b"\r\nGET / HTTP/1.1\nA: b\n\n", &limits),
            Verdict::Complete(23)
        );
    }

    #[test]
    fn heads_are_counted_as_pythons_front_counts_them() {
        let limits = limits(20, 2);
        // target 2, then 1 + 1 + 4 per header: 2 + 6 + 6 = 14, a third header is one too many
        assert_eq!(
            judge(b"GET /x HTTP/1.1\r\na: b\r\nc:  d \r\n\r\n", &limits),
            None
        );
        assert_eq!(
            judge(b"GET /x HTTP/1.1\r\na: b\r\nc: d\r\ne: f\r\n", &limits),
            Some(432)
        );
        assert_eq!(
            judge(b"GET /x HTTP/1.1\r\nabcdefghijk: b\r\n", &limits),
            Some(431)
        );
        assert_eq!(
            judge(&[b"GET /".as_slice(), &[b'a'; 20]].concat(), &limits),
            Some(414)
        );
        assert_eq!(judge(b"GET /abc", &limits), None);
        // a header still on its way, longer than the limit
        assert_eq!(
            judge(b"GET / HTTP/1.1\r\nx: aaaaaaaaaaaaaaa", &limits),
            Some(431)
        );
    }

    #[test]
    fn a_head_fed_byte_by_byte_is_judged_as_it_is_whole() {
        let limits = limits(40, 3);
        let heads: [&[u8]; 4] = [
            b"POST /m:predict HTTP/1.1\r\nA: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n",
            b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nlong: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
        ];
        for head in heads {
            let whole = HeadScan::default().feed(head, &limits);
            let mut scan = HeadScan::default();
            let mut dripped = Verdict::Partial;
            for end in 1..=head.len() {
                dripped = scan.feed(&head[..end], &limits);
                if dripped != Verdict::Partial {
                    break;
                }
            }
            let status = |v: &Verdict| match v {
                Verdict::Refused(r) => Some(r.status),
                _ => None,
            };
            assert_eq!(status(&whole), status(&dripped), "{head:?}");
        }
    }
}
