"""The `ferry optimize` and `ferry lite` commands (registered in ferry.cli).

Only argument handling and printing live here; the work is in ferry.convert.optimize and
ferry.convert.lite, which tests call directly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from ferry.convert.optimize_limits import DEFAULT_MAX_SLOWDOWN_PERCENT

PRECISION_CHOICES = ("fp16", "int8", "int8-static")
LITE_QUANTIZE_CHOICES = ("none", "dynamic", "int8", "fp16")


def _size(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def _number(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def print_reports(result: Any) -> None:
    """The comparison table: one row per model, the candidate's ratios in its row."""
    from rich.console import Console
    from rich.table import Table

    original, candidate = result.original, result.candidate
    table = Table(title="original vs candidate (same inputs, this process)")
    for column in (
        "model",
        "size",
        "x smaller",
        "batch-1 ms",
        "batch-64 ms",
        "max |diff|",
        "mean |diff|",
        "accuracy",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    for report in (original, candidate):
        table.add_row(
            report.label,
            _size(report.size_bytes),
            f"{original.size_bytes / report.size_bytes:.2f}",
            _number(report.latency_ms_batch1, ".3f"),
            _number(report.latency_ms_batch64, ".3f"),
            _number(report.max_abs_diff, ".3g"),
            _number(report.mean_abs_diff, ".3g"),
            _number(report.accuracy * 100 if report.accuracy is not None else None, ".2f")
            + (" %" if report.accuracy is not None else ""),
        )
    Console(width=120).print(table)


@click.command()
@click.argument("model", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--precision",
    required=True,
    type=click.Choice(PRECISION_CHOICES),
    help="fp16: half-precision weights; int8: dynamic int8 quantization; int8-static: "
    "int8 with activations calibrated on --calibration.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the candidate to this folder instead of as the model's next version.",
)
@click.option(
    "--calibration",
    type=click.Path(exists=True, path_type=Path),
    help="int8-static: .npy/.npz file or a folder of them and TF Serving request JSON bodies.",
)
@click.option(
    "--eval",
    "eval_data",
    type=click.Path(exists=True, path_type=Path),
    help="Inputs to compare on (as --calibration); default: generated inputs.",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=".npy class index per --eval row: adds accuracy to the comparison.",
)
@click.option(
    "--max-accuracy-drop",
    type=float,
    help="Refuse a candidate whose accuracy drops more (percentage points).",
)
@click.option(
    "--max-abs-diff", type=float, help="Refuse a candidate whose outputs differ more than this."
)
@click.option(
    "--max-slowdown",
    "max_slowdown_percent",
    type=click.FloatRange(min=0.0),
    default=DEFAULT_MAX_SLOWDOWN_PERCENT,
    show_default=True,
    help="Refuse a candidate slower than the original by more than this percent at batch 1 "
    "or 64 (a larger candidate is always refused).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Publish even a candidate larger or slower than the original, or optimize a "
    "version that is already lower-precision.",
)
def optimize(
    model: Path,
    precision: str,
    output: Path | None,
    calibration: Path | None,
    eval_data: Path | None,
    labels: Path | None,
    max_accuracy_drop: float | None,
    max_abs_diff: float | None,
    max_slowdown_percent: float,
    force: bool,
) -> None:
    """Write a lower-precision variant of an ONNX model (MODEL: models/NAME or
    models/NAME/VERSION) as its next version, after comparing it with the original."""
    from ferry.cli_logging import filter_native_logs
    from ferry.cli_progress import track, working
    from ferry.convert.optimize import OptimizeError
    from ferry.convert.optimize import optimize as run_optimize

    filter_native_logs()
    try:
        with working(f"building the {precision} variant of {model} and comparing them") as step:

            def report(result: Any) -> None:
                step.done()  # the slow part is over: the table prints after its line
                print_reports(result)

            result = run_optimize(
                model,
                precision,
                output=output,
                calibration=calibration,
                eval_data=eval_data,
                labels=labels,
                max_accuracy_drop=max_accuracy_drop,
                max_abs_diff=max_abs_diff,
                progress=track,
                on_report=report,
                force=force,
                max_slowdown_percent=max_slowdown_percent,
            )
    except OptimizeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {result.written}")


@click.command()
@click.argument("model", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="model.tflite (TensorFlow/Keras versions) or model.ort (ONNX versions).",
)
@click.option(
    "--quantize",
    type=click.Choice(LITE_QUANTIZE_CHOICES),
    default="none",
    show_default=True,
    help=".tflite only: post-training quantization by the TFLite converter.",
)
@click.option(
    "--representative-data",
    type=click.Path(exists=True, path_type=Path),
    help="--quantize int8: .npy/.npz inputs (or a folder with request JSON) to calibrate on.",
)
@click.option(
    "--inputs",
    "check_inputs",
    type=click.Path(exists=True, path_type=Path),
    help="Inputs for the output check (default: generated).",
)
@click.option(
    "--tolerance",
    type=float,
    help="Largest output difference the check accepts (default depends on --quantize).",
)
def lite(
    model: Path,
    output: Path,
    quantize: str,
    representative_data: Path | None,
    check_inputs: Path | None,
    tolerance: float | None,
) -> None:
    """Convert a model version (MODEL: models/NAME/VERSION) to a lite model for devices."""
    from ferry.cli_logging import filter_native_logs
    from ferry.cli_progress import working
    from ferry.convert.lite import LiteError, convert_lite

    filter_native_logs()
    try:
        with working(f"converting {model} to {output.name} and checking its outputs"):
            report = convert_lite(
                model,
                output,
                quantize=quantize,
                representative_data=representative_data,
                check_inputs=check_inputs,
                tolerance=tolerance,
            )
    except LiteError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"wrote {report.path} ({_size(report.size_bytes)}, original {_size(report.source_bytes)})"
    )
    click.echo(
        f"check on {report.rows} rows: max |diff| {report.max_abs_diff:.3g} "
        f"(tolerance {report.tolerance:g}), same class on {report.same_class:.1%} of rows: OK"
    )
