"""Triton's per-model `config.pbtxt`, read as Triton reads it, turned into ferry's settings.

A Triton model repository is served as it is: a model folder's `config.pbtxt`
(Triton's ModelConfig text format) is parsed with protobuf's text-format parser over
ferry's copy of Triton's messages (protos/inference/model_config.proto), so any file
Triton accepts parses here and a broken one fails with protobuf's line and column.
The same message arrives as JSON in a load request's `config` parameter (Triton's
config override), parsed by `parse_json_config`.

`TritonModelConfig` is the one result the manager consumes: the message as read (what
`/v2/models/{m}/config` reports back), the label lists of its outputs (the
classification extension), and what it means for ferry: the batch dimension, the
batching parameters, the version policy, and a check of the model file against it.
Fields ferry cannot honour are named in one warning line each, never ignored in
silence; docs/triton.md lists which field maps where.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ferry.batching import BatchingConfig
from ferry.codecs.v2 import config_datatype
from ferry.errors import InvalidArgument
from ferry.protos import message_class, pool
from ferry.repository.policy import AllVersions, Latest, Specific, VersionPolicy
from ferry.tensors import Signature, TensorSpec

log = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"
# `ferry serve`'s bounds on what a model config makes ferry read (TritonConfigLimits).
MAX_CONFIG_BYTES_FLAG = "--max_triton_config_bytes"
MAX_LABEL_FILE_BYTES_FLAG = "--max_triton_label_file_bytes"
DEFAULT_MAX_CONFIG_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_LABEL_FILE_BYTES = 16 * 1024 * 1024

# Triton's platform and backend names -> the ferry runtime platform that serves them.
_RUNTIME_PLATFORMS = {
    "onnxruntime_onnx": "onnx",
    "onnxruntime": "onnx",
    "tensorflow_savedmodel": "tensorflow_savedmodel",
    "tensorflow": "tensorflow_savedmodel",
    "pytorch_libtorch": "pytorch",
    "pytorch": "pytorch",
    "python": "python",
}
# Top-level ModelConfig fields ferry applies or reports; any other that is set gets a
# warning naming it.
_APPLIED_FIELDS = frozenset(
    {
        "name",
        "platform",
        "backend",
        "runtime",
        "version_policy",
        "max_batch_size",
        "input",
        "output",
        "dynamic_batching",
        "instance_group",
        "default_model_filename",
        "model_warmup",
        "parameters",
    }
)
_APPLIED_INPUT_FIELDS = frozenset({"name", "data_type", "format", "dims", "reshape"})
_APPLIED_OUTPUT_FIELDS = frozenset({"name", "data_type", "dims", "reshape", "label_filename"})
_APPLIED_BATCHING_FIELDS = frozenset(
    {"preferred_batch_size", "max_queue_delay_microseconds", "default_queue_policy"}
)
_APPLIED_QUEUE_FIELDS = frozenset({"max_queue_size"})
# Schedulers a model cannot be served without.
_REFUSED_SCHEDULERS = {"sequence_batching": "sequence batcher", "ensemble_scheduling": "ensembles"}


class TritonConfigError(InvalidArgument):
    """A config.pbtxt (or a config override) is unreadable, malformed or contradicts the
    model; the message says which and where, in Triton's words where Triton has them."""


@dataclass(frozen=True)
class TritonConfigLimits:
    """How much a model config may make ferry read. A config need not be the operator's:
    a load request's override arrives over the network (with --enable_model_control),
    an uploaded folder may hold a config.pbtxt, and either names label files that are
    then read into memory. Each bound is a `ferry serve` flag (the *_FLAG names above)."""

    # A config.pbtxt, or a load request's JSON override, at most.
    config_bytes: int = DEFAULT_MAX_CONFIG_BYTES
    # One output's label_filename (a file of the model folder itself), at most.
    label_file_bytes: int = DEFAULT_MAX_LABEL_FILE_BYTES


def model_config_message() -> Message:
    return message_class("inference.ModelConfig")()


