"""Triton features a V2 request can ask for that ferry does not implement, refused with
an error that names them, so a client learns it at once instead of getting answers
that silently ignore what it asked.

Sequence batching: Triton routes requests with the same `sequence_id` (correlation ID)
to the same model instance and keeps its state between them (`sequence_start`,
`sequence_end`). ferry serves each request on its own, so a stateful model would
answer every request of a sequence as if it were the first.
"""

from __future__ import annotations

from collections.abc import Mapping

from ferry.errors import Unimplemented

SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")
SEQUENCE_UNSUPPORTED = (
    "Sequence batching is not supported by ferry: the request sets {given}, but ferry "
    "serves every request on its own and keeps no state between the requests of a "
    "sequence (see docs/v2.md, what is not implemented)"
)


def refuse_sequence_rest(parameters: dict) -> None:
    """Refuse a REST request whose `parameters` start, continue or end a sequence."""
    given = [key for key in SEQUENCE_PARAMETERS if parameters.get(key) not in (None, 0, "", False)]
    if given:
        raise Unimplemented(SEQUENCE_UNSUPPORTED.format(given=", ".join(given)))


def refuse_sequence_grpc(parameters: Mapping) -> None:
    """The same for a gRPC ModelInferRequest's `parameters` (an InferParameter map)."""
    given = []
    for key in SEQUENCE_PARAMETERS:
        if key in parameters:
            param = parameters[key]
            choice = param.WhichOneof("parameter_choice")
            if choice is not None and getattr(param, choice) not in (0, "", False):
                given.append(key)
    if given:
        raise Unimplemented(SEQUENCE_UNSUPPORTED.format(given=", ".join(given)))
