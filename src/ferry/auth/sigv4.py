"""AWS Signature Version 4 verification for requests signed as for service `sagemaker`.

The reference is botocore's own signer (`botocore.auth.SigV4Auth`), the code that signs
the clients' requests. Rebuilding a botocore `AWSRequest` per request costs about 25 µs
of CPU (about 90 µs of wall time on a loaded 2-core server: 40 % of c64 throughput), so
the common shape (a path without dot segments or empty segments, no query string, every
signed header present) is canonicalized here directly, with the signing key derived once
per key, day and region: a few µs. Anything else goes through botocore, and the tests
check that both give the same signature over generated requests.

Checks, in order, each failure a `SignatureError` with AWS's error type and message:
- an `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`
  header (query-string presigned URLs are not accepted);
- the credential scope: service `sagemaker`, any region, terminator `aws4_request`;
- `host` among the SignedHeaders (AWS requires it, with its words for the refusal);
- no `x-amz-*` or `x-amzn-sagemaker-*` header that is not signed: these steer the
  request (`X-Amzn-SageMaker-Target-Model` picks the model, `-Custom-Attributes` the
  method), so one added to a captured signed request must not reroute it. botocore
  signs every header it sends but `user-agent`, `expect` and `x-amzn-trace-id` (its
  `SIGNED_HEADERS_BLACKLIST`), `x-amz-date` and `x-amz-security-token` included, so
  real clients pass; `x-amzn-trace-id` (added by load balancers) matches neither prefix;
- `X-Amz-Date` signed, and within `max_skew_seconds` (5 minutes) of this clock; the
  scope's date is that date;
- a known access key id;
- `x-amz-content-sha256`, when sent, equal to the body's hash (botocore's signer
  trusts that header instead of hashing the body, so it is checked here first);
- the signature, compared in constant time.

A signed request may be replayed until it expires (as on AWS, which signs no nonce);
TLS in front of ferry keeps others from seeing requests to replay.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from calendar import timegm
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SERVICE = "sagemaker"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_SECONDS = 300.0
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


class SignatureError(Exception):
    """A request that fails SigV4 verification; `error_type` is AWS's name for it."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


@dataclass(frozen=True)
class Credential:
    """The Authorization header but its signature: the same for every request a client
    signs in a day, so it is parsed once (`parse_authorization` caches it) together
    with what the canonical request and the string to sign need from it."""

    access_key_id: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]

    @functools.cached_property
    def canonical_names(self) -> tuple[str, ...]:
        """The signed header names as the canonical request lists them."""
        return tuple(sorted(set(self.signed_headers)))

    @functools.cached_property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{self.terminator}"


@dataclass(frozen=True)
class Authorization:
    """The parts of an `AWS4-HMAC-SHA256` Authorization header."""

    credential: Credential
    signature: str


_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)
_REQUIRED = ("Credential", "SignedHeaders", "Signature")
# AWS's answer (InvalidSignatureException) to a signature that does not cover the host.
_HOST_NOT_SIGNED = "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
# S3's words for unsigned x-amz-* headers (AccessDenied there; the JSON services'
# name for that is AccessDeniedException), with the headers' names, as S3 lists them.
_UNSIGNED = "There were headers present in the request which were not signed"
# Headers that steer a request and so must be signed when present.
_MUST_SIGN_PREFIXES = ("x-amz-", "x-amzn-sagemaker-")


def parse_authorization(value: str) -> Authorization:
    """Split the header; IncompleteSignature when a part is missing or malformed.

    Clients put the signature last: everything before it is looked up in a cache."""
    head, found, signature = value.rpartition("Signature=")
    signature = signature.strip()
    if found and signature and "," not in signature:
        return Authorization(_credential(head), signature)
    fields = _fields(value)
    _require(fields)
    return Authorization(_credential_from(fields), fields["Signature"])


@functools.lru_cache(maxsize=1024)
def _credential(head: str) -> Credential:
    """The Credential of a header's part before `Signature=` (cached)."""
    fields = _fields(head)
    fields["Signature"] = "-"  # present: parse_authorization split it off
    _require(fields)
    return _credential_from(fields)


def _fields(value: str) -> dict[str, str]:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError(
            "IncompleteSignature", f"Unsupported authorization algorithm: {algorithm}"
        )
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, field_value = item.strip().partition("=")
        if sep:
            fields[key] = field_value.strip()
    return fields


def _require(fields: dict[str, str]) -> None:
    missing = [k for k in _REQUIRED if not fields.get(k)]
    if missing:
        raise SignatureError(
            "IncompleteSignature",
            f"Authorization header requires {', '.join(missing)} (AWS4-HMAC-SHA256)",
        )


