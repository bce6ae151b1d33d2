"""Three ferry replicas behind HAProxy, sharing one S3 (moto) with SQS events: a new
version reaches every replica by push, and the balancer spreads load over them all.

The cluster (tests/support/cluster.py, docs/cluster.md) is real: each replica is a
`ferry serve s3://...` in its own network namespace with its own address; HAProxy and
wrk run in a hub namespace. Numbers are printed (`pytest -s`); the benchmark
(`make bench-cluster`) measures them properly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import onnxruntime
import pytest
from support.cluster import (
    MODEL,
    POLL_SECONDS,
    Cluster,
    cluster_or_skip,
    predict_row,
    requests_sent,
)

from ferry.examples import mlp_small

pytestmark = pytest.mark.cluster

# An upload reaches a replica through S3 -> SNS -> its SQS queue -> its long poll, then a
# listing, a 0.2 s settle, the download, the load and the warm-up: about 1-2 s here, more
# on a busy 2-core machine. 10 s leaves room for that and is far below the replicas'
# 60 s poll, so a version that arrives in time came by its event, not by polling.
PROPAGATION_LIMIT_S = 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_or_skip(tmp_path_factory.mktemp("cluster")) as built:
        yield built


def expected_probs(version: int) -> np.ndarray:
    """What mlp_small as uploaded for `version` (weights seeded by it) answers for the
    requests' row, computed here with onnxruntime from the same model."""
    session = onnxruntime.InferenceSession(
        mlp_small(seed=version).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    row = np.asarray([predict_row()], dtype=np.float32)
    return session.run(None, {"x": row})[0][0]


def predict(cluster: Cluster, url: str) -> np.ndarray:
    response = cluster.http.post(
        f"{url}/v1/models/{MODEL}:predict", json={"instances": [predict_row()]}, timeout=10
    )
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"][0], dtype=np.float32)


def test_a_new_version_reaches_every_replica_by_its_event_within_seconds(
    cluster: Cluster,
) -> None:
    assert POLL_SECONDS > 4 * PROPAGATION_LIMIT_S  # arrival in time proves the push
    for replica in cluster.replicas:
        assert cluster.served_versions(replica) == ["1"]
    load = cluster.wrk(connections=8, duration_s=30)
    time.sleep(0.5)
    uploaded = time.monotonic()
    cluster.upload_version(2)
    arrived: dict[str, float] = {}
    while len(arrived) < len(cluster.replicas) and time.monotonic() - uploaded < 20:
        for replica in cluster.replicas:
            if replica.name not in arrived and cluster.version_available(replica, 2):
                arrived[replica.name] = time.monotonic() - uploaded
        time.sleep(0.05)
    result = load.stop()
    print(f"\nversion 2 AVAILABLE after upload (s): {arrived}; load: {result}")
    assert sorted(arrived) == [r.name for r in cluster.replicas], arrived
    assert max(arrived.values()) < PROPAGATION_LIMIT_S, arrived
    assert result.requests > 0
    assert result.errors == 0, result  # the swap under load failed no request
    # Each replica, asked directly, and the balancer now answer with version 2's weights.
    new, old = expected_probs(2), expected_probs(1)
    assert not np.allclose(new, old, atol=1e-4)  # the versions are told apart
    for url in [r.url for r in cluster.replicas] + [cluster.balancer_url]:
        np.testing.assert_allclose(predict(cluster, url), new, rtol=1e-4, atol=1e-5)


def test_the_balancer_spreads_load_over_every_replica(cluster: Cluster) -> None:
    first, others = cluster.replicas[0], cluster.replicas[1:]
    for replica in others:
        cluster.set_in_rotation(replica, False)
    before = requests_sent(cluster)
    alone = cluster.wrk(connections=16, duration_s=3).result()
    middle = requests_sent(cluster)
    for replica in others:
        cluster.set_in_rotation(replica, True)
    cluster.wait_balanced(len(cluster.replicas))
    spread = cluster.wrk(connections=16, duration_s=3).result()
    after = requests_sent(cluster)
    ratio = spread.requests_per_s / alone.requests_per_s
    print(
        f"\n1 replica: {alone.requests_per_s:.0f} req/s, p99 {alone.p99_ms:.1f} ms; "
        f"3 replicas: {spread.requests_per_s:.0f} req/s, p99 {spread.p99_ms:.1f} ms; "
        f"ratio {ratio:.2f} (2 cores shared with HAProxy and wrk bound it)"
    )
    assert alone.errors == spread.errors == 0
    # Out of rotation means no traffic; back in, each takes a fair share (round robin:
    # a third each; a quarter leaves room for the checks' timing).
    assert middle[first.name] - before[first.name] >= alone.requests > 0
    for replica in others:
        assert middle[replica.name] == before[replica.name]
    total = sum(after[r.name] - middle[r.name] for r in cluster.replicas)
    for replica in cluster.replicas:
        share = (after[replica.name] - middle[replica.name]) / total
        assert share > 0.25, (replica.name, share)
