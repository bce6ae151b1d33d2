"""The Rust front's `--auth` check (rust/src/auth) against Python's (`ferry.auth`), over
requests signed by botocore's signer and then changed: whatever Rust accepts, Python
accepts for the same key, so the front never lets in what ferry would refuse; and the
requests clients send unchanged (SigV4 in its common shape, bearer tokens) are accepted
by Rust, so the event loop is spared their hashing. Then the same through a real server
on the Rust front: boto3 is served, a revoked key is refused within seconds, a key
without the scope is refused in the path's form."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("botocore")

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from support.dataplane import extension_function
from support.models import scale_model, write_model
from support.server import FerryProcess, wait_until

from ferry.auth import sigv4
from ferry.auth.keys import ADMIN, INFER, SIGV4, TOKEN, add_key, revoke_key, token_hash

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEY_ID = "FKIAEXAMPLE"
TOKEN_VALUE = "ferry_tokenvalue123"
TOKEN_ID = "FKTKEXAMPLE"
SECRETS = {KEY_ID: SECRET}
TOKEN_IDS = {token_hash(TOKEN_VALUE): TOKEN_ID}
PATHS = [
    "/endpoints/scale/invocations",
    "/v1/models/scale:predict",
    "/v1/models/scale/versions/3:predict",
    "/v2/models/m/infer",
    "/endpoints/my%20endpoint/invocations",
    "/endpoints/a~b_c-d.e/invocations",
    "/invocations",
]
AWKWARD_PATHS = ["/v1/models/./m:predict", "/a//b", "/v1/models/x/../m:predict"]

Headers = list[tuple[str, str]]


@pytest.fixture(scope="module")
def rust_verify():
    return extension_function("verify_credentials")


def python_verify(
    method: str, path: str, query: str, headers: Headers, body: bytes, skew: float
) -> str | None:
    """What ferry.auth's HTTP check accepts the request for (None: refused)."""
    authorization = next((v for n, v in headers if n == "authorization"), "")
    if authorization[:7].lower() == "bearer ":
        return TOKEN_IDS.get(token_hash(authorization[7:].strip()))
    try:
        return sigv4.verify(method, path, query, headers, body, SECRETS.get, max_skew_seconds=skew)
    except sigv4.SignatureError:
        return None


def both(
    rust_verify, method: str, path: str, query: str, headers: Headers, body: bytes, skew=300.0
) -> tuple[str | None, str | None]:
    raw = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
    rust = rust_verify(SECRETS, TOKEN_IDS, skew, method, path.encode(), query.encode(), raw, body)
    return rust, python_verify(method, path, query, headers, body, skew)


def signed(path: str, query: str, body: bytes, region: str, extra: dict[str, str]) -> Headers:
    """The headers a server sees for a botocore-signed POST, plus unsigned ones."""
    url = f"http://127.0.0.1:8501{path}" + (f"?{query}" if query else "")
    sent = sigv4.sign_headers("POST", url, body, KEY_ID, SECRET, region, extra)
    headers = [(name.lower(), value) for name, value in sent.items()]
    return [*headers, ("host", urlsplit(url).netloc), ("user-agent", "test")]


def _replace(headers: Headers, name: str, value: str) -> Headers:
    return [(n, value if n == name else v) for n, v in headers]


