"""Tiny ONNX graphs built in the tests: an image input and outputs fixed in advance, so
a decoder's result can be checked against boxes computed by hand."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def constant_model(
    path: Path, outputs: dict[str, np.ndarray], *, input_shape: list[int | str] | None = None
) -> str:
    """Write a model whose image input (default N x 3 x H x W, any size) is ignored and
    whose outputs are `outputs`, in order; return its sha256."""
    shape = input_shape or ["batch", 3, "height", "width"]
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)
    nodes, infos = [], []
    for name, value in outputs.items():
        tensor = numpy_helper.from_array(value.astype(np.float32), name=f"{name}_value")
        nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "tiny", [image], infos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()
