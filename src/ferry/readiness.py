"""When a server is ready for traffic: the one verdict every health API reports.

`/v2/health/ready`, gRPC `ServerReady` and `grpc.health.v1` Check, and SageMaker's
`/ping` all answer from `Readiness` (built by `FerryServer.readiness`), so a Kubernetes
probe, a Triton client and SageMaker never disagree about one server.

Ready means: the first scan of storage was loaded, the server is not draining, and
the configured models serve (`--ready_when`):

* `all` (the default): every configured model has a serving version, at least one
  model is configured. Triton's `--strict-readiness` (on by default) and the SageMaker
  TF Serving container (whose TF Serving exits when any model fails to load) keep a
  server with a broken model out of service too: a probe that passes while a model
  the clients need is missing sends their requests to a server that answers 404.
* `any`: at least one model serves (a server of many independent models that should
  take traffic for those that work).

A server with no model at all is never ready, except a SageMaker multi-model endpoint,
whose models load on request (the container's `/ping` is 200 with none).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ReadyWhen(enum.StrEnum):
    """`--ready_when`: which configured models must serve for the server to be ready."""

    ALL = "all"
    ANY = "any"


class Phase(enum.StrEnum):
    """Where the server is in its life; sent as the `ferry-readiness` header of a 503."""

    STARTING = "starting"  # the first scan of storage is still loading
    MODELS = "models"  # started, but the configured models do not serve as required
    DRAINING = "draining"  # shutting down
    READY = "ready"


READINESS_HEADER = "ferry-readiness"


@dataclass(frozen=True)
class Readiness:
    """The verdict, with the reason shown to an operator when it is "not ready"."""

    phase: Phase
    reason: str = ""

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY


READY = Readiness(Phase.READY)


def models_readiness(serving: dict[str, bool], ready_when: ReadyWhen) -> Readiness:
    """The verdict on the configured models: `serving` maps each model's name to whether
    it has a serving version now."""
    if not serving:
        return Readiness(Phase.MODELS, "no model is configured (the model folders are empty)")
    missing = sorted(name for name, ok in serving.items() if not ok)
    if ready_when is ReadyWhen.ANY:
        if len(missing) < len(serving):
            return READY
        return Readiness(Phase.MODELS, f"no model serves a version ({_names(missing)})")
    if missing:
        return Readiness(
            Phase.MODELS,
            f"{len(missing)} of {len(serving)} models serve no version: {_names(missing)} "
            "(see their status; --ready_when any is ready when one model serves)",
        )
    return READY


def _names(names: list[str], shown: int = 5) -> str:
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