# Each takes (method, path, query, headers, body) and returns a changed request.
CHANGES: dict[str, Callable] = {
    "none": lambda m, p, q, h, b: (m, p, q, h, b),
    "body": lambda m, p, q, h, b: (m, p, q, h, b + b" "),
    "method": lambda m, p, q, h, b: ("PUT", p, q, h, b),
    "lower-case method": lambda m, p, q, h, b: ("post", p, q, h, b),
    "path": lambda m, p, q, h, b: (m, p + "x", q, h, b),
    "query": lambda m, p, q, h, b: (m, p, q + "&z=1" if q else "z=1", h, b),
    "unsigned target model": lambda m, p, q, h, b: (
        m, p, q, [*h, ("x-amzn-sagemaker-target-model", "other.tar.gz")], b,
    ),
    "unsigned x-amz header": lambda m, p, q, h, b: (m, p, q, [*h, ("x-amz-foo", "1")], b),
    "no date": lambda m, p, q, h, b: (m, p, q, [x for x in h if x[0] != "x-amz-date"], b),
    "another date": lambda m, p, q, h, b: (
        m, p, q, _replace(h, "x-amz-date", "20260101T000000Z"), b,
    ),
    "bad date": lambda m, p, q, h, b: (m, p, q, _replace(h, "x-amz-date", "2026011T000000Z"), b),
    "upper-case signature": lambda m, p, q, h, b: (
        m, p, q, [(n, v.upper() if n == "authorization" else v) for n, v in h], b,
    ),
    "content sha of another body": lambda m, p, q, h, b: (
        m, p, q, [*h, ("x-amz-content-sha256", hashlib.sha256(b + b"x").hexdigest())], b,
    ),
    "second value of a signed header": lambda m, p, q, h, b: (m, p, q, [*h, ("host", "b")], b),
    "service": lambda m, p, q, h, b: (
        m, p, q, [(n, v.replace("/sagemaker/", "/s3/")) for n, v in h], b,
    ),
    "unknown key": lambda m, p, q, h, b: (
        m, p, q, [(n, v.replace(KEY_ID, KEY_ID + "X")) for n, v in h], b,
    ),
    "host not signed": lambda m, p, q, h, b: (
        m, p, q, [(n, v.replace("host;", "")) for n, v in h], b,
    ),
    "non-ASCII unsigned value": lambda m, p, q, h, b: (
        m, p, q, _replace(h, "user-agent", "t\xe9st"), b,
    ),
}  # fmt: skip
# The changes a valid signature survives: botocore upper-cases the method it signs, and
# an unsigned header that steers nothing is not part of the signature.
HARMLESS = {"none", "lower-case method", "non-ASCII unsigned value"}


def test_generated_requests_rust_accepts_python_accepts_and_plain_ones_are_taken(
    rust_verify,
) -> None:
    rng = random.Random(17)
    taken = 0
    for _ in range(600):
        awkward = rng.random() < 0.15
        path = rng.choice(AWKWARD_PATHS if awkward else PATHS)
        query = rng.choice(["", "", "", "b=2&a=1"])
        body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        extra: dict[str, str] = {}
        if rng.random() < 0.5:
            extra["Content-Type"] = rng.choice(["application/json", "text/csv;  charset=utf-8"])
        if rng.random() < 0.3:
            extra["X-Amzn-SageMaker-Custom-Attributes"] = "  a=1,\t  b=2 "
        if rng.random() < 0.2:
            extra["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
        region = rng.choice(["us-east-1", "eu-central-1"])
        change = rng.choice(list(CHANGES))
        request = CHANGES[change](
            "POST", path, query, signed(path, query, body, region, extra), body
        )
        rust, python = both(rust_verify, *request)
        if rust is not None:
            assert python == rust, (change, request)
        if change == "none" and not awkward and not query:
            assert rust == KEY_ID, request  # the plain shape is Rust's to accept
            taken += 1
        elif change not in HARMLESS:
            assert python is None and rust is None, (change, request)
    assert taken > 20


def test_a_signature_outside_the_skew_is_left_to_python(rust_verify) -> None:
    body = b"{}"
    headers = signed(PATHS[0], "", body, "us-east-1", {})
    assert both(rust_verify, "POST", PATHS[0], "", headers, body) == (KEY_ID, KEY_ID)
    assert both(rust_verify, "POST", PATHS[0], "", headers, body, skew=-1.0) == (None, None)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        (f"Bearer {TOKEN_VALUE}", True),
        (f"bearer \t{TOKEN_VALUE}  ", True),
        (f"BEARER {TOKEN_VALUE}", True),
        ("Bearer ferry_unknown", False),
        ("Bearer ", False),
        (f"Bearer {TOKEN_VALUE}\xa0", False),  # Python strips it; Rust leaves that to Python
        (f"Basic {TOKEN_VALUE}", False),
    ],
)
def test_bearer_tokens(rust_verify, value: str, accepted: bool) -> None:
    headers = [("authorization", value), ("host", "x")]
    rust, python = both(rust_verify, "POST", PATHS[1], "", headers, b"{}")
    assert rust == (TOKEN_ID if accepted else None)
    if rust is not None:
        assert python == rust


