"""What the families share besides the pyramid: the configured choice of one detector,
and the checks every brought export goes through before it may run (one image input, the
outputs its family expects, a trial run), so each family's module only decodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from imageblur.detection.families import Family
from imageblur.detection.pyramid import ALIGN, FloatArray, PyramidConfig, PyramidDetector, round_up
from imageblur.detection.runtime import ModelError, ModelSource, Precision, onnxruntime_session
from imageblur.domain import RegionKind
from imageblur.ports import RGBImage


@dataclass(frozen=True, slots=True)
class DetectorChoice:
    """One detector as configured, with the names of the settings that chose its model
    (for messages). `small_threshold` and `large_threshold` apply to the families whose
    scores were measured by size (CenterFace's); the others take one threshold.
    `mirrored_passes` and `small_pass_scale`: the pyramid's `mirrored` and
    `small_pass_scale` (the `thorough` preset's extra looks), for any family.
    `precision`: CenterFace's (`int8`: the shipped int8 model); the others run float."""

    family: Family
    threshold: float
    model_path: Path | None = None
    model_sha256: str | None = None
    classes: dict[int, RegionKind] = field(default_factory=dict)
    small_threshold: float | None = None
    large_threshold: float | None = None
    mirrored_passes: int = 0
    small_pass_scale: float | None = None
    precision: Precision = "float"
    path_setting: str = "IMAGEBLUR_MODEL_PATH"
    sha256_setting: str = "IMAGEBLUR_MODEL_SHA256"

    def pyramid(self, base: PyramidConfig) -> PyramidConfig:
        """The family's pyramid with this choice's extra looks."""
        return replace(base, mirrored=self.mirrored_passes, small_pass_scale=self.small_pass_scale)

    def source(self) -> ModelSource:
        if self.model_path is None or not self.model_sha256:
            raise ModelError(
                f"a {self.family} detector needs {self.path_setting} and {self.sha256_setting}"
            )
        return ModelSource(
            self.model_path, self.model_sha256, self.path_setting, self.sha256_setting
        )


class BroughtModel:
    """A brought export of a family, as a `TileModel`: checked once when loaded.

    A subclass names its `family`, checks its outputs (`check_outputs`) and implements
    `run`; a fixed-size export is fed tiles of its size, any other is padded to a
    multiple of 32 (`blob_size`)."""

    family: ClassVar[str]

    def __init__(self, session: Any, source: ModelSource, classes: dict[int, RegionKind]) -> None:
        self._session = session
        self._classes = dict(classes)
        self._input = _image_input(session, source, self.family)
        self._fixed = _fixed_input_size(session)
        self._outputs = self.check_outputs(session.get_outputs(), source)
        try:
            self.run(np.zeros((64, 64, 3), np.uint8), 1.0)  # shapes fit the decoding
        except Exception as exc:  # onnxruntime or our decode: either way, not this family
            raise source.refuse(f"does not work as a {self.family} model: {exc}") from exc

    def check_outputs(self, outputs: Sequence[Any], source: ModelSource) -> list[str]:
        """The names of the outputs `run` reads; `source.refuse(...)` if they do not fit."""
        raise NotImplementedError

    @property
    def input_px(self) -> int | None:
        return min(self._fixed) if self._fixed else None

    def blob_size(self, tile: RGBImage) -> tuple[int, int]:
        """(height, width) of the blob a tile goes in."""
        h, w = tile.shape[:2]
        return self._fixed or (round_up(h, ALIGN), round_up(w, ALIGN))

    def run(self, tile: RGBImage, floor: float) -> FloatArray:
        raise NotImplementedError


def brought_detector(
    choice: DetectorChoice,
    model: type[BroughtModel],
    pyramid: PyramidConfig,
    *,
    threads: int,
    uncertain_floor: float | None,
) -> PyramidDetector:
    """A brought family's detector: its verified model on onnxruntime, over the pyramid,
    at one threshold for every size."""
    source = choice.source()
    path = source.verified_path()
    try:
        session = onnxruntime_session(str(path), threads=threads)
    except Exception as exc:  # onnxruntime raises its own kinds for a bad file
        raise source.refuse(f"not a usable ONNX model: {exc}") from exc
    return PyramidDetector(
        model(session, source, choice.classes),
        threshold=choice.threshold,
        pyramid=choice.pyramid(pyramid),
        uncertain_floor=uncertain_floor,
    )


def _fixed_input_size(session: Any) -> tuple[int, int] | None:
    """(height, width) of an export with a fixed input size, None if it takes any."""
    shape = session.get_inputs()[0].shape
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
        return int(shape[2]), int(shape[3])
    return None


def _image_input(session: Any, source: ModelSource, family: str) -> str:
    """The name of the one image input (N x 3 x H x W); refuse anything else."""
    inputs = session.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    if len(inputs) != 1 or len(shape) != 4 or shape[1] != 3:
        described = [(i.name, i.shape) for i in inputs]
        raise source.refuse(
            f"a {family} model takes one N x 3 x H x W image input, this one takes {described}"
        )
    return str(inputs[0].name)