def _credential_from(fields: dict[str, str]) -> Credential:
    scope = fields["Credential"].split("/")
    if len(scope) != 5:
        raise SignatureError(
            "IncompleteSignature",
            "Credential must have the form <key id>/<date>/<region>/<service>/aws4_request",
        )
    access_key_id, date, region, service, terminator = scope
    signed = tuple(fields["SignedHeaders"].lower().split(";"))
    return Credential(access_key_id, date, region, service, terminator, signed)


@functools.lru_cache(maxsize=256)
def amz_date_epoch(value: str) -> float:
    """Seconds since the epoch of an `X-Amz-Date` (YYYYMMDDTHHMMSSZ, UTC). Cached:
    strptime costs about a third of a verification, and concurrent requests share
    their dates."""
    return float(timegm(time.strptime(value, _AMZ_DATE_FORMAT)))


def verify(
    method: str,
    raw_path: str,
    query_string: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    secret_for: Callable[[str], str | None],
    now: float | None = None,
    max_skew_seconds: float = MAX_SKEW_SECONDS,
) -> str:
    """Verify one request; returns the access key id, raises SignatureError.

    `raw_path` and `query_string` as they came on the wire (not percent-decoded);
    `headers` as (lower-case name, value) pairs, repeats allowed; `secret_for` looks
    up a key id's secret (None: unknown key).
    """
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name, []).append(value)
    authorization = by_name.get("authorization")
    if not authorization:
        raise SignatureError("MissingAuthenticationToken", "Missing Authentication Token")
    auth = parse_authorization(authorization[0])
    credential = auth.credential
    if credential.service != SERVICE or credential.terminator != "aws4_request":
        raise SignatureError(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{SERVICE}'.",
        )
    if "host" not in credential.signed_headers:
        raise SignatureError("InvalidSignatureException", _HOST_NOT_SIGNED)
    unsigned = unsigned_headers(by_name, credential.signed_headers)
    if unsigned:
        raise SignatureError("AccessDeniedException", f"{_UNSIGNED}: {', '.join(unsigned)}")
    amz_date = (by_name.get("x-amz-date") or [""])[0]
    if not amz_date or "x-amz-date" not in credential.signed_headers:
        raise SignatureError(
            "IncompleteSignature", "X-Amz-Date must be sent and signed (SignedHeaders)"
        )
    try:
        signed_at = amz_date_epoch(amz_date)
    except ValueError:
        raise SignatureError(
            "IncompleteSignature", f"X-Amz-Date is not YYYYMMDDTHHMMSSZ: {amz_date}"
        ) from None
    now = time.time() if now is None else now
    if abs(now - signed_at) > max_skew_seconds:
        raise SignatureError(
            "InvalidSignatureException",
            f"Signature expired or not yet valid: {amz_date} is more than "
            f"{int(max_skew_seconds // 60)} min from the server's time "
            f"{time.strftime(_AMZ_DATE_FORMAT, time.gmtime(now))}.",
        )
    if credential.date != amz_date[:8]:
        raise SignatureError(
            "InvalidSignatureException",
            f"Credential date {credential.date} does not match X-Amz-Date {amz_date}.",
        )
    secret = secret_for(credential.access_key_id)
    if secret is None:
        raise SignatureError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    body_hash = body_sha256(body)  # checked against the header, and signed
    content_sha = by_name.get("x-amz-content-sha256")
    if content_sha and not hmac.compare_digest(content_sha[0].lower().encode(), body_hash.encode()):
        raise SignatureError(
            "InvalidSignatureException",
            "The provided x-amz-content-sha256 header does not match the request body.",
        )
    expected = fast_signature(
        method, raw_path, query_string, by_name, credential, amz_date, body_hash, secret
    )
    if expected is None:
        expected = expected_signature(
            method, raw_path, query_string, by_name, credential, amz_date, body, secret
        )
    if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
        raise SignatureError("InvalidSignatureException", _MISMATCH)
    return credential.access_key_id


def unsigned_headers(by_name: dict[str, list[str]], signed: tuple[str, ...]) -> list[str]:
    """The steering headers (`_MUST_SIGN_PREFIXES`) sent but not in SignedHeaders."""
    return sorted(
        name for name in by_name if name.startswith(_MUST_SIGN_PREFIXES) and name not in signed
    )


# Copied, not created, per use: creating an OpenSSL digest looks the algorithm up in
# OpenSSL's provider tables, which measured several times slower on a busy server.
_SHA256 = hashlib.sha256()
_GIL_FREE_CHUNK = 2047  # hashlib releases the GIL for inputs of 2048 bytes and more
_HOLD_GIL_UP_TO = 64 * 1024


