"""The CenterFace graph on Intel's OpenVINO runtime, behind onnxruntime's `run` signature.

Same weights, same float32 arithmetic (heatmaps agree with onnxruntime's to ~0.002), but
on the 2-core reference machine it needs about a third less CPU per image and its
activations take less memory than onnxruntime's arena (docs/detection.md, Speed).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

# Compiled kernels are cached per input shape. Every upload has its own size, so a big
# cache only grows (~6 MB per shape seen); a few entries keep the pyramid's common
# tile sizes warm.
_SHAPE_CACHE_ENTRIES = 16


class OpenVINOSession:
    """`run(output_names, {input_name: blob})` like an onnxruntime session; thread-safe.

    One infer request serves every thread, one call at a time: each call already uses
    every core, and a request holds its own activation buffers (about 90 MB more per
    concurrent request on 1080p tiles), so with two jobs in flight the second request
    cost memory and gained no speed. Only the inference waits: the rest of a detection
    (scaling, decoding the output maps, grouping) runs beside another job's inference.
    """

    def __init__(self, model_bytes: bytes, *, threads: int) -> None:
        import openvino as ov  # imported here: only a detector needs it

        core = ov.Core()
        self._compiled = core.compile_model(
            core.read_model(model_bytes),
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads,
                "CPU_RUNTIME_CACHE_CAPACITY": _SHAPE_CACHE_ENTRIES,
            },
        )
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()

    def run(self, output_names: list[str] | tuple[str, ...], feed: dict[str, Any]) -> list[Any]:
        (blob,) = feed.values()
        with self._lock:
            result = self._request.infer({0: blob})
            # Copies, under the lock: the request reuses its output buffers on the next call.
            return [np.array(result[self._compiled.output(name)]) for name in output_names]
