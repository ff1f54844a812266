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

    One compiled model with a stream per thread (`threads`, every core by default), each
    stream one thread and its own copy of the graph's working memory: a call runs on
    whichever stream is free, so the worker's and the CLI's 2 images in flight each have
    a core and no operator waits at a barrier for a thread that another image (or
    another process) holds. One thread per call is also the least CPU per tile. The
    streams share one set of kernels: the oneDNN kernels prepared for every tile shape
    seen are kept (its cache), and a second compiled model with another thread count
    kept a second set, about 100-150 MB more on the 300 real photos of the development
    subset (docs/detection.md, Speed, "One model, a stream per core").
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
        count = threads or usable_cores()
        self._compiled = core.compile_model(
            steps.build(),
            "CPU",
            {
                "NUM_STREAMS": count,
                "INFERENCE_NUM_THREADS": count,  # one per stream
                "CPU_RUNTIME_CACHE_CAPACITY": _SHAPE_CACHE_ENTRIES,
            },
        )
        self._outputs = [self._compiled.output(name) for name in outputs]
        self._spare: list[Any] = []  # idle infer requests
        self._lock = threading.Lock()
        self._step = shape_step_px
        self._warm_up()

    @property
    def streams(self) -> int:
        """How many calls run at once, each on one thread (OpenVINO takes no more
        streams than the physical cores, whatever was asked)."""
        return int(self._compiled.get_property("NUM_STREAMS"))

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
        with self._lock:
            request = self._spare.pop() if self._spare else self._compiled.create_infer_request()
        try:
            # Started, not run in this thread: a synchronous call runs on the calling
            # thread's stream, and threads may share one (then their calls wait for each
            # other's); a started one goes to a free stream.
            request.start_async({0: blob})
            request.wait()
            # Copies, before the request goes back: it reuses its output buffers.
            return [np.array(request.get_tensor(output).data) for output in self._outputs]
        finally:
            with self._lock:
                self._spare.append(request)


def _stepped(size_px: int, step_px: int) -> int:
    return -(-size_px // step_px) * step_px
