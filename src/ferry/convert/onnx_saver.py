"""Saving ONNX models: an `onnx.ModelProto` or a `.onnx` file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ferry.convert.save import Saver
from ferry.runtimes.onnx import MODEL_FILE


class OnnxSaver(Saver):
    name = "onnx"
    formats = ("onnx",)

    def accepts(self, model: Any) -> bool:
        if isinstance(model, str | Path):
            return Path(model).suffix == ".onnx" and Path(model).is_file()
        return type(model).__module__.startswith("onnx") and type(model).__name__ == "ModelProto"

    def write(self, model: Any, folder: Path, format: str, example: Any | None) -> None:
        if isinstance(model, str | Path):
            shutil.copyfile(model, folder / MODEL_FILE)
            return
        import onnx

        onnx.save(model, str(folder / MODEL_FILE))


SAVERS: list[Saver] = [OnnxSaver()]
