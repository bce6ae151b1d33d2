//! SigV4 (service `sagemaker`), accepted on the front's threads for the request shape
//! `ferry.auth.sigv4.fast_signature` computes itself: a path without dot or empty
//! segments, no query string, every signed header sent, printable ASCII throughout.
//! Every check of `ferry.auth.sigv4.verify` is made here too (scope, `host` signed, no
//! unsigned steering header, `X-Amz-Date` signed and within the skew, the credential's
//! date, a known key, `x-amz-content-sha256` against the body, the signature in constant
//! time); any request that fails one, or has another shape, returns None and Python
//! judges it. The tests in `tests/dataplane/test_rust_auth.py` sign with botocore.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use sha2::{Digest, Sha256};

use super::{hex_lower, KeyTable};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "sagemaker";
const TERMINATOR: &str = "aws4_request";
/// Headers that steer a request and so must be signed when sent (Python's
/// `_MUST_SIGN_PREFIXES`).
const MUST_SIGN_PREFIXES: [&str; 2] = ["x-amz-", "x-amzn-sagemaker-"];
/// Derived keys kept per (key id, date, region); a table holds few keys, so this bound
/// is only reached by clients signing for many regions, and then the cache starts over.
const MAX_SIGNING_KEYS: usize = 256;

type HmacSha256 = Hmac<Sha256>;

/// SigV4's derived keys (four chained HMACs), the same for every request of one key on
/// one day in one region.
#[derive(Default)]
pub struct SigningKeys(Mutex<HashMap<(String, String, String), [u8; 32]>>);

impl SigningKeys {
    fn get(&self, key_id: &str, secret: &str, date: &str, region: &str) -> [u8; 32] {
        let index = (key_id.to_owned(), date.to_owned(), region.to_owned());
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = cache.get(&index) {
            return *key;
        }
        let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
        for part in [region, SERVICE, TERMINATOR] {
            key = hmac(&key, part.as_bytes());
        }
        if cache.len() >= MAX_SIGNING_KEYS {
            cache.clear();
        }
        cache.insert(index, key);
        key
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The request as signed: the raw (still percent-encoded) path and query, as on the wire.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// The Authorization header's parts, as Python's `parse_authorization` splits them when
/// the signature comes last.
struct Authorization<'a> {
    key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
    signed_headers: Vec<String>,
    signature: &'a str,
}

fn printable(bytes: &[u8]) -> Option<&str> {
    bytes
        .iter()
        .all(|b| (0x20..=0x7e).contains(b))
        .then(|| std::str::from_utf8(bytes).ok())
        .flatten()
}

fn parse_authorization(value: &[u8]) -> Option<Authorization<'_>> {
    let value = printable(value)?;
    let at = value.rfind("Signature=")?;
    let signature = value[at + "Signature=".len()..].trim_matches(' ');
    if signature.is_empty() || signature.contains(',') {
        return None;
    }
    let (algorithm, rest) = value[..at].trim_matches(' ').split_once(' ')?;
    if algorithm != ALGORITHM {
        return None;
    }
    let (mut credential, mut signed) = ("", "");
    for item in rest.split(',') {
        if let Some((key, field)) = item.trim_matches(' ').split_once('=') {
            match key {
                "Credential" => credential = field.trim_matches(' '),
                "SignedHeaders" => signed = field.trim_matches(' '),
                _ => {}
            }
        }
    }
    if credential.is_empty() || signed.is_empty() {
        return None;
    }
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope[..] else {
        return None;
    };
    Some(Authorization {
        key_id,
        date,
        region,
        service,
        terminator,
        signed_headers: signed
            .to_ascii_lowercase()
            .split(';')
            .map(str::to_owned)
            .collect(),
        signature,
    })
}

