"""CenterFace, the shipped family: one ONNX model, installed and verified with the
package, run over the shared pyramid (`pyramid.PyramidDetector`) on OpenVINO or
onnxruntime (the same graph either way; OpenVINO is faster here).

Its thresholds depend on the box size (`pyramid.SizeThresholds`, measured on its scores)
and uncertain candidates under UNCERTAIN_MIN_PX are not listed. The model is loaded once
per detector; `detect` is thread-safe (an onnxruntime session may be run from several
threads at once; the OpenVINO session runs one tile per stream, a stream per core, and
the pyramid hands it that many tiles at a time).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from imageblur.detection.base import DetectorChoice
from imageblur.detection.pyramid import (
    ALIGN,
    FloatArray,
    PyramidConfig,
    PyramidDetector,
    SizeThresholds,
    round_up,
)
from imageblur.detection.runtime import (
    ModelError,
    OpenVINOSession,
    Precision,
    Runtime,
    file_sha256,
    onnxruntime_session,
)
from imageblur.ports import RGBImage

MODEL_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
# The same network quantized to int8 (scripts/quantize_model.py, NNCF, calibrated on
# augmented example pictures and generated crowds; docs/detection.md, "Int8"): an
# OpenVINO IR, its graph and its weights, stored in the repository and checked like the
# ONNX file. OpenVINO runs it with VNNI: 1.45x less CPU per 1024 x 704 tile than the
# float graph (which runs in bfloat16 on the reference CPU), the same protected recall.
INT8_XML_SHA256 = "11ed1282c03b33ac3d1f210b9da69b748d15e1c4718e3176b44eed4a97a7ab0c"
INT8_BIN_SHA256 = "75faf522d0bd56dfe23d9e2b08ba1f0400510a355568dcfaf5685be9f6cbebe3"
# Uncertain candidates smaller than this are not listed for a reviewer. On the WIDER FACE
# development subset, at the floor 0.1, boxes under 14 px are 72% of the candidates (23
# per image, 94% matching no labelled face) and hiding those that are faces protects 3 more of
# 1,549 faces >= 20 px (docs/detection.md, "Review: uncertain candidates").
UNCERTAIN_MIN_PX = 14.0

_INPUT = "input.1"
# Heatmap, log-scale (h, w), offset (y, x). The fourth output, landmarks, is dropped
# from the graph: nothing reads it, and the runtimes then skip its head.
_OUTPUTS = ("537", "538", "539")
_STRIDE = 4  # output cell size in input pixels

# CenterFace's own pyramid stops once the shorter side is at most 400 px, not 320: a
# 1200 x 800 photo then takes 2 passes instead of 3. On the WIDER FACE development
# subset that is 9% less detection time for -0.06 / -0.12 point of protected recall
# (faces >= 20 / 40 px), inside the 0.3 point issue 15 allows; the largest face of the
# example pictures (940 px) still scores 0.87 (docs/detection.md, Speed).
# Its passes keep scores down to 0.05, not 0.1: a face seen weakly by two passes then
# adds up (noisy-or) to the threshold. On that subset the default then protects 0.957 /
# 0.971 (was 0.953 / 0.965; +5 and +4 faces, one per image, none lost), more than half
# a point above deface 1.5.0 at both sizes, for 2.83% of background hidden instead of
# 2.71%; 0.03 protects no more faces and hides more background.
PYRAMID = PyramidConfig(coarsest_side_px=400, floor_score=0.05)


def default_model_path() -> Path:
    """The CenterFace ONNX file installed beside the package by `make model`."""
    return Path(__file__).resolve().parents[1] / "models" / "centerface.onnx"


def int8_model_path() -> Path:
    """The int8 CenterFace IR shipped in the package (its XML; the weights beside it,
    `.bin`)."""
    return Path(__file__).resolve().parents[1] / "models" / "centerface-int8.xml"


def centerface_detector(
    *,
    model_path: Path | None = None,
    threshold: float,
    small_threshold: float | None = None,
    large_threshold: float | None = None,
    threads: int = 0,
    pyramid: PyramidConfig | None = None,
    runtime: Runtime = "openvino",
    uncertain_floor: float | None = None,
    precision: Precision = "float",
) -> PyramidDetector:
    """The multi-scale CenterFace detector; the model loaded and verified once.

    `threshold` is the minimum face score (0..1) of boxes of 22-64 px,
    `small_threshold` that of boxes up to 14 px and `large_threshold` that of boxes from
    128 px (`SizeThresholds`). `threads` the runtime's intra-op threads, 0 for all cores.
    `uncertain_floor`: as `PyramidDetector`'s. `precision`: `float` runs the ONNX file
    (`model_path`, default the installed one), `int8` the int8 IR (OpenVINO only;
    `model_path` its XML, the weights beside it; default the one shipped in the package).
    Raises `ModelError` if the model file is missing or its sha256 is not the verified
    one.
    """
    SizeThresholds(threshold, small_threshold, large_threshold)  # checked before loading
    if uncertain_floor is not None and not 0.0 < uncertain_floor < 1.0:
        raise ValueError(f"thresholds must be in (0, 1), got {uncertain_floor}")
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if precision == "int8" and runtime != "openvino":
        raise ValueError("the int8 model runs on openvino only")
    if precision == "int8":
        session: Any = _int8_session(model_path or int8_model_path(), threads)
    else:
        session = _load_session(model_path or default_model_path(), threads, runtime)
    return PyramidDetector(
        CenterFaceModel(session),
        threshold=threshold,
        small_threshold=small_threshold,
        large_threshold=large_threshold,
        pyramid=pyramid or PYRAMID,
        uncertain_floor=uncertain_floor,
        uncertain_min_px=UNCERTAIN_MIN_PX,
    )


def detector(
    choice: DetectorChoice, *, threads: int, runtime: Runtime, uncertain_floor: float | None
) -> PyramidDetector:
    """The family's detector as configured: the shipped model only."""
    if choice.model_sha256 and choice.model_sha256.lower() != MODEL_SHA256:
        raise ModelError(
            f"{choice.sha256_setting}: the centerface detector runs the shipped "
            f"model only ({MODEL_SHA256})"
        )
    return centerface_detector(
        model_path=choice.model_path,
        threshold=choice.threshold,
        small_threshold=choice.small_threshold,
        large_threshold=choice.large_threshold,
        threads=threads,
        pyramid=choice.pyramid(PYRAMID),
        runtime=runtime,
        uncertain_floor=uncertain_floor,
        precision=choice.precision,
    )


