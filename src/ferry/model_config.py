"""What to serve: model specs, from a root folder, TF Serving flags or its config files.

Parses TF Serving's text formats (`--model_config_file`, `--batching_parameters_file`)
with protobuf's own text-format parser over ferry's copies of TF Serving's
messages, so any file TF Serving accepts is read the same way, and errors carry
protobuf's line/column message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from ferry.batching import BatchingConfig
from ferry.protos import message_class, pool
from ferry.repository.location import BasePath, parse_base_path
from ferry.repository.policy import AllVersions, Latest, Specific, VersionPolicy
from ferry.tfserving_messages import CONFIG_NOT_PARSED

# TF Serving's binary serves a model called "default" when only a base path is given.
DEFAULT_MODEL_NAME = "default"
# Per-model batching override, looked for in the version folder, then the model folder.
BATCHING_FILE_NAME = "batching_params.pbtxt"


class ConfigError(ValueError):
    """A configuration file or flag combination is invalid; the message says where."""


@dataclass(frozen=True)
class ModelSpec:
    """One model to serve: where its versions live and how to choose among them.

    `trusted`: the operator configured it (a root folder, a flag, a config file read at
    start or on a poll); False for a model a network request configured (TF Serving's
    ReloadConfigRequest), which never gets consent to run code or unpickle.
    """

    name: str
    base_path: BasePath  # a local folder or an s3:// URL
    platform: str = ""
    policy: VersionPolicy = field(default_factory=Latest)
    labels: dict[str, int] = field(default_factory=dict)
    trusted: bool = True


def parse_model_config(text: str, relative_to: Path, *, trusted: bool = True) -> list[ModelSpec]:
    """Parse a `model_config_list` text proto; relative base paths resolve against
    `relative_to`. `trusted=False` for text that came over the network (see ModelSpec)."""
    message = message_class("tensorflow.serving.ModelServerConfig")()
    try:
        text_format.Parse(text, message, descriptor_pool=pool())
    except text_format.ParseError as exc:
        # TF Serving's words (its test harness looks for them in the server's output).
        raise ConfigError(CONFIG_NOT_PARSED.format(detail=exc)) from None
    if message.WhichOneof("config") != "model_config_list":
        raise ConfigError("model config: only model_config_list is supported")
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for config in message.model_config_list.config:
        if not config.name:
            raise ConfigError("model config: every config needs a name")
        if config.name in seen:
            raise ConfigError(f"model config: model {config.name!r} is listed twice")
        if not config.base_path:
            raise ConfigError(f"model config: model {config.name!r} has no base_path")
        seen.add(config.name)
        try:
            base_path = parse_base_path(config.base_path)
        except ValueError as exc:
            raise ConfigError(f"model config: model {config.name!r}: {exc}") from None
        if isinstance(base_path, Path) and not base_path.is_absolute():
            base_path = relative_to / base_path
        specs.append(
            ModelSpec(
                name=config.name,
                base_path=base_path,
                platform=config.model_platform,
                policy=_policy_from_proto(config.model_version_policy),
                labels=dict(config.version_labels),
                trusted=trusted,
            )
        )
    return specs


def load_model_config_file(path: Path) -> list[ModelSpec]:
    """Read and parse a `--model_config_file`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read model config file {path}: {exc}") from None
    return parse_model_config(text, path.resolve().parent)


def _policy_from_proto(policy) -> VersionPolicy:
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return AllVersions()
    if choice == "specific":
        if not policy.specific.versions:
            raise ConfigError("model config: a 'specific' version policy needs versions")
        return Specific(frozenset(policy.specific.versions))
    if choice == "latest":
        return Latest(policy.latest.num_versions or 1)
    return Latest(1)


def parse_batching_parameters(text: str, base: BatchingConfig | None = None) -> BatchingConfig:
    """Parse TF Serving's BatchingParameters text format over `base` (ferry's defaults)."""
    message = message_class("tensorflow.serving.BatchingParameters")()
    try:
        text_format.Parse(text, message, descriptor_pool=pool())
    except text_format.ParseError as exc:
        raise ConfigError(f"batching parameters: {exc}") from None
    base = base or BatchingConfig()
    values = {
        "max_batch_size": base.max_batch_size,
        "batch_timeout_micros": base.batch_timeout_micros,
        "max_enqueued_batches": base.max_enqueued_batches,
        "num_batch_threads": base.num_batch_threads,
    }
    for name in values:
        if message.HasField(name):
            values[name] = getattr(message, name).value
    allowed = tuple(message.allowed_batch_sizes) or base.allowed_batch_sizes
    if message.pad_variable_length_inputs:
        raise ConfigError("batching parameters: pad_variable_length_inputs is not supported")
    try:
        return BatchingConfig(
            enabled=base.enabled,
            allowed_batch_sizes=allowed,
            fill_under_load=base.fill_under_load,
            **values,
        )
    except ValueError as exc:
        raise ConfigError(f"batching parameters: {exc}") from None


def load_batching_file(path: Path, base: BatchingConfig | None = None) -> BatchingConfig:
    """Read and parse a `--batching_parameters_file` (or a per-model override file)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read batching parameters file {path}: {exc}") from None
    return parse_batching_parameters(text, base)


def models_under_root(root: Path) -> list[ModelSpec]:
    """One spec per visible sub-folder of `root` (`ferry serve ROOT`), latest version served."""
    if not root.is_dir():
        raise ConfigError(f"model root {root} is not a directory")
    return [
        ModelSpec(name=entry.name, base_path=entry)
        for entry in sorted(root.iterdir())
        if entry.is_dir() and not entry.name.startswith((".", "_"))
    ]
