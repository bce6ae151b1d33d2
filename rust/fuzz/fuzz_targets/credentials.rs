//! The `--auth` check on arbitrary requests (Authorization, X-Amz-Date and other headers,
//! path, query, body from the fuzzer's bytes): it never panics, and it accepts nothing,
//! since no input forges an HMAC-SHA256 under a secret it does not know or the SHA-256
//! of an unknown token.

#![no_main]

use std::collections::HashMap;

use _dataplane::auth::{KeyTable, Keys};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 8] = [
    "authorization",
    "x-amz-date",
    "host",
    "x-amz-content-sha256",
    "content-type",
    "x-amzn-sagemaker-target-model",
    "x-amz-security-token",
    "user-agent",
];

fuzz_target!(|data: &[u8]| {
    // Fields split at 0xff bytes: path, query, body, then (name index, value) pairs.
    let mut fields = data.split(|b| *b == 0xff);
    let path = fields.next().unwrap_or_default();
    let query = fields.next().unwrap_or_default();
    let body = fields.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    for field in fields {
        let Some((index, value)) = field.split_first() else {
            continue;
        };
        let name = HeaderName::from_static(NAMES[*index as usize % NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let keys = Keys::default();
    keys.publish(KeyTable::new(
        1,
        HashMap::from([("FKIAFUZZ".to_owned(), "secret".to_owned())]),
        HashMap::from([("0".repeat(64), "FKTKFUZZ".to_owned())]),
        f64::MAX,
    ));
    assert!(keys.verify("POST", path, query, &headers, body).is_none());
});