class CenterFaceModel:
    """The CenterFace network as a `TileModel`: any tile size, padded to 32 (OpenVINO
    pads further, to fewer shapes: `runtime.SHAPE_STEP_PX`)."""

    input_px = None

    def __init__(self, session: Any) -> None:
        self._session = session
        # OpenVINO runs a tile per stream at once; onnxruntime one at a time on every core.
        self.tiles_at_once: int = getattr(session, "streams", 1)

    def run(self, tile: RGBImage, floor: float) -> FloatArray:
        """One network pass over a tile; boxes in tile pixels, rows x0 y0 x1 y1 score kind."""
        h, w = tile.shape[:2]
        # Zero padding instead of deface's resize to a multiple of 32: no distortion,
        # and boxes need no rescaling.
        heatmap, log_scale, offset = self._session.run_tile(
            tile, round_up(h, ALIGN), round_up(w, ALIGN)
        )
        boxes = decode(heatmap, log_scale, offset, floor, w, h)
        return np.column_stack([boxes, np.zeros(len(boxes), np.float32)])  # all faces


def decode(
    heatmap: FloatArray,
    log_scale: FloatArray,
    offset: FloatArray,
    threshold: float,
    width: int,
    height: int,
) -> FloatArray:
    """CenterFace output maps -> boxes (x0, y0, x1, y1, score), as deface decodes them."""
    heat = heatmap[0, 0]
    rows, cols = np.nonzero(heat > threshold)
    if rows.size == 0:
        return np.zeros((0, 5), np.float32)
    box_h = np.exp(log_scale[0, 0, rows, cols]) * _STRIDE
    box_w = np.exp(log_scale[0, 1, rows, cols]) * _STRIDE
    cy = (rows + offset[0, 0, rows, cols] + 0.5) * _STRIDE
    cx = (cols + offset[0, 1, rows, cols] + 0.5) * _STRIDE
    x0 = np.clip(cx - box_w / 2, 0, width)
    y0 = np.clip(cy - box_h / 2, 0, height)
    x1 = np.clip(x0 + box_w, 0, width)
    y1 = np.clip(y0 + box_h, 0, height)
    return np.stack([x0, y0, x1, y1, heat[rows, cols]], axis=1).astype(np.float32)


