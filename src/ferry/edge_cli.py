"""`ferry edge predict` and `ferry edge bundle` (registered in ferry.cli).

Kept outside the `ferry.edge` package because it needs click, which the on-device
package must not require.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def edge() -> None:
    """Run lite models without a server, and bundle them for devices."""


@edge.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=".npy (single-input models), .npz (arrays by input name) or TF Serving .json.",
)
def predict(model: Path, input_path: Path) -> None:
    """Run MODEL (.tflite, .ort, .onnx, or a bundle folder) on the inputs; prints JSON."""
    import ferry.edge
    from ferry.cli_progress import working

    try:
        # Loading imports the runtime (TensorFlow's for some .tflite files: seconds).
        with working(f"loading {model} and running it on {input_path}"):
            loaded = ferry.edge.load(model)
            inputs = ferry.edge.read_inputs(input_path, loaded.input_names)
            outputs = loaded.predict(inputs)
    except (ValueError, ImportError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(ferry.edge.outputs_document(outputs)))


@edge.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The bundle folder to write (must not exist).",
)
def bundle(model: Path, output: Path) -> None:
    """Write a folder to copy to a device: the model, signature.json, ferry_edge/ and run.py."""
    from ferry.cli_progress import working
    from ferry.edge.bundle import write_bundle

    try:
        with working(f"loading {model} and bundling it into {output}"):
            written = write_bundle(model, output)
    except (ValueError, ImportError, FileNotFoundError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {written} (run: python {written / 'run.py'} INPUTS.npy)")