def test_an_unsigned_request_is_left_to_python(rust_verify) -> None:
    assert both(rust_verify, "POST", PATHS[1], "", [("host", "x")], b"{}") == (None, None)


# -- through a server on the Rust front -------------------------------------------------


class ServedKeys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.kept = add_key(path, SIGV4, "kept")
        self.revoked = add_key(path, SIGV4, "revoked")
        self.infer_only = add_key(path, TOKEN, "infer", scopes=(INFER,))
        self.admin = add_key(path, TOKEN, "admin", scopes=(INFER, ADMIN))


@pytest.fixture
def rust_server(tmp_path: Path, rust_verify) -> Iterator[tuple[FerryProcess, ServedKeys]]:
    root = tmp_path / "models"
    write_model(scale_model(2.0), root / "scale", 1)
    keys = ServedKeys(tmp_path / "keys.json")
    process = FerryProcess(
        [str(root), "--auth", str(keys.path), "--dataplane", "rust"], tmp_path / "ferry.log"
    )
    try:
        process.wait_ready()
        yield process, keys
    finally:
        assert process.stop() == 0


def _runtime(server: FerryProcess, key_id: str, secret: str):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def _invoke(client) -> int:
    answer = client.invoke_endpoint(
        EndpointName="scale",
        Body=b'{"instances": [[1.0, 2.0, 3.0, 4.0]]}',
        ContentType="application/json",
    )
    return answer["ResponseMetadata"]["HTTPStatusCode"]


def test_boto3_is_served_and_a_revoked_key_refused_within_seconds(rust_server) -> None:
    process, keys = rust_server
    kept = _runtime(process, keys.kept.entry.id, keys.kept.secret)
    assert _invoke(kept) == 200
    client = _runtime(process, keys.revoked.entry.id, keys.revoked.secret)
    assert _invoke(client) == 200
    revoke_key(keys.path, keys.revoked.entry.id)

    def refused() -> bool:
        try:
            _invoke(client)
        except ClientError as exc:
            return exc.response["Error"]["Code"] == "UnrecognizedClientException"
        return False

    wait_until(refused, 10, interval=0.25, message="the revoked key to be refused")
    before = _front_verified(process, keys)
    for _ in range(3):
        assert _invoke(kept) == 200
    # The three requests and the metrics read itself were verified by the front.
    assert _front_verified(process, keys) == before + 4


def _front_verified(process: FerryProcess, keys: ServedKeys) -> float:
    bearer = {"Authorization": f"Bearer {keys.admin.secret}"}
    text = process.get("/monitoring/prometheus/metrics", headers=bearer).text
    return float(re.search(r"^ferry_auth_front_verified_total (\S+)$", text, re.M)[1])


def test_a_verified_key_without_the_scope_is_refused_in_the_paths_form(rust_server) -> None:
    process, keys = rust_server
    bearer = {"Authorization": f"Bearer {keys.infer_only.secret}"}
    served = process.post(
        "/v1/models/scale:predict", json={"instances": [[1.0, 2.0, 3.0, 4.0]]}, headers=bearer
    )
    assert served.status_code == 200, served.text
    refused = process.post("/v2/repository/models/scale/unload", headers=bearer)
    assert refused.status_code == 403
    assert "lacks the 'admin' scope" in refused.json()["error"]
    assert (
        process.post(
            "/v1/models/scale:predict", json={"instances": [[1.0, 2.0, 3.0, 4.0]]}
        ).status_code
        == 403
    )