def _load_session(model_path: Path, threads: int, runtime: Runtime) -> Any:
    graph = prepared_graph(model_path)
    if runtime == "openvino":
        # The float model keeps the network's own 32 px: the `thorough` preset's
        # thresholds were chosen on its scores at 32, and at 128 it protected two faces
        # fewer than issue 28 asks (docs/detection.md, "The thorough preset").
        return OpenVINOSession(graph, threads=threads, outputs=_OUTPUTS, shape_step_px=ALIGN)
    return _OnnxRuntimeTiles(onnxruntime_session(graph, threads=threads))


def prepared_graph(model_path: Path) -> bytes:
    """The verified ONNX file as the runtimes take it (`_prepare_graph`), serialized;
    also what the int8 model is quantized from (scripts/quantize_model.py)."""
    import onnx  # imported here: only a detector needs it, not the API process

    if not model_path.is_file():
        raise ModelError(f"face model not found: {model_path}; run `make model` to install it")
    actual = file_sha256(model_path)
    if actual != MODEL_SHA256:
        raise ModelError(
            f"face model {model_path} has sha256 {actual}, expected {MODEL_SHA256}; "
            "run `make model` to reinstall it"
        )
    model = onnx.load(str(model_path))
    _prepare_graph(model)
    graph: bytes = model.SerializeToString()
    return graph


def _int8_session(xml_path: Path, threads: int) -> OpenVINOSession:
    """The int8 IR, each file read once and compiled as checked."""
    graph = _verified_bytes(xml_path, INT8_XML_SHA256)
    weights = _verified_bytes(xml_path.with_suffix(".bin"), INT8_BIN_SHA256)
    return OpenVINOSession(graph, weights=weights, threads=threads, outputs=_OUTPUTS)


def _verified_bytes(path: Path, sha256: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(
            f"face model not readable: {path} ({exc.strerror}); it comes with the package"
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ModelError(
            f"face model {path} has sha256 {actual}, expected {sha256}; reinstall the package"
        )
    return data


class _OnnxRuntimeTiles:
    """`run_tile` on onnxruntime: the tile as the float NCHW blob the graph takes."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def run_tile(self, tile: RGBImage, height: int, width: int) -> list[FloatArray]:
        h, w = tile.shape[:2]
        blob = np.zeros((1, 3, height, width), np.float32)
        blob[0, :, :h, :w] = tile.transpose(2, 0, 1)
        return list(self._session.run(_OUTPUTS, {_INPUT: blob}))


def _prepare_graph(model: Any) -> None:
    """Make the exported graph usable at any input size, and fast.

    The export fixes the input and output shapes (10 x 3 x 32 x 32); onnxruntime would
    refuse any other size, so batch and spatial dims become symbolic. It also lists every
    weight as a graph input (an old exporter habit), which tells onnxruntime the weights
    may be overridden at run time and so blocks constant folding, batch-norm fusion
    included: dropping them from the inputs halves the inference time. No weight changes.
    """
    weights = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    outputs = [value for value in model.graph.output if value.name in _OUTPUTS]
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    wanted = {_INPUT, *_OUTPUTS}
    for value in [*model.graph.input, *model.graph.output]:
        if value.name not in wanted:
            continue
        dims = value.type.tensor_type.shape.dim
        for axis, name in ((0, "batch"), (2, "height"), (3, "width")):
            dims[axis].ClearField("dim_value")
            dims[axis].dim_param = f"{name}_{value.name}" if axis else name
