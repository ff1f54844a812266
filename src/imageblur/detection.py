"""CenterFace behind the `FaceDetector` port: one ONNX model, run over an image pyramid.

A single pass finds a band of face sizes only: at native size CenterFace misses (or boxes
badly) faces larger than a few hundred pixels, and on a downscaled copy it misses small
ones. So the image is run at scales 1, 1/2, 1/4, ... down to a small thumbnail; large
scaled images are cut into overlapping tiles so memory stays bounded (a 50 MP photo never
becomes one 600 MB input tensor). Each scale keeps the detections whose size it sees
well. The candidates of all scales are then grouped (greedy, best score first) and each
group scores the noisy-or of its best score per scale, 1 - prod(1 - s): a face seen at
two scales with 0.3 each (0.51) beats a texture seen once at 0.45, which on the WIDER
FACE development subset buys about one point of recall at the same false-positive rate
(docs/detection.md).

The model is loaded once per `CenterFaceDetector`; `detect` is thread-safe (an
onnxruntime session may be run from several threads at once; the OpenVINO session runs
one inference at a time and the rest of a detection beside it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from imageblur.cancel import checkpoint
from imageblur.domain import Face, ImageblurError
from imageblur.ports import RGBImage

MODEL_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
# The box sizes (sqrt of the area, px) where the score a group needs changes: the small
# threshold up to 14 px, the threshold from 22 to 64 px, the large threshold from 128 px,
# linearly in between. On the WIDER FACE development subset, 3 in 4 low-scoring groups
# touching no face are under 14 px, against 1 in 10 of those on faces >= 20 px tall
# (docs/detection.md).
SIZE_KNOTS_PX = (14.0, 22.0, 64.0, 128.0)
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
_ALIGN = 32  # the network downsamples 5 times; inputs must be multiples of 32

FloatArray = npt.NDArray[np.float32]
Runtime = Literal["openvino", "onnxruntime"]


class ModelError(ImageblurError):
    """The model file is missing, corrupt or not the one we verified."""


def default_model_path() -> Path:
    """The CenterFace ONNX file installed beside the package by `make model`."""
    return Path(__file__).resolve().parent / "models" / "centerface.onnx"


@dataclass(frozen=True, slots=True)
class PyramidConfig:
    """How the image is scanned. Sizes are in pixels of the scaled image.

    `min_face_px`/`max_face_px` is the band of face sizes a pass trusts; the finest scale
    keeps everything smaller and the coarsest everything larger, so no size falls
    between two passes. Tiles overlap by `max_face_px` so a face in the band is always
    whole in some tile. Tiles of 1280 px keep onnxruntime near 500 MB per image in
    flight and run as fast per pixel as larger ones (2048 px: 1.5 GB). `upscale`
    (e.g. 1.41) adds a finer pass for faces under ~30 px: +2 points of recall for faces
    >= 20 px, at 2.5x the compute; off by default.
    `floor_score` is the lowest per-pass score that may contribute to a group.
    """

    scale_step: float = 0.5
    coarsest_side_px: int = 320
    min_face_px: float = 24.0
    max_face_px: float = 128.0
    tile_px: int = 1280
    group_iou: float = 0.4
    floor_score: float = 0.1
    upscale: float | None = None


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
CENTERFACE_PYRAMID = PyramidConfig(coarsest_side_px=400, floor_score=0.05)


class CenterFaceDetector:
    """Multi-scale CenterFace face detector (the `FaceDetector` port)."""

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        threshold: float,
        small_threshold: float | None = None,
        large_threshold: float | None = None,
        threads: int = 0,
        pyramid: PyramidConfig | None = None,
        runtime: Runtime = "openvino",
        uncertain_floor: float | None = None,
    ) -> None:
        """Load and verify the model once.

        `threshold` is the minimum face score (0..1) of boxes of 22-64 px,
        `small_threshold` that of boxes up to 14 px and `large_threshold` that of boxes
        from 128 px (each None: the threshold; never below it; `size_thresholds`).
        `threads` the runtime's intra-op threads, 0 for all cores. `runtime`: OpenVINO or
        onnxruntime, the same graph either way (OpenVINO is faster here).
        `uncertain_floor`: the lowest score of the uncertain candidates `detect_regions`
        lists (None: none listed); never below the pyramid's `floor_score`
        (`uncertain_floor_of`). Raises `ModelError` if the model file is missing or its
        sha256 is not the verified one.
        """
        for value in (threshold, small_threshold, large_threshold, uncertain_floor):
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"thresholds must be in (0, 1), got {value}")
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        self.model_path = model_path or default_model_path()
        self.threshold = threshold
        self.small_threshold = max(threshold, small_threshold or threshold)
        self.large_threshold = max(threshold, large_threshold or threshold)
        self.pyramid = pyramid or CENTERFACE_PYRAMID
        self.uncertain_floor = uncertain_floor_of(uncertain_floor, threshold, self.pyramid)
        self._session = _load_session(self.model_path, threads, runtime)

    def detect(self, image: RGBImage) -> list[Face]:
        """Every face in an RGB uint8 H x W x 3 image, boxes in its pixel coordinates."""
        return self.detect_regions(image)[0]

    def detect_regions(self, image: RGBImage) -> tuple[list[Face], list[Face]]:
        """(hidden, uncertain): the faces `detect` returns, and the groups scoring at
        least `uncertain_floor` but below the threshold their size needs, at least
        UNCERTAIN_MIN_PX across."""
        _check_image(image)
        height, width = image.shape[:2]
        scales = pyramid_scales(width, height, self.pyramid)
        found: list[FloatArray] = []
        for index, scale in enumerate(scales):
            checkpoint()  # a job whose lease is lost stops here, between passes
            dets = self._detect_at_scale(image, scale)
            first, last = index == 0, index == len(scales) - 1
            keep = _size_band(dets, scale, self.pyramid, first=first, last=last)
            tagged = np.column_stack([dets[keep], np.full(int(keep.sum()), index, np.float32)])
            found.append(tagged.astype(np.float32))
        dets = group(np.concatenate(found), self.pyramid.group_iou)
        dets[:, [0, 2]] = np.clip(dets[:, [0, 2]], 0.0, float(width))
        dets[:, [1, 3]] = np.clip(dets[:, [1, 3]], 0.0, float(height))
        # Sized as returned (clipped), so an evaluation replaying these faces at another
        # threshold applies the very same rule.
        need = size_thresholds(dets, self.threshold, self.small_threshold, self.large_threshold)
        hidden = dets[:, 4] >= need
        floor = 1.0 if self.uncertain_floor is None else self.uncertain_floor
        listed = ~hidden & (dets[:, 4] >= floor) & (box_size(dets) >= UNCERTAIN_MIN_PX)
        return _faces(dets[hidden]), _faces(dets[listed])

    def _detect_at_scale(self, image: RGBImage, scale: float) -> FloatArray:
        height, width = image.shape[:2]
        if scale == 1.0:
            scaled = image
        elif scale > 1.0:
            size = (round(width * scale), round(height * scale))
            scaled = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
        else:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            # INTER_AREA averages source pixels: no aliasing on strong downscales.
            scaled = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        sx = width / scaled.shape[1]
        sy = height / scaled.shape[0]
        out: list[FloatArray] = []
        overlap = int(self.pyramid.max_face_px)
        for x0, y0, x1, y1 in tiles(
            scaled.shape[1], scaled.shape[0], self.pyramid.tile_px, overlap
        ):
            dets = self._run(scaled[y0:y1, x0:x1])
            dets[:, [0, 2]] = (dets[:, [0, 2]] + x0) * sx
            dets[:, [1, 3]] = (dets[:, [1, 3]] + y0) * sy
            out.append(dets)
        return np.concatenate(out) if out else np.zeros((0, 5), np.float32)

    def _run(self, tile: RGBImage) -> FloatArray:
        """One network pass over a tile; boxes in tile pixels, rows x0 y0 x1 y1 score."""
        h, w = tile.shape[:2]
        ph, pw = _round_up(h, _ALIGN), _round_up(w, _ALIGN)
        # Zero padding instead of deface's resize to a multiple of 32: no distortion,
        # and boxes need no rescaling.
        heatmap, log_scale, offset = self._session.run_tile(tile, ph, pw)
        floor = min(self.threshold, self.pyramid.floor_score)
        return decode(heatmap, log_scale, offset, floor, w, h)


def uncertain_floor_of(floor: float | None, threshold: float, cfg: PyramidConfig) -> float | None:
    """The floor of the uncertain candidates as applied: never below the lowest score a
    pass keeps (min(threshold, `floor_score`): 0.05 for CenterFace). Lower, a pass would
    have to keep weaker candidates, and those would join the groups of what is hidden
    and raise their noisy-or scores: `detect` would hide something else. So a floor
    under it lists the groups the passes make, and no weaker ones."""
    if floor is None:
        return None
    return max(floor, min(threshold, cfg.floor_score))


def _faces(dets: FloatArray) -> list[Face]:
    return [
        Face(x0=float(d[0]), y0=float(d[1]), x1=float(d[2]), y1=float(d[3]), score=float(d[4]))
        for d in dets
    ]


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


def group(dets: FloatArray, iou_threshold: float) -> FloatArray:
    """Merge candidates of all passes: rows x0 y0 x1 y1 score pass -> x0 y0 x1 y1 score.

    Greedy, best score first: the best remaining box takes every box overlapping it
    (IoU >= iou_threshold, or lying 80% inside it) and keeps its own geometry; the
    group's score is the noisy-or of the best score of each pass in it.
    """
    if len(dets) == 0:
        return np.zeros((0, 5), np.float32)
    x0, y0, x1, y1, score, passes = (dets[:, i] for i in range(6))
    area = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    order = np.argsort(-score, kind="stable")
    out: list[FloatArray] = []
    while order.size:
        i = int(order[0])
        iw = np.maximum(0.0, np.minimum(x1[i], x1[order]) - np.maximum(x0[i], x0[order]))
        ih = np.maximum(0.0, np.minimum(y1[i], y1[order]) - np.maximum(y0[i], y0[order]))
        inter = iw * ih
        iou = inter / np.maximum(area[i] + area[order] - inter, 1e-6)
        inside = inter / np.maximum(area[order], 1e-6)
        member = (iou >= iou_threshold) | (inside >= 0.8)
        member[0] = True  # a degenerate (zero-area) leader still forms its own group
        members = order[member]
        miss = 1.0
        for p in np.unique(passes[members]):
            miss *= 1.0 - float(score[members][passes[members] == p].max())
        out.append(np.array([x0[i], y0[i], x1[i], y1[i], 1.0 - miss], np.float32))
        order = order[~member]
    return np.stack(out)


def size_thresholds(
    dets: FloatArray, threshold: float, small_threshold: float, large_threshold: float
) -> FloatArray:
    """The score each box (rows x0 y0 x1 y1 ...) needs, by its size (SIZE_KNOTS_PX):
    `small_threshold`, rising or falling linearly to `threshold`, flat, then linearly to
    `large_threshold`."""
    levels = [small_threshold, threshold, threshold, large_threshold]
    ramp = np.interp(box_size(dets), SIZE_KNOTS_PX, levels)
    return np.asarray(ramp, np.float32)


def box_size(dets: FloatArray) -> FloatArray:
    """The size of each box (rows x0 y0 x1 y1 ...): the square root of its area, px."""
    w = np.maximum(dets[:, 2] - dets[:, 0], 0)
    h = np.maximum(dets[:, 3] - dets[:, 1], 0)
    return np.asarray(np.sqrt(w * h), np.float32)


def pyramid_scales(width: int, height: int, cfg: PyramidConfig) -> list[float]:
    """[upscale,] 1, step, step^2, ... until the shorter side fits `coarsest_side_px`."""
    scales = [1.0]
    short = min(width, height)
    while short * scales[-1] > cfg.coarsest_side_px:
        scales.append(scales[-1] * cfg.scale_step)
    if cfg.upscale is not None and cfg.upscale > 1.0:
        scales.insert(0, cfg.upscale)
    return scales


def tiles(
    width: int, height: int, tile_px: int, overlap_px: int
) -> Iterator[tuple[int, int, int, int]]:
    """Windows (x0, y0, x1, y1) of at most tile_px square covering the image."""
    for y0, y1 in _spans(height, tile_px, overlap_px):
        for x0, x1 in _spans(width, tile_px, overlap_px):
            yield x0, y0, x1, y1


def _spans(length: int, tile_px: int, overlap_px: int) -> list[tuple[int, int]]:
    """As few equal spans as cover `length` with tiles of at most `tile_px` overlapping
    by at least `overlap_px`. Equal spans rather than fixed-size tiles keep the wasted
    overlap small: 1920 px with 1280 px tiles and 128 px overlap is two 1024 px spans."""
    if length <= tile_px:
        return [(0, length)]
    count = -(-(length - overlap_px) // (tile_px - overlap_px))
    size = -(-(length + (count - 1) * overlap_px) // count)
    size = min(length, _round_up(size, _ALIGN))  # the network pads to 32 anyway
    starts = np.linspace(0, length - size, count).round().astype(int)
    return [(int(s), int(s) + size) for s in starts]


def _size_band(
    dets: FloatArray, scale: float, cfg: PyramidConfig, *, first: bool, last: bool
) -> npt.NDArray[np.bool_]:
    """Detections whose size (in scaled pixels) this pass sees well."""
    size = np.sqrt(np.maximum(dets[:, 2] - dets[:, 0], 0) * np.maximum(dets[:, 3] - dets[:, 1], 0))
    size = size * scale
    keep = np.ones(len(dets), bool)
    if not first:
        keep &= size >= cfg.min_face_px
    if not last:
        keep &= size <= cfg.max_face_px
    return keep


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _check_image(image: Any) -> None:
    if not (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.shape[0] > 0
        and image.shape[1] > 0
    ):
        raise ValueError("detect() expects an RGB uint8 array of shape H x W x 3")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_session(model_path: Path, threads: int, runtime: Runtime = "onnxruntime") -> Any:
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
    if runtime == "openvino":
        from imageblur.openvino_session import OpenVINOSession

        return OpenVINOSession(
            model.SerializeToString(), threads=threads or _usable_cores(), outputs=_OUTPUTS
        )
    # Not imported with OpenVINO: its libraries alone hold about 30 MB.
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or _usable_cores()
    options.inter_op_num_threads = 1
    # Idle intra-op threads would otherwise busy-wait between operators. On a worker
    # sharing its cores (other images in flight, other processes) that spinning steals
    # the CPU the work needs: 1080p detection with 2 threads under load took 740-810 ms
    # with spinning, 470-500 ms without.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # the graph has unused initializers; not our concern
    session = ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return _OnnxRuntimeTiles(session)


class _OnnxRuntimeTiles:
    """`run_tile` on onnxruntime: the tile as the float NCHW blob the graph takes."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def run_tile(self, tile: RGBImage, height: int, width: int) -> list[FloatArray]:
        h, w = tile.shape[:2]
        blob = np.zeros((1, 3, height, width), np.float32)
        blob[0, :, :h, :w] = tile.transpose(2, 0, 1)
        return list(self._session.run(_OUTPUTS, {_INPUT: blob}))


def _usable_cores() -> int:
    # The cores this process may run on (a container's cpuset), not the host's count.
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


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
