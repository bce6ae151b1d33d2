"""Production variants of a SageMaker endpoint, as `ferry deploy sagemaker` takes them:
`--variant name=blue,model=s3://.../a.tar.gz,weight=90[,instances=1,instance-type=...]`
(repeatable), `--variants FILE` (a JSON list of objects with the same keys), and the
`--shift blue=50,green=50` of a weight shift.

Parsing is strict and happens before any AWS call, so a typo costs one clear line and
no half-made endpoint. Every error is a ValueError whose text names the variant and key.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# SageMaker's limit on ProductionVariants in one EndpointConfig.
MAX_VARIANTS = 10
# Ten variants of a few keys each fit in far less; a larger file is not a variants file,
# and is refused before it is read.
MAX_VARIANTS_FILE_BYTES = 64 * 1024
# SageMaker's pattern for VariantName.
_VARIANT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_KEYS = ("name", "model", "weight", "instances", "instance-type")
MODEL_URL_SCHEMES = ("s3://", "https://")


@dataclass(frozen=True)
class VariantSpec:
    """One production variant: its model archive (or, multi-model, its S3 prefix), its
    share of traffic (weight / sum of weights) and its instances."""

    name: str
    model_data_url: str
    weight: float
    instance_count: int
    instance_type: str


def parse_variant(text: str, instance_type: str, instances: int) -> VariantSpec:
    """A `--variant` value: comma-separated KEY=VALUE; `instances` and `instance-type`
    default to the command's --instances and --instance-type."""
    fields: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{item!r} is not KEY=VALUE (keys: {', '.join(_KEYS)})")
        if key in fields:
            raise ValueError(f"{key} given twice in {text!r}")
        fields[key] = value.strip()
    return variant_from_mapping(fields, instance_type, instances)


def variant_from_mapping(
    fields: Mapping[str, Any], instance_type: str, instances: int
) -> VariantSpec:
    """A variant from its keys (a `--variant` value or one object of a variants file)."""
    unknown = sorted(set(fields) - set(_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (keys: {', '.join(_KEYS)})")
    name = str(fields.get("name", ""))
    if not _VARIANT_NAME.match(name):
        raise ValueError(
            f"variant name {name!r} must be 1-63 letters, digits and inner hyphens"
            if name
            else "a variant needs name=NAME"
        )
    model = str(fields.get("model", ""))
    if not model.startswith(MODEL_URL_SCHEMES):
        raise ValueError(f"variant {name}: model must be an s3:// (or https://) URL")
    weight = parse_weight(fields.get("weight", 1.0), f"variant {name}")
    count = fields.get("instances", instances)
    try:
        count = int(count)
    except (TypeError, ValueError):
        raise ValueError(f"variant {name}: instances {count!r} is not a whole number") from None
    if count < 1:
        raise ValueError(f"variant {name}: instances must be at least 1")
    kind = str(fields.get("instance-type", instance_type))
    return VariantSpec(name, model, weight, count, kind)


def load_variants_file(path: Path, instance_type: str, instances: int) -> list[VariantSpec]:
    """`--variants FILE`: a JSON list of variant objects."""
    size = path.stat().st_size
    if size > MAX_VARIANTS_FILE_BYTES:
        limit = MAX_VARIANTS_FILE_BYTES
        raise ValueError(f"{path} is {size} bytes; a variants file is at most {limit}")
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(document, list) or not all(isinstance(v, dict) for v in document):
        raise ValueError(f"{path} must hold a JSON list of variant objects")
    return [variant_from_mapping(v, instance_type, instances) for v in document]


def check_variants(variants: Iterable[VariantSpec]) -> list[VariantSpec]:
    """The variants of one config: 1 to MAX_VARIANTS, unique names, some traffic."""
    variants = list(variants)
    if not 1 <= len(variants) <= MAX_VARIANTS:
        raise ValueError(f"an endpoint has 1 to {MAX_VARIANTS} variants, not {len(variants)}")
    names = [v.name for v in variants]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"variant {name} is given twice")
    if not any(v.weight > 0 for v in variants):
        raise ValueError("every variant has weight 0: no variant would get traffic")
    return variants


def parse_weight(value: Any, what: str) -> float:
    """A traffic weight: a finite number >= 0 (SageMaker's DesiredWeight)."""
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: weight {value!r} is not a number") from None
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{what}: weight {value!r} must be a number >= 0")
    return weight


def parse_shift(text: str) -> dict[str, float]:
    """`--shift blue=50,green=50`: the new weight of each named variant (the others keep
    theirs, as in UpdateEndpointWeightsAndCapacities)."""
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"{item!r} is not VARIANT=WEIGHT")
        if name in weights:
            raise ValueError(f"variant {name} is given twice")
        weights[name] = parse_weight(value.strip(), f"variant {name}")
    return weights
