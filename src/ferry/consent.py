"""The operator's consent to run a model's code or unpickle its files.

Importing a `model.py` or SageMaker's `code/inference.py`, unpickling a `model.joblib`,
a Keras Lambda layer's bytecode or an AOTInductor library in a `.pt2` all run code with
the server's permissions. Whoever can write to a model folder, or point a reload at a
folder of their choosing, must not be able to grant that: only the person who starts
the server can, with `ferry serve --allow_code MODEL[,MODEL]` / `--allow_pickle ...`
(`'*'`: every model the operator configured), or in SageMaker mode the environment
variables FERRY_ALLOW_CODE / FERRY_ALLOW_PICKLE (SageMaker's deployer sets the
container's environment, so it speaks for the operator).

A model configured by a network request (TF Serving's HandleReloadConfigRequest) never
gets consent, whatever the flags say: its `ModelSpec.trusted` is False, and
`ExecutionConsent.for_model` grants it nothing. Every refusal is a load failure whose
message names the flag to pass; the messages live here so that every loader says the
same thing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ferry.errors import FailedPrecondition

# `--allow_code '*'`: every model the operator configured (never a network-configured one).
ALL_MODELS = "*"
CODE_FLAG = "--allow_code"
PICKLE_FLAG = "--allow_pickle"
CODE_ENV = "FERRY_ALLOW_CODE"
PICKLE_ENV = "FERRY_ALLOW_PICKLE"


class CodeNotAllowed(FailedPrecondition):
    """A model holds code (model.py, inference.py, a Lambda layer, a compiled library) and
    the operator did not allow running it."""


class PickleNotAllowed(FailedPrecondition):
    """A model holds pickled objects and the operator did not allow unpickling them."""


def model_names(values: Iterable[str]) -> frozenset[str]:
    """The model names of repeatable, comma-separated flag values (blank items dropped).

    Raises ValueError for a name that mixes `*` with other characters (`m*`): the flag
    takes exact names or `*` alone, never patterns.
    """
    names = {item.strip() for value in values for item in value.split(",")}
    names.discard("")
    patterns = sorted(n for n in names if ALL_MODELS in n and n != ALL_MODELS)
    if patterns:
        raise ValueError(f"model names are exact, or {ALL_MODELS!r} alone; not {patterns}")
    return frozenset(names)


@dataclass(frozen=True)
class ModelConsent:
    """What one model may do at load, as its runtime sees it. The default allows nothing.

    `trusted` is False for a model configured by a network request; such a model is
    refused with a message saying why the flags do not apply to it.
    """

    model: str = ""
    code: bool = False
    pickle: bool = False
    trusted: bool = True

    def require_code(self, what: str) -> None:
        """Raise CodeNotAllowed unless the operator allowed this model's code. `what`
        names the code, e.g. "model.py is Python code"."""
        if not self.code:
            raise CodeNotAllowed(self._refusal(what, "code", CODE_FLAG, CODE_ENV))

    def require_pickle(self, what: str, safer: str = "") -> None:
        """Raise PickleNotAllowed unless the operator allowed unpickling this model's
        files. `what` names the pickle; `safer` is an alternative to suggest."""
        if not self.pickle:
            message = self._refusal(what, "unpickles", PICKLE_FLAG, PICKLE_ENV)
            raise PickleNotAllowed(f"{message}. {safer}" if safer else message)

    def _refusal(self, what: str, kind: str, flag: str, env: str) -> str:
        action = "runs a model's code" if kind == "code" else "unpickles a model's files"
        name = self.model or "MODEL"
        if name == ALL_MODELS:
            name = f"'{ALL_MODELS}'"  # as a shell needs it
        if not self.trusted:
            return (
                f"{what}; ferry {action} only when the operator allows it, and model "
                f"{name} was configured by a network request (ReloadConfigRequest), which "
                f"never gets that consent: configure it when starting the server (ROOT or "
                f"--model_config_file) and pass ferry serve {flag} {name}"
            )
        return (
            f"{what}; ferry {action} only when the operator allows it: "
            f"ferry serve {flag} {name} (in SageMaker mode: {env}={name})"
        )


@dataclass(frozen=True)
class ExecutionConsent:
    """The models whose code may run (`code`) and whose files may be unpickled
    (`pickle`), by exact name or `*`; given by the operator at start, never changed."""

    code: frozenset[str] = frozenset()
    pickle: frozenset[str] = frozenset()

    @classmethod
    def from_flags(cls, code: Iterable[str] = (), pickle: Iterable[str] = ()) -> ExecutionConsent:
        """From repeatable, comma-separated flag values; ValueError for a bad name."""
        return cls(model_names(code), model_names(pickle))

    def allows_code(self, model: str) -> bool:
        return ALL_MODELS in self.code or model in self.code

    def allows_pickle(self, model: str) -> bool:
        return ALL_MODELS in self.pickle or model in self.pickle

    def for_model(self, model: str, trusted: bool) -> ModelConsent:
        """One model's consent; nothing at all for a model configured over the network."""
        return ModelConsent(
            model=model,
            code=trusted and self.allows_code(model),
            pickle=trusted and self.allows_pickle(model),
            trusted=trusted,
        )

    def describe(self) -> str:
        """For the start-up log: who may do what."""
        code = ",".join(sorted(self.code)) or "none"
        pickle = ",".join(sorted(self.pickle)) or "none"
        return f"code: {code}; pickle: {pickle}"