def _hex_sha256(data: bytes) -> str:
    digest = _SHA256.copy()
    digest.update(data)
    return digest.hexdigest()


def body_sha256(body: bytes) -> str:
    """The body's SHA-256 (hex), fed in pieces under 2 KiB for bodies up to 64 KiB.

    hashlib lets go of the GIL while it hashes 2 KiB or more; on a busy server the
    event loop then waits for the batching thread to hand it back, which measured
    about 20 µs per request for an 8 KB body (the hash itself takes 4 µs). Small
    pieces keep the GIL; large bodies still release it, where the hash dominates."""
    if len(body) > _HOLD_GIL_UP_TO:
        return hashlib.sha256(body).hexdigest()
    digest = _SHA256.copy()
    view = memoryview(body)
    for start in range(0, len(view), _GIL_FREE_CHUNK):
        digest.update(view[start : start + _GIL_FREE_CHUNK])
    return digest.hexdigest()


@functools.lru_cache(maxsize=1024)
def canonical_path(raw_path: str) -> str:
    """botocore's canonical URI for a path without dot segments: percent-encoded again
    (SigV4 encodes the already-encoded path once more for every service but S3).
    Cached: a server sees the same few paths over and over."""
    return quote(raw_path, safe="/~")


@functools.lru_cache(maxsize=64)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """SigV4's derived key (four chained HMACs), the same for every request of one key
    on one day in one region."""
    key = hmac.digest(("AWS4" + secret).encode(), date.encode(), "sha256")
    for part in (region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


@functools.lru_cache(maxsize=64)
def _signer(secret: str, date: str, region: str, service: str) -> hmac.HMAC:
    """An HMAC keyed with the signing key, copied per request (see `_SHA256`)."""
    return hmac.new(signing_key(secret, date, region, service), digestmod=hashlib.sha256)


def fast_signature(
    method: str,
    raw_path: str,
    query_string: str,
    by_name: dict[str, list[str]],
    credential: Credential,
    amz_date: str,
    body_hash: str,
    secret: str,
) -> str | None:
    """The signature botocore would compute, for the common request shape only; None
    for anything botocore normalizes (a query string, `.`/`..`/empty path segments, a
    signed header that was not sent), which `expected_signature` then handles.
    `body_hash` is `body_sha256` of the body."""
    if query_string or "//" in raw_path or "/." in raw_path or not raw_path.startswith("/"):
        return None
    names = credential.canonical_names
    lines = []
    for name in names:
        values = by_name.get(name)
        if not values:
            return None
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")
    # botocore takes a signed x-amz-content-sha256 as the payload hash (verify() has
    # checked it against the body) and hashes the body otherwise.
    signed_hash = "x-amz-content-sha256" in names
    payload_hash = by_name["x-amz-content-sha256"][0] if signed_hash else body_hash
    canonical = "\n".join(
        (
            method.upper(),
            canonical_path(raw_path),
            "",
            "\n".join(lines) + "\n",
            ";".join(names),
            payload_hash,
        )
    )
    string_to_sign = "\n".join(
        (
            ALGORITHM,
            amz_date,
            credential.scope,
            _hex_sha256(canonical.encode()),
        )
    )
    signer = _signer(secret, credential.date, credential.region, credential.service).copy()
    signer.update(string_to_sign.encode())
    return signer.hexdigest()


def expected_signature(
    method: str,
    raw_path: str,
    query_string: str,
    by_name: dict[str, list[str]],
    credential: Credential,
    amz_date: str,
    body: bytes,
    secret: str,
) -> str:
    """botocore's signature for the request as the client must have signed it."""
    host = (by_name.get("host") or ["localhost"])[0]
    url = f"http://{host}{raw_path}" + (f"?{query_string}" if query_string else "")
    request = AWSRequest(method=method, url=url, data=body)
    for name in credential.signed_headers:
        # Appends (HTTPHeaders keeps repeats, joined with "," when canonicalized).
        for value in by_name.get(name, ()):
            request.headers[name] = value
    request.context["timestamp"] = amz_date
    keys = Credentials(credential.access_key_id, secret)
    signer = SigV4Auth(keys, credential.service, credential.region)
    canonical = signer.canonical_request(request)
    return signer.signature(signer.string_to_sign(request, canonical), request)


def sign_headers(
    method: str,
    url: str,
    body: bytes,
    access_key_id: str,
    secret: str,
    region: str = "us-east-1",
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """Headers that sign a request as botocore does (for load generators, benchmarks and
    tests that need a signed request without a boto3 client)."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    SigV4Auth(Credentials(access_key_id, secret), SERVICE, region).add_auth(request)
    return dict(request.headers.items())