@dataclass(frozen=True)
class TritonModelConfig:
    """One model's Triton configuration and what it means for ferry. Immutable.

    `message` is the ModelConfig as read (treat as read-only); `labels` the lines of each
    output's `label_filename`; `source` where it came from, for messages.
    """

    message: Message
    source: str
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def max_batch_size(self) -> int:
        return self.message.max_batch_size

    @property
    def runtime_platform(self) -> str:
        """The ferry platform of the declared platform/backend ("" when neither is set)."""
        declared = self.message.platform or self.message.backend
        if not declared:
            return ""
        try:
            return _RUNTIME_PLATFORMS[declared]
        except KeyError:
            raise TritonConfigError(
                f"{self.source}: ferry has no runtime for Triton's "
                f"{'platform' if self.message.platform else 'backend'} '{declared}'; it "
                f"serves {', '.join(sorted(_RUNTIME_PLATFORMS))}"
            ) from None

    @property
    def batch_dimension(self) -> str:
        """ferry's batch_dimension: max_batch_size 0 means the dims are the whole shape."""
        return "dynamic" if self.max_batch_size > 0 else "none"

    def batching(self, base: BatchingConfig) -> BatchingConfig:
        """`base` with Triton's scheduling applied: dynamic batching up to max_batch_size,
        waiting max_queue_delay_microseconds, queueing at most max_queue_size requests;
        without `dynamic_batching` every request runs alone, as in Triton."""
        config = self.message
        threads = sum(group.count or 1 for group in config.instance_group) or 1
        if config.max_batch_size <= 0 or not config.HasField("dynamic_batching"):
            return dataclasses.replace(base, enabled=False, num_batch_threads=threads)
        batching = config.dynamic_batching
        max_batch = config.max_batch_size
        queue_size = batching.default_queue_policy.max_queue_size
        enqueued = max(1, -(-queue_size // max_batch)) if queue_size else base.max_enqueued_batches
        return dataclasses.replace(
            base,
            max_batch_size=max_batch,
            batch_timeout_micros=batching.max_queue_delay_microseconds,
            max_enqueued_batches=enqueued,
            num_batch_threads=threads,
            # Triton's preferred sizes are preferences, not padding targets: ferry's
            # allowed_batch_sizes would pad every batch, so they are reported, not applied.
            allowed_batch_sizes=(),
        )

    def policy(self) -> VersionPolicy | None:
        """The version policy it sets, None when it sets none (the server's applies)."""
        config = self.message
        if not config.HasField("version_policy"):
            return None
        choice = config.version_policy.WhichOneof("policy_choice")
        if choice == "all":
            return AllVersions()
        if choice == "specific":
            versions = config.version_policy.specific.versions
            if not versions:
                raise TritonConfigError(
                    f"{self.source}: a 'specific' version policy needs versions"
                )
            return Specific(frozenset(versions))
        if choice == "latest":
            return Latest(config.version_policy.latest.num_versions or 1)
        return None

    def reshapes(self) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
        """(inputs, outputs): the declared `dims` of each tensor with a `reshape`, keyed by
        name; the model's own shape is the reshape's (both without the batch dimension)."""
        return (
            {t.name: tuple(t.dims) for t in self.message.input if t.HasField("reshape")},
            {t.name: tuple(t.dims) for t in self.message.output if t.HasField("reshape")},
        )

    def check_against(self, model: str, signature: Signature) -> None:
        """Refuse a config that contradicts the model file (Triton's onnxruntime backend
        words): an input or output the model lacks, a count, datatype or shape that
        differs. Fields left out are filled from the model when reported."""
        config = self.message
        _check_tensors(model, "input", config.input, signature.inputs, config.max_batch_size)
        _check_tensors(model, "output", config.output, signature.outputs, config.max_batch_size)
        if config.max_batch_size > 0 and not all(
            s.has_batch_dimension for s in signature.inputs.values()
        ):
            raise TritonConfigError(
                f"autofill failed for model '{model}': model does not support batching while "
                "non-zero max_batch_size is specified"
            )


def _check_tensors(
    model: str,
    kind: str,
    declared: list[Message],
    actual: dict[str, TensorSpec],
    max_batch_size: int,
) -> None:
    if not declared:
        return  # auto-completed from the model
    if kind == "input" and len(declared) != len(actual):
        raise TritonConfigError(
            f"unable to load model '{model}', configuration expects {len(declared)} inputs, "
            f"model provides {len(actual)}"
        )
    for tensor in declared:
        spec = actual.get(tensor.name)
        if spec is None:
            raise TritonConfigError(
                f"unexpected inference {kind} '{tensor.name}', allowed {kind}s are: "
                f"{', '.join(actual)}"
            )
        expected_type = _enum_name("inference.DataType", tensor.data_type)
        if tensor.data_type and expected_type != config_datatype(spec.dtype):
            raise TritonConfigError(
                f"unable to load model '{model}', configuration expects datatype "
                f"{expected_type} for {kind} '{tensor.name}', model provides "
                f"{config_datatype(spec.dtype)}"
            )
        if tensor.dims and spec.shape is not None:
            _check_dims(model, tensor, spec, max_batch_size)


def _check_dims(model: str, tensor: Message, spec: TensorSpec, max_batch_size: int) -> None:
    # With a reshape, the model's tensor has the reshape's shape; clients use `dims`.
    dims = tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims
    complete = ([-1] if max_batch_size > 0 else []) + list(dims)
    model_shape = list(spec.shape or ())
    fits = len(complete) == len(model_shape) and all(
        c == -1 or m == -1 or c == m for c, m in zip(complete, model_shape, strict=True)
    )
    if fits:
        return
    batch_note = (
        "an initial batch dimension because max_batch_size > 0 followed by the explicit "
        "tensor shape, making complete shape"
        if max_batch_size > 0
        else "complete shape"
    )
    raise TritonConfigError(
        f"model '{model}', tensor '{tensor.name}': the model expects {len(model_shape)} "
        f"dimensions (shape {_shape(model_shape)}) but the model configuration specifies "
        f"{len(complete)} dimensions ({batch_note} {_shape(complete)})"
    )


def _shape(dims: list[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _enum_name(enum: str, number: int) -> str:
    return pool().FindEnumTypeByName(enum).values_by_number[number].name


# -- reading ------------------------------------------------------------------------------


def parse_text_config(text: str, source: str) -> Message:
    """A config.pbtxt's text as a ModelConfig message; TritonConfigError with protobuf's
    line and column when it does not parse."""
    return _parsed(text_format.Parse, text, f"{source}: failed to parse the model configuration")


def parse_json_config(
    text: str, model: str, limits: TritonConfigLimits = TritonConfigLimits()
) -> Message:
    """A load request's `config` parameter (JSON ModelConfig, Triton's override), refused
    over `limits.config_bytes` before it is parsed."""
    what = f"failed to load '{model}', the config override"
    _check_size(what, len(text.encode()), limits.config_bytes, MAX_CONFIG_BYTES_FLAG)
    return _parsed(
        json_format.Parse, text, f"failed to load '{model}', failed to parse the config override"
    )


def _parsed(parse: Callable[..., Message], text: str, failure: str) -> Message:
    """`text` parsed by `parse` (protobuf's text or JSON parser) into a new ModelConfig;
    a TritonConfigError that starts with `failure` and ends with the parser's reason."""
    message = model_config_message()
    try:
        parse(text, message, descriptor_pool=pool())
    except (text_format.ParseError, json_format.ParseError) as exc:
        raise TritonConfigError(f"{failure}: {exc}") from None
    return message


def _check_size(what: str, size: int, limit: int, flag: str) -> None:
    """Refuse `size` bytes of `what` over `limit`, naming the flag that sets it."""
    if size > limit:
        raise TritonConfigError(f"{what}: {size} bytes, more than {flag} ({limit})")


def read_model_config(
    model_dir: Path | None, model: str, limits: TritonConfigLimits = TritonConfigLimits()
) -> TritonModelConfig | None:
    """The model folder's config.pbtxt, checked and with its labels; None without one.

    Cached by the file's size and modification time, so polling re-reads a changed file
    only, and each warning is logged once per content.
    """
    if model_dir is None:
        return None
    path = model_dir / CONFIG_FILE
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (stat.st_size, stat.st_mtime_ns, model, limits)
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    _check_size(str(path), stat.st_size, limits.config_bytes, MAX_CONFIG_BYTES_FLAG)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TritonConfigError(f"cannot read {path}: {exc}") from None
    config = build_config(parse_text_config(text, str(path)), model, model_dir, str(path), limits)
    _CACHE[path] = (key, config)
    return config


# The last config read from each config.pbtxt path, with the file state it was read at
# (one entry per model folder; only the watcher and loads read it).
_CACHE: dict[Path, tuple[tuple, TritonModelConfig]] = {}


def config_fingerprint(model_dir: Path | None) -> tuple:
    """What identifies the config file's content (a change reloads the versions)."""
    if model_dir is None:
        return ()
    try:
        stat = (model_dir / CONFIG_FILE).stat()
    except OSError:
        return ()
    return (stat.st_size, stat.st_mtime_ns)


def build_config(
    message: Message,
    model: str,
    model_dir: Path | None,
    source: str,
    limits: TritonConfigLimits = TritonConfigLimits(),
) -> TritonModelConfig:
    """Check a parsed ModelConfig's name, read its labels (each up to
    `limits.label_file_bytes`) and warn about every field ferry does not apply."""
    if message.name and message.name != model:
        raise TritonConfigError(
            f"unexpected directory name '{model}' for model '{message.name}', directory name "
            "must equal model name"
        )
    if message.max_batch_size < 0:
        raise TritonConfigError(f"{source}: max_batch_size must be >= 0")
    scheduler = message.WhichOneof("scheduling_choice")
    if scheduler in _REFUSED_SCHEDULERS:
        # Not a warning: such a model gives wrong answers (or none) without its scheduler.
        raise TritonConfigError(
            f"{source}: ferry does not implement Triton's {_REFUSED_SCHEDULERS[scheduler]} "
            f"('{scheduler}'); model '{model}' cannot be served"
        )
    labels = {
        output.name: _read_labels(model_dir, output.label_filename, source, limits)
        for output in message.output
        if output.label_filename
    }
    warnings = tuple(_unapplied(message))
    for warning in warnings:
        log.warning("model %s: %s: %s", model, source, warning)
    return TritonModelConfig(message, source, labels, warnings)


def _read_labels(
    model_dir: Path | None, name: str, source: str, limits: TritonConfigLimits
) -> tuple[str, ...]:
    if model_dir is None:
        raise TritonConfigError(f"{source}: label_filename '{name}' has no model folder")
    path = (model_dir / name).resolve()
    if path.parent != model_dir.resolve() or not path.is_file():
        raise TritonConfigError(
            f"{source}: label_filename '{name}' must be a file in the model folder {model_dir}"
        )
    size = path.stat().st_size
    _check_size(f"{source}: {path}", size, limits.label_file_bytes, MAX_LABEL_FILE_BYTES_FLAG)
    return tuple(path.read_text(errors="replace").splitlines())


def _unapplied(message: Message) -> list[str]:
    """One line per field that is set but that ferry does not apply."""
    found = [
        f"'{f.name}' is not supported by ferry and is ignored"
        for f, _ in message.ListFields()
        if f.name not in _APPLIED_FIELDS
    ]
    for kind, tensors, applied in (
        ("input", message.input, _APPLIED_INPUT_FIELDS),
        ("output", message.output, _APPLIED_OUTPUT_FIELDS),
    ):
        for tensor in tensors:
            found += [
                f"{kind} '{tensor.name}': '{f.name}' is not supported by ferry and is ignored"
                for f, _ in tensor.ListFields()
                if f.name not in applied
            ]
    if message.HasField("dynamic_batching"):
        batching = message.dynamic_batching
        found += [
            f"dynamic_batching: '{f.name}' is not supported by ferry and is ignored"
            for f, _ in batching.ListFields()
            if f.name not in _APPLIED_BATCHING_FIELDS
        ]
        found += [
            f"dynamic_batching.default_queue_policy: '{f.name}' is not supported by ferry "
            "and is ignored"
            for f, _ in batching.default_queue_policy.ListFields()
            if f.name not in _APPLIED_QUEUE_FIELDS
        ]
        if batching.preferred_batch_size:
            found.append(
                "dynamic_batching: 'preferred_batch_size' is reported but not applied (ferry "
                "runs whatever is queued, up to max_batch_size)"
            )
        if message.max_batch_size == 0:
            found.append("dynamic_batching is ignored because max_batch_size is 0")
    if message.model_warmup:
        found.append(
            "'model_warmup' samples are not used: ferry warms each version up with inputs "
            "it generates from the signature (--enable_model_warmup)"
        )
    if message.parameters:
        found.append("'parameters' are reported but not passed to the runtime")
    for group in message.instance_group:
        if group.kind == 1:  # KIND_GPU
            found.append(f"instance_group '{group.name}': KIND_GPU runs on the CPU runtime")
    return found


def reported_config(config: TritonModelConfig | None) -> dict:
    """The config as Triton's JSON: field names as in the .proto, enums by name, every
    scalar and list printed even when empty (as Triton does), 64-bit integers as
    numbers (protobuf's JSON writes them as strings; Triton's clients read numbers).
    The caller fills what Triton auto-completes."""
    if config is None:
        return {}
    as_dict = json_format.MessageToDict(
        config.message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return _numbers(as_dict, config.message.DESCRIPTOR)


_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _numbers(value: dict, descriptor) -> dict:
    for name, item in value.items():
        fd = descriptor.fields_by_name.get(name)
        if fd is None:
            continue
        if fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                value_fd = fd.message_type.fields_by_name["value"]
                if value_fd.message_type is not None:
                    for sub in item.values():
                        _numbers(sub, value_fd.message_type)
            elif isinstance(item, list):
                for sub in item:
                    _numbers(sub, fd.message_type)
            else:
                _numbers(item, fd.message_type)
        elif fd.type in _INT64_TYPES:
            value[name] = [int(v) for v in item] if isinstance(item, list) else int(item)
    return value
