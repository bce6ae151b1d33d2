"""AWS Signature Version 4 verification for requests signed as for service `sagemaker`.

The expected signature is computed by botocore's own signer (`botocore.auth.SigV4Auth`),
the code that signs the clients' requests, over a request rebuilt from what arrived:
method, path and query exactly as sent, the signed headers only, and the body. Writing
the algorithm again would be one more place for the two sides to disagree.

Checks, in order, each failure a `SignatureError` with AWS's error type and message:
- an `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`
  header (query-string presigned URLs are not accepted);
- the credential scope: service `sagemaker`, any region, terminator `aws4_request`;
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
class Authorization:
    """The parts of an `AWS4-HMAC-SHA256` Authorization header."""

    access_key_id: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str


_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)


def parse_authorization(value: str) -> Authorization:
    """Split the header; IncompleteSignature when a part is missing or malformed."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError(
            "IncompleteSignature", f"Unsupported authorization algorithm: {algorithm}"
        )
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, field_value = item.strip().partition("=")
        if sep:
            parts[key] = field_value.strip()
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not parts.get(k)]
    if missing:
        raise SignatureError(
            "IncompleteSignature",
            f"Authorization header requires {', '.join(missing)} (AWS4-HMAC-SHA256)",
        )
    scope = parts["Credential"].split("/")
    if len(scope) != 5:
        raise SignatureError(
            "IncompleteSignature",
            "Credential must have the form <key id>/<date>/<region>/<service>/aws4_request",
        )
    access_key_id, date, region, service, terminator = scope
    signed = tuple(parts["SignedHeaders"].lower().split(";"))
    return Authorization(
        access_key_id, date, region, service, terminator, signed, parts["Signature"]
    )


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
    if auth.service != SERVICE or auth.terminator != "aws4_request":
        raise SignatureError(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{SERVICE}'.",
        )
    amz_date = (by_name.get("x-amz-date") or [""])[0]
    if not amz_date or "x-amz-date" not in auth.signed_headers:
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
    if auth.date != amz_date[:8]:
        raise SignatureError(
            "InvalidSignatureException",
            f"Credential date {auth.date} does not match X-Amz-Date {amz_date}.",
        )
    secret = secret_for(auth.access_key_id)
    if secret is None:
        raise SignatureError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    content_sha = by_name.get("x-amz-content-sha256")
    if content_sha and not hmac.compare_digest(
        content_sha[0].lower().encode(), hashlib.sha256(body).hexdigest().encode()
    ):
        raise SignatureError(
            "InvalidSignatureException",
            "The provided x-amz-content-sha256 header does not match the request body.",
        )
    expected = expected_signature(
        method, raw_path, query_string, by_name, auth, amz_date, body, secret
    )
    if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
        raise SignatureError("InvalidSignatureException", _MISMATCH)
    return auth.access_key_id


def expected_signature(
    method: str,
    raw_path: str,
    query_string: str,
    by_name: dict[str, list[str]],
    auth: Authorization,
    amz_date: str,
    body: bytes,
    secret: str,
) -> str:
    """botocore's signature for the request as the client must have signed it."""
    host = (by_name.get("host") or ["localhost"])[0]
    url = f"http://{host}{raw_path}" + (f"?{query_string}" if query_string else "")
    request = AWSRequest(method=method, url=url, data=body)
    for name in auth.signed_headers:
        # Appends (HTTPHeaders keeps repeats, joined with "," when canonicalized).
        for value in by_name.get(name, ()):
            request.headers[name] = value
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(auth.access_key_id, secret), auth.service, auth.region)
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
