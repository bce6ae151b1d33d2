//! `--auth` checks on the front's threads: a request whose SigV4 signature or bearer
//! token is valid reaches Python marked with the key that signed it, so the event loop
//! spends no time on hashes and HMACs.
//!
//! Rust only ever *accepts*: a request it cannot prove valid (any failure, and any shape
//! it was not written for) goes to Python's check (`ferry.auth.middleware`) unmarked,
//! which stays the one reference for every refusal and its text. The keys come from
//! Python (`HttpFront.set_keys`, on every change of the key file), with a generation
//! number that the mark carries: Python takes a mark only while its keys are of that
//! generation, so a revoked key is refused as soon as Python has re-read the file.

pub mod sigv4;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use sha2::{Digest, Sha256};

/// The keys Python published: SigV4 secrets by access key id, bearer token ids by the
/// token's SHA-256 (hex, as the key file stores it).
#[derive(Default)]
pub struct KeyTable {
    pub generation: u64,
    pub secrets: HashMap<String, String>,
    pub token_ids: HashMap<String, String>,
    pub max_skew_seconds: f64,
    signing_keys: sigv4::SigningKeys,
}

impl KeyTable {
    pub fn new(
        generation: u64,
        secrets: HashMap<String, String>,
        token_ids: HashMap<String, String>,
        max_skew_seconds: f64,
    ) -> Self {
        Self {
            generation,
            secrets,
            token_ids,
            max_skew_seconds,
            signing_keys: sigv4::SigningKeys::default(),
        }
    }
}

/// What Python learns of a request Rust accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    pub generation: u64,
    pub key_id: String,
    /// The time the check took, for `ferry_auth_check_seconds_total`.
    pub seconds: f64,
}

/// The keys of one front: none until Python publishes them (`--auth` off: never).
#[derive(Default)]
pub struct Keys(RwLock<Option<Arc<KeyTable>>>);

impl Keys {
    pub fn publish(&self, table: KeyTable) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(table));
    }

    fn current(&self) -> Option<Arc<KeyTable>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key behind a valid `Authorization` header, or None (no keys, no header, or
    /// anything Python must judge).
    pub fn verify(
        &self,
        method: &str,
        path: &[u8],
        query: &[u8],
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Verified> {
        let table = self.current()?;
        let started = Instant::now();
        // Python reads the first Authorization header; so does this.
        let authorization = headers.get(AUTHORIZATION)?.as_bytes();
        let key_id =
            if authorization.len() >= 7 && authorization[..7].eq_ignore_ascii_case(b"bearer ") {
                bearer_key(&table, &authorization[7..])?
            } else if authorization.starts_with(sigv4::ALGORITHM.as_bytes()) {
                let request = sigv4::SignedRequest {
                    method,
                    path,
                    query,
                    headers,
                    body,
                };
                sigv4::verify(&table, &request, sigv4::now_epoch_seconds())?
            } else {
                return None;
            };
        Some(Verified {
            generation: table.generation,
            key_id,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// The key id of a bearer token: the part after `Bearer `, trimmed of spaces and tabs,
/// printable ASCII only (Python strips more kinds of whitespace: such a token is left to
/// it), looked up by its SHA-256.
fn bearer_key(table: &KeyTable, rest: &[u8]) -> Option<String> {
    let token = trim_blanks(rest);
    if token.is_empty() || !token.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return None;
    }
    let digest = hex_lower(&Sha256::digest(token));
    table.token_ids.get(&digest).cloned()
}

pub(crate) fn trim_blanks(bytes: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[(byte >> 4) as usize] as char);
        out.push(DIGITS[(byte & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn table_with_token(token: &str) -> KeyTable {
        let digest = hex_lower(&Sha256::digest(token.as_bytes()));
        KeyTable::new(
            7,
            HashMap::new(),
            HashMap::from([(digest, "FKTKID".into())]),
            300.0,
        )
    }

    fn verify_bearer(keys: &Keys, value: &str) -> Option<Verified> {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        keys.verify("POST", b"/v1/models/m:predict", b"", &headers, b"{}")
    }

    #[test]
    fn nothing_is_accepted_before_keys_are_published() {
        assert_eq!(verify_bearer(&Keys::default(), "Bearer ferry_x"), None);
    }

    #[test]
    fn a_known_token_is_accepted_with_the_generation() {
        let keys = Keys::default();
        keys.publish(table_with_token("ferry_secret"));
        let verified = verify_bearer(&keys, "bearer   ferry_secret ").unwrap();
        assert_eq!(
            (verified.generation, verified.key_id.as_str()),
            (7, "FKTKID")
        );
        assert_eq!(verify_bearer(&keys, "Bearer ferry_other"), None);
        assert_eq!(verify_bearer(&keys, "Bearer "), None);
        assert_eq!(verify_bearer(&keys, "Basic ferry_secret"), None);
    }
}
