"""The CenterFace graph on Intel's OpenVINO runtime.

Same weights, same graph as on onnxruntime (heatmaps agree to ~0.002; the CPU plugin
computes in bfloat16 where the processor has it), but on the 2-core reference machine it
needs about a third less CPU per image and its activations take less memory than
onnxruntime's arena (docs/detection.md, Speed).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

# Compiled kernels are cached per input shape. Every upload has its own size, so a big
# cache only grows (~6 MB per shape seen); a few entries keep the pyramid's common
# tile sizes warm.
_SHAPE_CACHE_ENTRIES = 16


class OpenVINOSession:
    """`run_tile(tile, height, width)`: the graph's `outputs` for an RGB uint8 tile padded
    with zeros to height x width. Thread-safe.

    The tile goes in as it is, uint8 and channels last: the graph itself converts it
    (OpenVINO's preprocessing, fused into the first layer), instead of a float32 copy in
    channels-first order made in numpy beforehand, four times the bytes.

    One infer request serves every thread, one call at a time: each call already uses
    every core, and a request holds its own activation buffers (about 90 MB more per
    concurrent request on 1080p tiles), so with two jobs in flight the second request
    cost memory and gained no speed. Only the inference waits: the rest of a detection
    (scaling, decoding the output maps, grouping) runs beside another job's inference.
    """

    def __init__(self, model_bytes: bytes, *, threads: int, outputs: Sequence[str]) -> None:
        import openvino as ov  # imported here: only a detector needs it
        from openvino.preprocess import PrePostProcessor

        core = ov.Core()
        model = core.read_model(model_bytes, b"")
        steps = PrePostProcessor(model)
        steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        steps.input().model().set_layout(ov.Layout("NCHW"))
        steps.input().preprocess().convert_element_type(ov.Type.f32)
        self._compiled = core.compile_model(
            steps.build(),
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads,
                "CPU_RUNTIME_CACHE_CAPACITY": _SHAPE_CACHE_ENTRIES,
            },
        )
        self._outputs = [self._compiled.output(name) for name in outputs]
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()

    def run_tile(
        self, tile: npt.NDArray[np.uint8], height: int, width: int
    ) -> list[npt.NDArray[np.float32]]:
        h, w = tile.shape[:2]
        blob = np.zeros((1, height, width, 3), np.uint8)
        blob[0, :h, :w] = tile
        with self._lock:
            result = self._request.infer({0: blob})
            # Copies, under the lock: the request reuses its output buffers on the next call.
            return [np.array(result[output]) for output in self._outputs]