/// Seconds since the epoch of an `X-Amz-Date` in its exact form (YYYYMMDDTHHMMSSZ, every
/// field in range); None for anything else, which Python's strptime then judges.
fn amz_date_epoch(value: &str) -> Option<f64> {
    let bytes = value.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = &bytes[range];
        digits.iter().all(u8::is_ascii_digit).then(|| {
            digits
                .iter()
                .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if year < 1970
        || !(1..=12).contains(&month)
        || day < 1
        || day > month_days[(month - 1) as usize]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    Some((days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second) as f64)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

pub fn now_epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// botocore's canonical URI for a path without dot segments: every byte but the
/// unreserved ones and `/` percent-encoded (again), as Python's `quote(path, safe="/~")`.
fn canonical_path(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    for &byte in path {
        if byte.is_ascii_alphanumeric() || b"/_.-~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A signed header's canonical value: its values in order, each with its runs of blanks
/// collapsed to one space, joined by commas; None when one holds anything but printable
/// ASCII and tabs.
fn canonical_values(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut joined = String::new();
    for (index, value) in headers.get_all(name).iter().enumerate() {
        let bytes = value.as_bytes();
        if !bytes
            .iter()
            .all(|b| (0x20..=0x7e).contains(b) || *b == b'\t')
        {
            return None;
        }
        let text = std::str::from_utf8(bytes).ok()?;
        if index > 0 {
            joined.push(',');
        }
        let words: Vec<&str> = text.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
        joined.push_str(&words.join(" "));
    }
    Some(joined)
}

fn decode_signature(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None, // Python compares with its lower-case digest: upper case never matches
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The access key id of a request whose signature is valid now (`now`: seconds since the
/// epoch), or None.
pub fn verify(table: &KeyTable, request: &SignedRequest<'_>, now: f64) -> Option<String> {
    let headers = request.headers;
    let auth = parse_authorization(headers.get(AUTHORIZATION)?.as_bytes())?;
    let signed = &auth.signed_headers;
    let is_signed = |name: &str| signed.iter().any(|s| s == name);
    if auth.service != SERVICE || auth.terminator != TERMINATOR || !is_signed("host") {
        return None;
    }
    let steering_unsigned = headers.keys().any(|name| {
        let name = name.as_str();
        MUST_SIGN_PREFIXES.iter().any(|p| name.starts_with(p)) && !is_signed(name)
    });
    if steering_unsigned || !is_signed("x-amz-date") {
        return None;
    }
    let amz_date = printable(headers.get("x-amz-date")?.as_bytes())?;
    let signed_at = amz_date_epoch(amz_date)?;
    if (now - signed_at).abs() > table.max_skew_seconds || auth.date != &amz_date[..8] {
        return None;
    }
    let secret = table.secrets.get(auth.key_id)?;
    let body_hash = hex_lower(&Sha256::digest(request.body));
    let content_sha = match headers.get("x-amz-content-sha256") {
        Some(value) => Some(printable(value.as_bytes())?),
        None => None,
    };
    if content_sha.is_some_and(|sent| sent.to_ascii_lowercase() != body_hash) {
        return None;
    }
    let path = request.path;
    let dotted = path.windows(2).any(|w| w == b"//" || w == b"/.");
    if !request.query.is_empty() || dotted || !path.starts_with(b"/") || !path.is_ascii() {
        return None;
    }
    let mut names: Vec<&str> = signed.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let mut canonical = format!(
        "{}\n{}\n\n",
        request.method.to_ascii_uppercase(),
        canonical_path(path)
    );
    for name in &names {
        // A signed header that was not sent takes botocore's path, in Python.
        headers.get(*name)?;
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&canonical_values(headers, name)?);
        canonical.push('\n');
    }
    // A signed x-amz-content-sha256 is the payload hash as sent (checked above).
    let payload_hash = match content_sha {
        Some(sent) if names.contains(&"x-amz-content-sha256") => sent.to_owned(),
        _ => body_hash,
    };
    canonical.push('\n');
    canonical.push_str(&names.join(";"));
    canonical.push('\n');
    canonical.push_str(&payload_hash);
    let scope = format!(
        "{}/{}/{}/{}",
        auth.date, auth.region, auth.service, auth.terminator
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex_lower(&Sha256::digest(canonical.as_bytes()))
    );
    let key = table
        .signing_keys
        .get(auth.key_id, secret, auth.date, auth.region);
    let mut mac = HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&decode_signature(auth.signature)?)
        .ok()
        .map(|()| auth.key_id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_are_read_in_their_exact_form_only() {
        assert_eq!(amz_date_epoch("19700101T000000Z"), Some(0.0));
        assert_eq!(amz_date_epoch("20240229T235959Z"), Some(1_709_251_199.0));
        assert_eq!(amz_date_epoch("20230229T000000Z"), None);
        assert_eq!(amz_date_epoch("20241301T000000Z"), None);
        assert_eq!(amz_date_epoch("2024011T000000Z"), None);
        assert_eq!(amz_date_epoch("20240101T000060Z"), None);
    }

    #[test]
    fn the_canonical_path_encodes_all_but_unreserved_bytes_and_slashes() {
        assert_eq!(
            canonical_path(b"/endpoints/a-b_c.d~e/invocations"),
            "/endpoints/a-b_c.d~e/invocations"
        );
        assert_eq!(
            canonical_path(b"/v1/models/m%20x:predict"),
            "/v1/models/m%2520x%3Apredict"
        );
    }

    #[test]
    fn the_authorization_header_is_split_as_python_splits_it() {
        let header = b"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/sagemaker/aws4_request, SignedHeaders=Host;X-Amz-Date, Signature=ab";
        let auth = parse_authorization(header).unwrap();
        assert_eq!(
            (auth.key_id, auth.date, auth.region),
            ("AK", "20240101", "us-east-1")
        );
        assert_eq!(auth.signed_headers, ["host", "x-amz-date"]);
        assert_eq!(auth.signature, "ab");
        assert!(parse_authorization(
            b"AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=host, Signature=a,b"
        )
        .is_none());
        assert!(parse_authorization(
            b"AWS4-HMAC-SHA256 Credential=a/b/c/d, SignedHeaders=host, Signature=ab"
        )
        .is_none());
    }
}
