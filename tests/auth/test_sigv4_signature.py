"""The SigV4 check without a server: the direct canonicalization (`fast_signature`) gives
botocore's signature for every request shape it takes on, hands every other shape to
botocore, and `verify` accepts what botocore's signer (the clients' code) signed and
refuses any change to it."""

from __future__ import annotations

import hashlib
import random
import time
from urllib.parse import urlsplit

import pytest

pytest.importorskip("botocore")

from ferry.auth import sigv4

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEY_ID = "FKIAEXAMPLE"

PATHS = [
    "/endpoints/scale/invocations",
    "/v1/models/mlp_small:predict",
    "/v1/models/mlp_small/versions/3:predict",
    "/v2/models/m/infer",
    "/endpoints/my%20endpoint/invocations",
    "/endpoints/a~b_c-d.e/invocations",
    "/invocations",
    "/endpoints/scale/invocations/",
]
AWKWARD_PATHS = ["/v1/models/./m:predict", "/a//b", "/v1/models/x/../m:predict"]


def _headers(url: str, body: bytes, region: str, extra: dict[str, str]) -> list[tuple[str, str]]:
    """What the server would see: the signed headers lower-cased, plus unsigned ones."""
    signed = sigv4.sign_headers("POST", url, body, KEY_ID, SECRET, region, extra)
    headers = [(name.lower(), value) for name, value in signed.items()]
    headers.append(("host", urlsplit(url).netloc))
    headers.append(("user-agent", "test"))
    return headers


def _by_name(headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name, []).append(value)
    return by_name


def _check(path: str, query: str, body: bytes, region: str, extra: dict[str, str]) -> str | None:
    """Verify a botocore-signed request; returns the fast signature (None: not taken)."""
    url = f"http://127.0.0.1:8501{path}" + (f"?{query}" if query else "")
    headers = _headers(url, body, region, extra)
    assert sigv4.verify("POST", path, query, headers, body, {KEY_ID: SECRET}.get) == KEY_ID
    by_name = _by_name(headers)
    auth = sigv4.parse_authorization(by_name["authorization"][0])
    amz_date = by_name["x-amz-date"][0]
    cred = auth.credential
    body_hash = sigv4.body_sha256(body)
    fast = sigv4.fast_signature("POST", path, query, by_name, cred, amz_date, body_hash, SECRET)
    reference = sigv4.expected_signature("POST", path, query, by_name, cred, amz_date, body, SECRET)
    assert reference == auth.signature
    if fast is not None:
        assert fast == reference
    return fast


@pytest.mark.parametrize("path", PATHS)
def test_the_direct_signature_equals_botocores(path: str) -> None:
    assert _check(path, "", b'{"instances": [[1.0, 2.0]]}', "us-east-1", {}) is not None


def test_generated_requests_agree_with_botocore() -> None:
    rng = random.Random(0)
    for _ in range(200):
        body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        extra: dict[str, str] = {}
        if rng.random() < 0.5:
            extra["Content-Type"] = rng.choice(["application/json", "text/csv;  charset=utf-8"])
        if rng.random() < 0.3:
            extra["X-Amzn-SageMaker-Custom-Attributes"] = "  a=1,   b=2 "
        if rng.random() < 0.3:
            extra["Accept"] = "application/json"
        region = rng.choice(["us-east-1", "eu-central-1", "ap-southeast-2"])
        assert _check(rng.choice(PATHS), "", body, region, extra) is not None


@pytest.mark.parametrize("path", AWKWARD_PATHS)
def test_paths_botocore_normalizes_go_to_botocore(path: str) -> None:
    assert _check(path, "", b"{}", "us-east-1", {}) is None


def test_query_strings_go_to_botocore() -> None:
    assert _check("/v1/models/m:predict", "b=2&a=1&a=0", b"{}", "us-east-1", {}) is None


def test_a_signed_payload_hash_is_used_as_botocore_does() -> None:
    body = b'{"instances": [1]}'
    digest = hashlib.sha256(body).hexdigest()
    assert _check(PATHS[0], "", body, "us-east-1", {"X-Amz-Content-SHA256": digest}) is not None


def test_any_change_to_a_signed_request_is_refused() -> None:
    path, body = PATHS[1], b'{"instances": [[1.0]]}'
    url = f"http://127.0.0.1:8501{path}"
    headers = _headers(url, body, "us-east-1", {"Content-Type": "application/json"})
    changes = [
        ("POST", path.replace("small", "large"), headers, body),
        ("PUT", path, headers, body),
        ("POST", path, headers, body + b" "),
        ("POST", path, [(n, "text/plain" if n == "content-type" else v) for n, v in headers], body),
        ("POST", path, [(n, "other:1" if n == "host" else v) for n, v in headers], body),
    ]
    for method, changed_path, changed_headers, changed_body in changes:
        with pytest.raises(sigv4.SignatureError) as refused:
            sigv4.verify(
                method, changed_path, "", changed_headers, changed_body, {KEY_ID: SECRET}.get
            )
        assert refused.value.error_type == "InvalidSignatureException"
    with pytest.raises(sigv4.SignatureError):
        sigv4.verify("POST", path, "", headers, body, {KEY_ID: "another secret"}.get)


def test_the_signing_key_is_per_day_and_region() -> None:
    day = sigv4.signing_key(SECRET, "20261129", "us-east-1", "sagemaker")
    assert sigv4.signing_key(SECRET, "20261130", "us-east-1", "sagemaker") != day
    assert sigv4.signing_key(SECRET, "20261129", "eu-west-1", "sagemaker") != day
    assert sigv4.signing_key("other", "20261129", "us-east-1", "sagemaker") != day


def test_an_expired_signature_is_refused_even_when_correct() -> None:
    path, body = PATHS[0], b"{}"
    headers = _headers(f"http://127.0.0.1:8501{path}", body, "us-east-1", {})
    with pytest.raises(sigv4.SignatureError, match="expired"):
        sigv4.verify("POST", path, "", headers, body, {KEY_ID: SECRET}.get, now=time.time() + 3600)


def test_the_header_parts_may_come_in_any_order() -> None:
    credential = "Credential=K/20261129/r/sagemaker/aws4_request"
    usual = f"AWS4-HMAC-SHA256 {credential}, SignedHeaders=Host;X-Amz-Date, Signature=ab12"
    reordered = f"AWS4-HMAC-SHA256 Signature=ab12, SignedHeaders=host;x-amz-date, {credential}"
    assert sigv4.parse_authorization(usual) == sigv4.parse_authorization(reordered)
    parsed = sigv4.parse_authorization(usual)
    assert parsed.signature == "ab12"
    assert parsed.credential.signed_headers == ("host", "x-amz-date")
    assert parsed.credential.scope == "20261129/r/sagemaker/aws4_request"


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        (
            "AWS4-HMAC-SHA256 Credential=K/d/r/sagemaker/aws4_request, SignedHeaders=host",
            "Signature",
        ),
        ("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=ab", "Credential"),
        ("AWS4-HMAC-SHA256 Credential=K/d/r/sagemaker/aws4_request, Signature=ab", "SignedHeaders"),
    ],
)
def test_a_missing_part_is_named(header: str, missing: str) -> None:
    with pytest.raises(sigv4.SignatureError, match=missing) as refused:
        sigv4.parse_authorization(header)
    assert refused.value.error_type == "IncompleteSignature"


def test_large_and_small_bodies_hash_as_hashlib_does() -> None:
    for size in (0, 1, 2047, 2048, 8347, 64 * 1024, 64 * 1024 + 1, 300_000):
        body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        assert sigv4.body_sha256(body) == hashlib.sha256(body).hexdigest()
