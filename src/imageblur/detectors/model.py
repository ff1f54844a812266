"""Loading a model an operator brought: the file must have the pinned sha256, and its
inputs and outputs must fit the family. Every refusal names the setting to fix."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imageblur.detection import ModelError, file_sha256


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model comes from, and the names of the settings that chose it (for
    messages): e.g. `IMAGEBLUR_MODEL_PATH`, or `IMAGEBLUR_EXTRA_DETECTORS[0].model_path`."""

    path: Path
    sha256: str
    path_setting: str = "IMAGEBLUR_MODEL_PATH"
    sha256_setting: str = "IMAGEBLUR_MODEL_SHA256"

    def refuse(self, reason: str) -> ModelError:
        return ModelError(f"{reason} (model {self.path}, set by {self.path_setting})")


def load_session(source: ModelSource, *, threads: int) -> Any:
    """An onnxruntime session of the verified file; `ModelError` naming the setting if
    the file is missing, has another hash, or is not an ONNX model."""
    import onnxruntime as ort  # only a worker needs it

    if not source.path.is_file():
        raise source.refuse(f"model file not found: {source.path}")
    actual = file_sha256(source.path)
    if actual != source.sha256.lower():
        raise ModelError(
            f"model {source.path} has sha256 {actual}, but {source.sha256_setting} is "
            f"{source.sha256}; pin the hash of the file you trust"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or _usable_cores()
    options.inter_op_num_threads = 1
    # As for CenterFace: idle threads must not spin on a worker that shares its cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(source.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own kinds for a bad file
        raise source.refuse(f"not a usable ONNX model: {exc}") from exc


def fixed_input_size(session: Any) -> tuple[int, int] | None:
    """(height, width) of an export with a fixed input size, None if it takes any."""
    shape = session.get_inputs()[0].shape
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
        return int(shape[2]), int(shape[3])
    return None


def check_image_input(session: Any, source: ModelSource, family: str) -> str:
    """The name of the one image input (N x 3 x H x W); refuse anything else."""
    inputs = session.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    if len(inputs) != 1 or len(shape) != 4 or shape[1] != 3:
        described = [(i.name, i.shape) for i in inputs]
        raise source.refuse(
            f"a {family} model takes one N x 3 x H x W image input, this one takes {described}"
        )
    return str(inputs[0].name)


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
