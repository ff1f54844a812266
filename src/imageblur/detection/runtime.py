"""Where a network runs: the verified model file, one onnxruntime session factory, and
the OpenVINO session CenterFace runs on by default.

onnxruntime and OpenVINO are imported when a session is made, never at import: the API
process reads the settings (and the `ModelError` the CLI reports) without loading them.
OpenVINO, on the same graph as onnxruntime (heatmaps agree to ~0.002; the CPU plugin
computes in bfloat16 where the processor has it), needs about a third less CPU per image
on the 2-core reference machine and its activations take less memory than onnxruntime's
arena (docs/detection.md, Speed).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from imageblur.domain import ImageblurError

Runtime = Literal["openvino", "onnxruntime"]
# CenterFace's weights: the shipped int8 model, or the float ONNX graph.
Precision = Literal["int8", "float"]

# Compiled kernels are cached per input shape. Every upload has its own size, so a big
# cache only grows (~6 MB per shape seen); a few entries keep the pyramid's common
# tile sizes warm.
_SHAPE_CACHE_ENTRIES = 16
# OpenVINO pads a tile to multiples of this, not only of the 32 the network needs: a
# shape it has not seen costs about 20 ms of CPU more (its kernels are prepared per
# shape), and real photos vary in height, so at 32 the 300 photos of the WIDER FACE
# development subset gave 58 shapes, 308 of their 769 tiles missing the cache; at 128,
# 20 shapes and 29 misses, for 6% more pixels, and the same protected recall there.
# 1,024, 512 and 256 (a web-size photo's width at its passes) and the largest tile,
# 1,280, are multiples of it: those pass as they are (docs/detection.md, Speed).
SHAPE_STEP_PX = 128


class ModelError(ImageblurError):
    """The model file is missing, corrupt or not the one we verified."""


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

    def verified_path(self) -> Path:
        """The file, once its sha256 is the pinned one; `ModelError` naming the setting
        if it is missing or has another hash."""
        if not self.path.is_file():
            raise self.refuse(f"model file not found: {self.path}")
        actual = file_sha256(self.path)
        if actual != self.sha256.lower():
            raise ModelError(
                f"model {self.path} has sha256 {actual}, but {self.sha256_setting} is "
                f"{self.sha256}; pin the hash of the file you trust"
            )
        return self.path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnxruntime_session(model: str | bytes, *, threads: int) -> Any:
    """An onnxruntime CPU session of a model file (its path) or serialized graph;
    `threads` intra-op threads, 0 for every usable core."""
    import onnxruntime as ort  # only a worker needs it

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    # Idle intra-op threads would otherwise busy-wait between operators. On a worker
    # sharing its cores (other images in flight, other processes) that spinning steals
    # the CPU the work needs: 1080p detection with 2 threads under load took 740-810 ms
    # with spinning, 470-500 ms without.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # e.g. unused initializers; not our concern
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def usable_cores() -> int:
    # The cores this process may run on (a container's cpuset), not the host's count.
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class OpenVINOSession:
    """`run_tile(tile, height, width)`: the graph's `outputs` for an RGB uint8 tile padded
    with zeros to at least height x width: both rounded up to multiples of
    SHAPE_STEP_PX, so the output maps may be larger than the tile's. Thread-safe.

    The tile goes in as it is, uint8 and channels last: the graph itself converts it
    (OpenVINO's preprocessing, fused into the first layer), instead of a float32 copy in
    channels-first order made in numpy beforehand, four times the bytes.

    A call alone runs on `threads` threads (every core by default): a lone large photo
    is done as soon as it can be. A call that starts while another runs takes an infer
    request of its own that runs on half as many threads (one on two cores), and so
    does the other from its next tile on: two images in flight share the cores, and no
    operator waits at a barrier for a thread that another image (or another process)
    holds. On real photos, 2 in flight on a busy machine, detection took about a quarter
    less CPU and 17-38% less wall time per photo than with one two-thread request taken
    in turn, for 80-140 MB more peak RSS (both requests hold activations at once;
    docs/detection.md, "Two images, two cores"). With one thread (`threads=1`, or a
    single usable core) calls take the one request in turn.
    """

    def __init__(
        self,
        model_bytes: bytes,
        *,
        threads: int,
        outputs: Sequence[str],
        weights: bytes = b"",
        shape_step_px: int = SHAPE_STEP_PX,
    ) -> None:
        """`model_bytes`: an ONNX graph, or an OpenVINO IR (its XML) with its `weights`
        (the .bin file's bytes). `shape_step_px`: tiles go in padded to multiples of it."""
        import openvino as ov  # imported here: only a detector needs it
        from openvino.preprocess import PrePostProcessor

        core = ov.Core()
        model = core.read_model(model_bytes, weights)
        steps = PrePostProcessor(model)
        steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        steps.input().model().set_layout(ov.Layout("NCHW"))
        steps.input().preprocess().convert_element_type(ov.Type.f32)
        built = steps.build()
        self._alone = _Requests(core, built, threads or usable_cores(), outputs)
        # OpenVINO takes no more threads than the physical cores, whatever was asked.
        wide = int(self._alone.compiled.get_property("INFERENCE_NUM_THREADS"))
        # Half each: the worker's and the CLI's 2 images in flight (worker_threads).
        self._shared = _Requests(core, built, wide // 2, outputs) if wide > 1 else None
        self._spare: list[Any] = []  # idle requests of the shared model
        self._running = 0
        self._changed = threading.Condition()
        self._step = shape_step_px
        self._warm_up()

    def _warm_up(self) -> None:
        """One call on a tiny tile, before any thread may call: the binding's first
        exchange of numpy arrays sets up pybind11's numpy table under a C++ static guard
        that it enters holding the GIL and then waits for the GIL inside. Two threads
        making their first calls at once deadlocked there for good (seen: `imageblur
        blur`, both images in flight stuck in `tensor.data` with no CPU used)."""
        self.run_tile(np.zeros((1, 1, 3), np.uint8), 1, 1)

    def run_tile(
        self, tile: npt.NDArray[np.uint8], height: int, width: int
    ) -> list[npt.NDArray[np.float32]]:
        h, w = tile.shape[:2]
        # At least height x width, in steps of SHAPE_STEP_PX: fewer shapes to compile.
        shape = (1, _stepped(height, self._step), _stepped(width, self._step), 3)
        blob = np.zeros(shape, np.uint8)
        blob[0, :h, :w] = tile
        requests, request = self._take()
        try:
            result = request.infer({0: blob})
            # Copies, before the request goes back: it reuses its output buffers.
            return [np.array(result[output]) for output in requests.outputs]
        finally:
            self._give_back(requests, request)

    def _take(self) -> tuple[_Requests, Any]:
        """The many-thread request when no other call runs (it is then idle: only a call
        alone takes it), else one of the shared model (without one, the only request,
        once it is free)."""
        with self._changed:
            while self._shared is None and self._running:
                self._changed.wait()
            self._running += 1
            if self._running == 1 or self._shared is None:
                return self._alone, self._alone.request
            spare = (
                self._spare.pop() if self._spare else self._shared.compiled.create_infer_request()
            )
            return self._shared, spare

    def _give_back(self, requests: _Requests, request: Any) -> None:
        with self._changed:
            self._running -= 1
            if requests is self._shared:
                self._spare.append(request)
            self._changed.notify()


class _Requests:
    """The graph compiled for `threads` threads, its outputs, and one infer request."""

    def __init__(self, core: Any, model: Any, threads: int, outputs: Sequence[str]) -> None:
        self.compiled = core.compile_model(
            model,
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads,
                "CPU_RUNTIME_CACHE_CAPACITY": _SHAPE_CACHE_ENTRIES,
            },
        )
        self.outputs = [self.compiled.output(name) for name in outputs]
        self.request = self.compiled.create_infer_request()


def _stepped(size_px: int, step_px: int) -> int:
    return -(-size_px // step_px) * step_px
