"""The real CenterFace model on the real example pictures, plus the pure helpers."""

from __future__ import annotations

import hashlib
import itertools
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from imageblur.config import Settings
from imageblur.detection import (
    CenterFaceDetector,
    ModelError,
    PyramidConfig,
    default_model_path,
    group,
    pyramid_scales,
    tiles,
)
from imageblur.domain import Face

PICTURES = Path(__file__).resolve().parents[2].parent / "shared" / "example-pictures"
THRESHOLD: float = Settings.model_fields["detection_threshold"].default  # the shipped one


def load_rgb(name: str) -> np.ndarray:
    path = PICTURES / name
    if not path.is_file():
        pytest.skip(f"example picture missing: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.fixture(scope="module")
def detector() -> CenterFaceDetector:
    return CenterFaceDetector(threshold=THRESHOLD)


def covered(face: Face, x0: float, y0: float, x1: float, y1: float) -> float:
    """Share of the reference rectangle inside the detected box."""
    iw = max(0.0, min(face.x1, x1) - max(face.x0, x0))
    ih = max(0.0, min(face.y1, y1) - max(face.y0, y0))
    return iw * ih / ((x1 - x0) * (y1 - y0))


def test_default_model_is_installed_and_verified() -> None:
    path = default_model_path()
    assert path.name == "centerface.onnx"
    assert path.is_file()


def test_large_face_is_found_by_the_downscaled_passes(detector: CenterFaceDetector) -> None:
    # The face is about 750 x 940 px: at native size CenterFace scores it ~0.3 with a box
    # over the middle only. The core of the face (eyes to mouth) must be inside a box.
    image = load_rgb("bill-gates.jpg")
    faces = detector.detect(image)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.8
    assert face.width > 500 and face.height > 600
    assert covered(face, 850, 450, 1300, 1100) > 0.95


def test_small_face_is_found(detector: CenterFaceDetector) -> None:
    image = load_rgb("linus-trovalds.jpg")
    faces = detector.detect(image)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.5
    assert covered(face, 168, 22, 195, 56) > 0.9
    assert 25 < face.width < 60 and 30 < face.height < 70


def test_face_in_a_large_tiled_image(detector: CenterFaceDetector) -> None:
    # A small face pasted at the junction of tiles of a large blank picture: found once.
    face_img = load_rgb("linus-trovalds.jpg")[10:70, 155:210]
    canvas = np.full((2200, 2600, 3), 127, np.uint8)
    canvas[990:1050, 1000:1055] = face_img
    faces = detector.detect(canvas)
    assert len(faces) == 1
    assert covered(faces[0], 1013, 1012, 1040, 1046) > 0.9


def test_blank_and_tiny_images_have_no_faces(detector: CenterFaceDetector) -> None:
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert detector.detect(np.full((1, 1, 3), 200, np.uint8)) == []


def test_boxes_stay_inside_the_image(detector: CenterFaceDetector) -> None:
    image = load_rgb("bill-gates.jpg")
    for face in detector.detect(image):
        assert 0 <= face.x0 < face.x1 <= image.shape[1]
        assert 0 <= face.y0 < face.y1 <= image.shape[0]


def test_detect_is_thread_safe(detector: CenterFaceDetector) -> None:
    image = load_rgb("linus-trovalds.jpg")
    expected = detector.detect(image)
    results: list[list[Face]] = []

    def run() -> None:
        results.append(detector.detect(image))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 4


def test_rejects_wrong_input(detector: CenterFaceDetector) -> None:
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10, 3), np.float32))


def test_missing_model_names_the_file_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "none.onnx"
    with pytest.raises(ModelError, match=r"none\.onnx.*make model"):
        CenterFaceDetector(model_path=missing, threshold=THRESHOLD)


def test_wrong_model_hash_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "centerface.onnx"
    fake.write_bytes(b"not a model")
    digest = hashlib.sha256(b"not a model").hexdigest()
    with pytest.raises(ModelError, match=f"{digest}.*make model"):
        CenterFaceDetector(model_path=fake, threshold=THRESHOLD)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        CenterFaceDetector(threshold=0.0)
    with pytest.raises(ValueError):
        CenterFaceDetector(threshold=THRESHOLD, threads=-1)


def test_pyramid_goes_down_to_a_thumbnail() -> None:
    cfg = PyramidConfig(scale_step=0.5, coarsest_side_px=320)
    assert pyramid_scales(300, 168, cfg) == [1.0]
    assert pyramid_scales(2400, 1350, cfg) == [1.0, 0.5, 0.25, 0.125]


def test_tiles_cover_with_overlap() -> None:
    windows = list(tiles(2500, 900, 1024, 200))
    assert {(w[1], w[3]) for w in windows} == {(0, 900)}
    xs = sorted((w[0], w[2]) for w in windows)
    assert xs[0][0] == 0 and xs[-1][1] == 2500
    for (_, end), (start, _) in itertools.pairwise(xs):
        assert end - start >= 200


def test_group_merges_passes_with_noisy_or() -> None:
    dets = np.array(
        [
            [0, 0, 100, 100, 0.5, 0],
            [5, 5, 105, 105, 0.4, 1],  # the same face at another pass
            [2, 2, 102, 102, 0.3, 1],  # a weaker cell of that pass: not counted twice
            [20, 20, 60, 60, 0.2, 0],  # nested in the first
            [300, 300, 350, 350, 0.6, 2],  # elsewhere
        ],
        np.float32,
    )
    out = group(dets, 0.4)
    out = out[np.argsort(out[:, 0])]
    assert len(out) == 2
    assert out[0][:4].tolist() == [0, 0, 100, 100]
    assert out[0][4] == pytest.approx(1 - 0.5 * 0.6)
    assert out[1][4] == pytest.approx(0.6)


def test_optional_upscaled_pass_still_finds_the_face() -> None:
    detector = CenterFaceDetector(threshold=THRESHOLD, pyramid=PyramidConfig(upscale=1.41))
    assert pyramid_scales(300, 168, detector.pyramid) == [1.41, 1.0]
    faces = detector.detect(load_rgb("linus-trovalds.jpg"))
    assert len(faces) == 1
    assert covered(faces[0], 168, 22, 195, 56) > 0.9
