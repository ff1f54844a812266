"""Detector families: each decoder against tiny ONNX graphs whose outputs are set by hand
(so the expected boxes are computed here, not by the code under test), refusals at start
naming the setting, several detectors together, and the real registry models on the
example pictures."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imageblur.bootstrap import build_detector
from imageblur.config import SettingsError, load_settings
from imageblur.detection.factory import CombinedDetector, DetectorChoice, make_detector
from imageblur.detection.families import parse_classes
from imageblur.detection.pyramid import PyramidConfig, PyramidDetector, SizeThresholds
from imageblur.detection.runtime import ModelError
from imageblur.domain import Face
from onnx_graphs import constant_model
from support import BILL, BILL_FACE, LINUS, LINUS_FACE, REPO

IMAGE = np.full((64, 64, 3), 128, np.uint8)  # one 64 x 64 tile, one scale


def close(face: Face, box: tuple[float, float, float, float], score: float, kind: str) -> bool:
    got = (face.x0, face.y0, face.x1, face.y1, face.score)
    return np.allclose(got, (*box, score), atol=1e-3) and face.kind == kind


def retinaface_graph(path: Path) -> str:
    # Priors of a 64 x 64 input: stride 8: 8 x 8 cells, 16: 4 x 4, 32: 2 x 2; two sizes
    # per cell: 128 + 32 + 8 = 168. Anchor 140 = stride 16, row 1, col 2, size 64:
    # centre (2.5 * 16, 1.5 * 16) = (40, 24).
    loc, conf = np.zeros((1, 168, 4)), np.tile([0.99, 0.01], (1, 168, 1))
    loc[0, 140] = [0.0, 0.5, math.log(0.5) / 0.2, math.log(0.5) / 0.2]
    conf[0, 140] = [0.1, 0.9]
    # cy = 24 + 0.5 * 0.1 * 64 = 27.2; w = h = 64 * 0.5 = 32 -> (24, 11.2, 56, 43.2)
    conf[0, 5] = [0.7, 0.3]  # below the threshold
    return constant_model(path, {"loc": loc, "conf": conf, "landmarks": np.zeros((1, 168, 10))})


def scrfd_graph(
    path: Path, *, keypoints: bool = False, input_shape: list[int | str] | None = None
) -> str:
    # Anchors of a 64 x 64 input: 8 x 8 x 2, 4 x 4 x 2, 2 x 2 x 2. Anchor 13 of stride 16
    # = row 1, col 2, second anchor: centre (2 * 16, 1 * 16) = (32, 16).
    counts = {8: 128, 16: 32, 32: 8}
    scores = {s: np.zeros((1, n, 1)) for s, n in counts.items()}
    boxes = {s: np.zeros((1, n, 4)) for s, n in counts.items()}
    scores[16][0, 13, 0] = 0.8
    boxes[16][0, 13] = [1.0, 0.5, 1.5, 2.0]  # * 16 -> (32 - 16, 16 - 8, 32 + 24, 16 + 32)
    outputs = {f"score_{s}": v for s, v in scores.items()}
    outputs |= {f"bbox_{s}": v for s, v in boxes.items()}
    if keypoints:
        outputs |= {f"kps_{s}": np.zeros((1, n, 10)) for s, n in counts.items()}
    return constant_model(path, outputs, input_shape=input_shape)


def yolo_rows(v8: bool) -> np.ndarray:
    """Two real candidates among 100 rows; 3 classes (0 plate, 1 ignored, 2 face)."""
    rows = np.zeros((100, 8 if not v8 else 7))
    if v8:  # cx cy w h, class scores
        rows[0] = [20, 30, 10, 6, 0.81, 0.1, 0.18]
        rows[1] = [40, 40, 16, 16, 0.0, 0.95, 0.72]
        return rows.T[np.newaxis]
    rows[0] = [20, 30, 10, 6, 0.9, 0.9, 0.1, 0.2]  # plate 0.81, face 0.18
    rows[1] = [40, 40, 16, 16, 0.8, 0.0, 0.95, 0.9]  # face 0.72
    return rows[np.newaxis]


def choice(family: str, path: Path, sha: str, **kw: object) -> DetectorChoice:
    return DetectorChoice(family=family, threshold=0.5, model_path=path, model_sha256=sha, **kw)  # type: ignore[arg-type]


def test_retinaface_decoding(tmp_path: Path) -> None:
    sha = retinaface_graph(tmp_path / "r.onnx")
    faces = make_detector([choice("retinaface", tmp_path / "r.onnx", sha)], threads=1).detect(IMAGE)
    assert len(faces) == 1 and close(faces[0], (24, 11.2, 56, 43.2), 0.9, "face")


def test_a_brought_family_looks_at_the_mirrored_image_too(tmp_path: Path) -> None:
    # The constant graph finds its box at the same place of any input: on the mirrored
    # 64 px image that is (8, 11.2, 40, 43.2) of the image, a second region.
    sha = retinaface_graph(tmp_path / "r.onnx")
    mirrored = choice("retinaface", tmp_path / "r.onnx", sha, mirrored_passes=1)
    detector = make_detector([mirrored], threads=1)
    assert isinstance(detector, PyramidDetector) and detector.pyramid.mirrored == 1
    faces = sorted(detector.detect(IMAGE), key=lambda f: f.x0)
    assert len(faces) == 2
    assert close(faces[0], (8, 11.2, 40, 43.2), 0.9, "face")
    assert close(faces[1], (24, 11.2, 56, 43.2), 0.9, "face")


@pytest.mark.parametrize("keypoints", [False, True])
def test_scrfd_decoding(tmp_path: Path, keypoints: bool) -> None:
    sha = scrfd_graph(tmp_path / "s.onnx", keypoints=keypoints)
    faces = make_detector([choice("scrfd", tmp_path / "s.onnx", sha)], threads=1).detect(IMAGE)
    assert len(faces) == 1 and close(faces[0], (16, 8, 56, 48), 0.8, "face")


@pytest.mark.parametrize("v8", [False, True], ids=["yolov5", "yolov8"])
def test_yolo_decoding_with_a_class_map(tmp_path: Path, v8: bool) -> None:
    sha = constant_model(tmp_path / "y.onnx", {"output0": yolo_rows(v8)})
    classes = parse_classes("0=plate, 2=face")
    detector = make_detector([choice("yolo", tmp_path / "y.onnx", sha, classes=classes)], threads=1)
    faces = sorted(detector.detect(IMAGE), key=lambda f: f.kind)
    assert [f.kind for f in faces] == ["face", "plate"]
    assert close(faces[0], (32, 32, 48, 48), 0.72, "face")
    assert close(faces[1], (15, 27, 25, 33), 0.81, "plate")


def test_a_fixed_size_export_is_fed_tiles_of_its_size(tmp_path: Path) -> None:
    fixed = tmp_path / "fixed.onnx"
    sha = scrfd_graph(fixed, input_shape=[1, 3, 64, 64])
    detector = make_detector([choice("scrfd", fixed, sha)], threads=1)
    # 100 x 150: tiles of at most 64 px, each padded to 64 x 64; every tile finds its box.
    faces = detector.detect(np.zeros((100, 150, 3), np.uint8))
    assert faces and all(f.x1 - f.x0 <= 40.01 for f in faces)


def test_several_detectors_group_their_candidates(tmp_path: Path) -> None:
    r_sha = retinaface_graph(tmp_path / "r.onnx")
    s_sha = scrfd_graph(tmp_path / "s.onnx")
    y_sha = constant_model(tmp_path / "y.onnx", {"output0": yolo_rows(False)})
    detector = make_detector(
        [
            choice("retinaface", tmp_path / "r.onnx", r_sha),
            choice("scrfd", tmp_path / "s.onnx", s_sha),
            choice("yolo", tmp_path / "y.onnx", y_sha, classes={0: "plate"}),
        ],
        threads=1,
    )
    assert isinstance(detector, CombinedDetector)
    faces = detector.detect(IMAGE)
    kinds = sorted(f.kind for f in faces)
    # RetinaFace's (24, 11.2, 56, 43.2) and SCRFD's (16, 8, 56, 48) overlap at IoU 0.64:
    # one face, scored 1 - (1 - 0.9)(1 - 0.8) = 0.98; and the plate.
    assert kinds == ["face", "plate"]
    face = next(f for f in faces if f.kind == "face")
    assert close(face, (24, 11.2, 56, 43.2), 0.98, "face")


class FixedRows:
    """A TileModel whose network finds the same rows (x0 y0 x1 y1 score kind) anywhere."""

    input_px = None

    def __init__(self, rows: list[tuple[float, ...]]) -> None:
        self.rows = np.array(rows, np.float32)

    def run(self, tile: np.ndarray, floor: float) -> np.ndarray:
        return self.rows[self.rows[:, 4] >= floor].copy()


def test_a_family_lists_the_groups_between_the_floor_and_its_threshold() -> None:
    model = FixedRows([(4, 4, 24, 24, 0.8, 0), (30, 30, 50, 50, 0.3, 0), (2, 40, 12, 50, 0.05, 0)])
    one_pass = PyramidConfig(coarsest_side_px=64)
    listing = PyramidDetector(model, threshold=0.5, pyramid=one_pass, uncertain_floor=0.2)
    hidden, uncertain = listing.detect_regions(IMAGE)
    assert [f.score for f in hidden] == pytest.approx([0.8])
    assert [f.score for f in uncertain] == pytest.approx([0.3])  # 0.05: under the floor
    assert listing.detect(IMAGE) == hidden
    plain = PyramidDetector(model, threshold=0.5, pyramid=one_pass)
    assert plain.detect_regions(IMAGE) == (hidden, [])


def test_a_call_may_bring_its_own_size_dependent_thresholds() -> None:
    # A 10 px box scoring 0.3 and a 20 px one scoring 0.6, for any family: the
    # detector's own threshold hides both; a call asking 0.5 and 0.7 up to 14 px (a
    # per-upload preset) hides the larger one only, and lists the smaller as uncertain.
    model = FixedRows([(4, 4, 14, 14, 0.3, 0), (30, 30, 50, 50, 0.6, 0)])
    detector = PyramidDetector(
        model, threshold=0.25, pyramid=PyramidConfig(coarsest_side_px=64), uncertain_floor=0.2
    )
    hidden, uncertain = detector.detect_regions(IMAGE)
    assert [f.score for f in hidden] == pytest.approx([0.6, 0.3]) and uncertain == []
    strict = SizeThresholds(0.5, small=0.7)
    hidden, uncertain = detector.detect_regions(IMAGE, strict)
    assert [f.score for f in hidden] == pytest.approx([0.6])
    assert [f.score for f in uncertain] == pytest.approx([0.3])
    assert detector.detect_regions(IMAGE)[0] == detector.detect(IMAGE)  # its own again


class Listing:
    def __init__(self, hidden: list[Face], uncertain: list[Face]) -> None:
        self.hidden, self.uncertain = hidden, uncertain

    def detect(self, image: np.ndarray) -> list[Face]:
        return list(self.hidden)

    def detect_regions(self, image: np.ndarray) -> tuple[list[Face], list[Face]]:
        return list(self.hidden), list(self.uncertain)


def test_several_detectors_drop_the_candidates_another_one_hides() -> None:
    first = Listing([Face(0, 0, 20, 20, 0.9)], [Face(30, 30, 50, 50, 0.3)])
    # The second hides what the first was unsure of, and is unsure of a new place; a
    # detector without candidates (only `detect`) takes part as well.
    second = Listing([Face(31, 31, 50, 50, 0.6)], [Face(5, 40, 15, 60, 0.2)])

    class Plain:
        def detect(self, image: np.ndarray) -> list[Face]:
            return [Face(40, 0, 60, 10, 0.7, "plate")]

    hidden, uncertain = CombinedDetector([first, second, Plain()]).detect_regions(IMAGE)
    assert sorted((f.kind, round(f.score, 2)) for f in hidden) == [
        ("face", 0.6),
        ("face", 0.9),
        ("plate", 0.7),
    ]
    assert [(f.x0, f.y0, round(f.score, 2)) for f in uncertain] == [(5, 40, 0.2)]


def test_a_wrong_hash_is_refused_naming_the_setting(tmp_path: Path) -> None:
    retinaface_graph(tmp_path / "r.onnx")
    with pytest.raises(ModelError, match="IMAGEBLUR_MODEL_SHA256"):
        make_detector([choice("retinaface", tmp_path / "r.onnx", "0" * 64)], threads=1)


def test_a_model_of_another_family_is_refused_naming_the_setting(tmp_path: Path) -> None:
    sha = retinaface_graph(tmp_path / "r.onnx")
    for family in ("scrfd", "yolo"):
        with pytest.raises(ModelError, match="IMAGEBLUR_MODEL_PATH"):
            make_detector(
                [choice(family, tmp_path / "r.onnx", sha, classes={0: "plate"})], threads=1
            )
    y_sha = constant_model(tmp_path / "y.onnx", {"output0": yolo_rows(False)})
    with pytest.raises(ModelError, match="IMAGEBLUR_MODEL_PATH"):
        make_detector([choice("retinaface", tmp_path / "y.onnx", y_sha)], threads=1)


def test_settings_require_a_model_and_its_hash_for_brought_families() -> None:
    with pytest.raises(SettingsError, match="IMAGEBLUR_MODEL_SHA256"):
        load_settings(detector="retinaface", model_path="/models/r.onnx")
    with pytest.raises(SettingsError, match="IMAGEBLUR_DETECTOR_CLASSES"):
        load_settings(detector="yolo", model_path="/m.onnx", model_sha256="a" * 64)
    with pytest.raises(SettingsError, match=r"IMAGEBLUR_EXTRA_DETECTORS\[0\].model_sha256"):
        load_settings(extra_detectors=[{"family": "yolo", "model_path": "/p.onnx"}])
    with pytest.raises(SettingsError, match="IMAGEBLUR_DETECTOR_CLASSES is for yolo"):
        load_settings(detector_classes="0=plate")  # centerface has no classes


def test_extra_detectors_come_from_json_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = constant_model(tmp_path / "y.onnx", {"output0": yolo_rows(False)})
    spec = f'[{{"family": "yolo", "model_path": "{tmp_path / "y.onnx"}", '
    spec += f'"model_sha256": "{sha}", "threshold": 0.3, "classes": "0=plate"}}]'
    monkeypatch.setenv("IMAGEBLUR_EXTRA_DETECTORS", spec)
    settings = load_settings(detector_threads=1)
    assert settings.extra_detectors[0].threshold == 0.3
    detector = build_detector(settings)  # CenterFace + the plate model
    assert isinstance(detector, CombinedDetector) and len(detector.detectors) == 2
    plates = [f for f in detector.detect(IMAGE) if f.kind == "plate"]
    assert len(plates) == 1 and close(plates[0], (15, 27, 25, 33), 0.81, "plate")

    monkeypatch.setenv("IMAGEBLUR_EXTRA_DETECTORS", spec.replace(sha, "f" * 64))
    with pytest.raises(ModelError, match=r"IMAGEBLUR_EXTRA_DETECTORS\[0\].model_sha256"):
        build_detector(load_settings())


# --- the real registry models (scripts/fetch_test_models.py, run by make install) -------
MODELS = REPO / ".cache" / "models"
REAL = {
    "retinaface": (
        "retinaface-mnet025.onnx",
        "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5",
    ),
    "scrfd": (
        "scrfd-2.5g.onnx",
        "9c162a817c7dd32d35d1f1c6ae6445032d6e73c6c5fe61d8b5b663ba8bc86b30",
    ),
}


@pytest.fixture(scope="module")
def real_models() -> Path:
    if not all((MODELS / name).is_file() for name, _ in REAL.values()):
        subprocess.run([sys.executable, str(REPO / "scripts" / "fetch_test_models.py")], check=True)
    return MODELS


def iou(face: Face, box: tuple[int, int, int, int]) -> float:
    x0, y0 = max(face.x0, box[0]), max(face.y0, box[1])
    x1, y1 = min(face.x1, box[2]), min(face.y1, box[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = face.width * face.height + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return inter / union


@pytest.mark.parametrize("family", sorted(REAL))
def test_real_models_find_the_faces_of_the_example_pictures(real_models: Path, family: str) -> None:
    name, sha = REAL[family]
    detector = build_detector(
        load_settings(
            detector=family,
            model_path=str(real_models / name),
            model_sha256=sha,
            detection_threshold=0.5,
            detector_threads=2,
        )
    )
    for picture, box in ((BILL, BILL_FACE), (LINUS, LINUS_FACE)):
        faces = detector.detect(np.asarray(Image.open(picture).convert("RGB")))
        assert len(faces) == 1, (picture.name, faces)
        assert iou(faces[0], box) > 0.7 and faces[0].kind == "face"


def test_a_plate_is_hidden_as_a_whole_rectangle_even_with_ellipse_masks() -> None:
    from imageblur.blurring import full_mask, mask_outlines
    from imageblur.domain import MaskGeometry

    plate = Face(20, 20, 60, 36, 0.9, kind="plate")
    face = Face(20, 20, 60, 36, 0.9)
    ellipse = MaskGeometry(scale=1.0, margin_px=3.0, shape="ellipse")
    assert full_mask(mask_outlines([plate], 80, 60, ellipse), 80, 60)[20:36, 20:60].all()
    corners_out = full_mask(mask_outlines([face], 80, 60, ellipse), 80, 60)
    assert not corners_out[20:36, 20:60].all()


def test_the_api_reads_the_detector_settings_without_loading_a_runtime() -> None:
    # The family names are all the settings need: the API process never loads
    # onnxruntime or OpenVINO, nor a family's code (`detection.presets` is a plain
    # cache of detectors, imported by the bootstrap).
    code = (
        "import sys, imageblur.entrypoints.api\n"
        "from imageblur.config import load_settings\n"
        "load_settings(detector='yolo', model_path='/m.onnx', model_sha256='0' * 64,"
        " detector_classes='0=plate')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('onnx', 'onnxruntime', 'openvino') or m.startswith('imageblur.detection')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == str(
        ["imageblur.detection", "imageblur.detection.families", "imageblur.detection.presets"]
    )
