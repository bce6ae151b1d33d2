"""A runtime seen through Triton's `reshape`: clients send and receive a tensor in the
shape config.pbtxt declares (`dims`), the model takes and gives the reshape's shape.

Triton reshapes in the server, so a model whose input is [1, 16] can be fed [16]; this
wrapper does the same around any loaded runtime: its signature shows the declared dims
(after the batch dimension when the model is batched), and `run` reshapes each such
input before the model and each such output after it. A reshape never copies (numpy
views), and the element counts are checked once at load (`ReshapedRuntime.__init__`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ferry.errors import InvalidArgument
from ferry.runtimes.base import Runtime
from ferry.tensors import Signature, TensorSpec


class ReshapedRuntime(Runtime):
    """`inner` with the tensors in `inputs` / `outputs` (name -> declared dims, without the
    batch dimension) shown and exchanged in their declared shape. Owns `inner`."""

    def __init__(
        self,
        inner: Runtime,
        inputs: dict[str, tuple[int, ...]],
        outputs: dict[str, tuple[int, ...]],
        batched: bool,
    ) -> None:
        super().__init__(inner.version_dir, inner.options)
        self.inner = inner
        self.format_name = inner.format_name
        self.model_options = inner.model_options
        self.consent = inner.consent
        self._inputs, self._outputs, self._batched = inputs, outputs, batched
        self._signatures = {
            name: self._declared(signature) for name, signature in inner.signatures.items()
        }

    @classmethod
    def can_load(cls, version_dir) -> bool:
        return False  # built around a loaded runtime, never chosen for a folder

    def load(self) -> None:
        """The inner runtime is loaded already."""

    @property
    def signatures(self) -> dict[str, Signature]:
        return self._signatures

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        model_specs = self.inner.signatures[signature_name].inputs
        model_inputs = {
            name: self._to(array, model_specs[name].shape) if name in self._inputs else array
            for name, array in inputs.items()
        }
        outputs = self.inner.run(signature_name, model_inputs)
        return {
            name: self._to(
                array, (-1, *self._outputs[name]) if self._batched else self._outputs[name]
            )
            if name in self._outputs
            else array
            for name, array in outputs.items()
        }

    def unload(self) -> None:
        self.inner.unload()

    def _to(self, array: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
        if shape is None:
            return array
        target = list(shape)
        if self._batched:
            target[0] = array.shape[0] if array.ndim else 1
        try:
            return array.reshape(target)
        except ValueError:
            raise InvalidArgument(
                f"a tensor of shape {list(array.shape)} cannot be reshaped to {target}"
            ) from None

    def _declared(self, signature: Signature) -> Signature:
        def shown(specs: dict[str, TensorSpec], declared: dict[str, tuple[int, ...]]):
            out = {}
            for name, spec in specs.items():
                if name in declared:
                    dims = declared[name]
                    shape = (-1, *dims) if self._batched else dims
                    _check_count(name, spec.shape, shape, self._batched)
                    spec = dataclasses.replace(spec, shape=tuple(shape))
                out[name] = spec
            return out

        return dataclasses.replace(
            signature,
            inputs=shown(signature.inputs, self._inputs),
            outputs=shown(signature.outputs, self._outputs),
        )


def _check_count(
    name: str, model: tuple[int, ...] | None, declared: tuple[int, ...], batched: bool
) -> None:
    """Refuse a reshape whose element count differs from the declared dims' (when both
    are fixed): Triton's load fails the same way."""
    if model is None:
        return
    start = 1 if batched else 0
    left, right = model[start:], declared[start:]
    if -1 in left or -1 in right:
        return
    if math.prod(left) != math.prod(right):
        raise InvalidArgument(
            f"tensor '{name}': the reshape {list(left)} has {math.prod(left)} elements but "
            f"its dims {list(right)} have {math.prod(right)}"
        )
