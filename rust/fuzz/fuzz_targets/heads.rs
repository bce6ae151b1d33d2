//! The head scan (`head_scan`, what judges every request head before hyper reads it) on
//! arbitrary bytes fed in arbitrary pieces: it never panics, a complete head ends at an
//! empty line within the bytes, and a head it lets go on (`Partial`) has taken at most
//! twice `--max_header_bytes` and a byte (so a head's memory is bounded however it is sent).

#![no_main]

use _dataplane::head_scan::{HeadScan, Verdict};
use _dataplane::limits::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the limits and the piece size; the rest is the stream.
    let [bytes_limit, piece, stream @ ..] = data else {
        return;
    };
    let limits = Limits::of_heads(16 + *bytes_limit as usize * 4, 1 + (*bytes_limit as usize % 8));
    let piece = 1 + *piece as usize % 64;
    let mut scan = HeadScan::default();
    let mut end = 0;
    while end < stream.len() {
        end = (end + piece).min(stream.len());
        let seen = &stream[..end];
        match scan.feed(seen, &limits) {
            Verdict::Partial => assert!(seen.len() <= 2 * limits.max_header_bytes + 1 + piece),
            Verdict::Complete(at) => {
                assert!(at <= seen.len());
                assert!(seen[..at].ends_with(b"\n"));
                return;
            }
            Verdict::Refused(refusal) => {
                assert!([414, 431, 432].contains(&refusal.status));
                return;
            }
        }
    }
});
