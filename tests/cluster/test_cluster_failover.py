"""Three ferry replicas behind HAProxy under wrk load: a replica killed outright costs
no request the balancer can retry, and a rolling restart (SIGTERM, drain, start, one at
a time) fails no request, even through a balancer that never retries.

See tests/support/cluster.py for the topology and docs/cluster.md for what each check
shows. Numbers are printed (`pytest -s`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from support.cluster import (
    Cluster,
    balancer_log_size,
    cluster_or_skip,
    cut_off_responses,
    requests_sent,
    retried,
    wait_for,
)

pytestmark = pytest.mark.cluster

# The replicas' readiness grace: HAProxy checks every 200 ms and takes a replica out
# after 2 failed checks, so it stops sending about 0.4-0.6 s after readiness turns 503;
# 2 s leaves a wide margin on a busy machine before the listeners close.
GRACE_S = 2.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    grace = ("--drain_grace_seconds", str(GRACE_S))
    with cluster_or_skip(tmp_path_factory.mktemp("cluster"), ferry_args=grace) as built:
        yield built


def test_sigkill_of_a_replica_under_load_loses_no_request_the_balancer_can_retry(
    cluster: Cluster,
) -> None:
    """A killed replica drops the requests it holds (connections reset) and refuses new
    ones; HAProxy resends each on another replica and its checks take the replica out.
    What no balancer can resend is a request whose response had begun (status and
    headers forwarded, then the connection cut): HAProxy logs those with termination
    state SD. So every failure wrk (the client) sees must be one of those, from the
    victim, and there can be at most one per connection it held; in practice there are
    0 (about one kill in five cuts one response off here)."""
    connections = 16
    victim = cluster.replicas[1]
    retries_before, log_start = retried(cluster), balancer_log_size(cluster)
    load = cluster.wrk(connections=connections, duration_s=5)
    time.sleep(1.5)
    sent_before_kill = requests_sent(cluster)[victim.name]
    assert cluster.stop_replica(victim, signal.SIGKILL) == -signal.SIGKILL
    result = load.result()
    resent = retried(cluster) - retries_before
    cut_off = cut_off_responses(cluster, log_start)
    print(
        f"\nSIGKILL under load: {result.errors} failed of {result.requests}; "
        f"resent by the balancer: {resent}; responses cut off: {len(cut_off)}"
    )
    assert sent_before_kill > 0  # the victim was taking traffic when it died
    assert result.requests > 0
    assert result.detail["connect"] == result.detail["status"] == 0, result
    assert result.errors == len(cut_off), (result, cut_off)
    assert all(f" ferry/{victim.name} " in line for line in cut_off), cut_off
    assert len(cut_off) <= connections
    cluster.start_replica(victim)
    cluster.wait_balanced(len(cluster.replicas))


def test_a_rolling_restart_under_load_fails_no_request(cluster: Cluster) -> None:
    """SIGTERM each replica in turn, wait for its drain and exit, start it again and
    wait until the balancer has it back. Two clients run throughout: one through the
    retrying frontend, one through the frontend that never retries (as kube-proxy), where
    zero failures are ferry's own doing: readiness turns 503 at SIGTERM, the listeners
    stay open for --drain_grace_seconds, and only then does ferry stop taking requests."""
    retrying = cluster.wrk(connections=8, duration_s=90)
    plain = cluster.wrk(connections=8, duration_s=90, retrying=False)
    time.sleep(0.5)
    for replica in cluster.replicas:
        old_pid = replica.process.pid
        stopped = time.monotonic()
        assert cluster.stop_replica(replica, signal.SIGTERM) == 0, cluster.log_tail(replica)
        drain_s = time.monotonic() - stopped
        assert drain_s >= GRACE_S  # it served on through the grace
        served = requests_sent(cluster)[replica.name]
        cluster.start_replica(replica)
        assert replica.process.pid != old_pid
        cluster.wait_balanced(len(cluster.replicas))
        # Back in rotation and taking traffic again before the next one goes.
        wait_for(lambda r=replica, s=served: requests_sent(cluster)[r.name] > s, 10, "traffic")
        print(f"\n{replica.name}: SIGTERM to exit {drain_s:.1f}s")
    through_retries, through_plain = retrying.stop(), plain.stop()
    print(f"rolling restart: retrying {through_retries}; plain {through_plain}")
    assert through_retries.requests > 0 and through_plain.requests > 0
    assert through_retries.errors == 0, through_retries
    assert through_plain.errors == 0, through_plain
