"""Face (and licence-plate) detection behind the `FaceDetector` port.

- `families`: the families by name and the kinds of region they find; light (no
  runtime), what the settings validate against.
- `pyramid`: what every family shares: the scales, tiles, size band, grouping and the
  size-dependent thresholds, in one `PyramidDetector` around a family's `TileModel`.
- `runtime`: the verified model file, the onnxruntime session factory, OpenVINO.
- `base`: the checks every brought family makes of its export.
- `centerface` (shipped), `retinaface`, `scrfd`, `yolo`: one family each, a module named
  after it that knows one export's tensors.
- `factory`: a detector from the configured families, several run together as one.
- `presets`: the detector each preset an upload asks for looks with, loaded on first use.

This module imports nothing, so that reading `families` loads no runtime.
"""
