"""The real CenterFace model on the real example pictures, plus the pure helpers."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from imageblur.cancel import Cancelled, Progress, cancellable, watched
from imageblur.config import Settings
from imageblur.detection.centerface import (
    centerface_detector,
    default_model_path,
    int8_model_path,
    prepared_graph,
)
from imageblur.detection.pyramid import (
    SMALL_PASS_MAX_PX,
    PyramidConfig,
    PyramidDetector,
    group,
    pyramid_scales,
    size_thresholds,
    tiles,
    unmirrored,
)
from imageblur.detection.runtime import SHAPE_STEP_PX, ModelError, OpenVINOSession
from imageblur.domain import Face
from support import LINUS_FACE

PICTURES = Path(__file__).resolve().parents[2].parent / "shared" / "example-pictures"
THRESHOLD: float = Settings.model_fields["detection_threshold"].default  # the shipped one
SHIPPED = {  # the shipped thresholds, size-dependent
    "threshold": THRESHOLD,
    "small_threshold": Settings.model_fields["detection_small_threshold"].default,
    "large_threshold": Settings.model_fields["detection_large_threshold"].default,
}
SHIPPED_LEVELS = (SHIPPED["small_threshold"], SHIPPED["large_threshold"])
THOROUGH_LEVELS = (0.24, 0.65, 0.4)  # the `thorough` preset's thresholds, as applied


def load_rgb(name: str) -> np.ndarray:
    path = PICTURES / name
    if not path.is_file():
        pytest.skip(f"example picture missing: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.fixture(scope="module")
def detector() -> PyramidDetector:
    return centerface_detector(**SHIPPED)


def covered(face: Face, x0: float, y0: float, x1: float, y1: float) -> float:
    """Share of the reference rectangle inside the detected box."""
    iw = max(0.0, min(face.x1, x1) - max(face.x0, x0))
    ih = max(0.0, min(face.y1, y1) - max(face.y0, y0))
    return iw * ih / ((x1 - x0) * (y1 - y0))


def test_default_model_is_installed_and_verified() -> None:
    path = default_model_path()
    assert path.name == "centerface.onnx"
    assert path.is_file()


def test_large_face_is_found_by_the_downscaled_passes(detector: PyramidDetector) -> None:
    # The face is about 750 x 940 px: at native size CenterFace scores it ~0.3 with a box
    # over the middle only. The core of the face (eyes to mouth) must be inside a box.
    image = load_rgb("bill-gates.jpg")
    faces = detector.detect(image)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.8
    assert face.width > 500 and face.height > 600
    assert covered(face, 850, 450, 1300, 1100) > 0.95


def test_small_face_is_found(detector: PyramidDetector) -> None:
    image = load_rgb("linus-trovalds.jpg")
    faces = detector.detect(image)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.5
    assert covered(face, 168, 22, 195, 56) > 0.9
    assert 25 < face.width < 60 and 30 < face.height < 70


def test_face_in_a_large_tiled_image(detector: PyramidDetector) -> None:
    # A small face pasted at the junction of tiles of a large blank picture: found once.
    face_img = load_rgb("linus-trovalds.jpg")[10:70, 155:210]
    canvas = np.full((2200, 2600, 3), 127, np.uint8)
    canvas[990:1050, 1000:1055] = face_img
    faces = detector.detect(canvas)
    assert len(faces) == 1
    assert covered(faces[0], 1013, 1012, 1040, 1046) > 0.9


def test_blank_and_tiny_images_have_no_faces(detector: PyramidDetector) -> None:
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert detector.detect(np.full((1, 1, 3), 200, np.uint8)) == []


def test_boxes_stay_inside_the_image(detector: PyramidDetector) -> None:
    image = load_rgb("bill-gates.jpg")
    for face in detector.detect(image):
        assert 0 <= face.x0 < face.x1 <= image.shape[1]
        assert 0 <= face.y0 < face.y1 <= image.shape[0]


def test_detect_is_thread_safe(detector: PyramidDetector) -> None:
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


def test_both_runtimes_find_the_same_faces(detector: PyramidDetector) -> None:
    # OpenVINO takes the tile as uint8 channels-last and converts it in the graph;
    # onnxruntime gets the float blob: the same faces, boxes within a few pixels.
    image = load_rgb("linus-trovalds.jpg")
    other = centerface_detector(**SHIPPED, runtime="onnxruntime")
    ours, theirs = detector.detect(image), other.detect(image)
    assert len(ours) == len(theirs) >= 1
    pairs = zip(sorted(ours, key=lambda f: f.x0), sorted(theirs, key=lambda f: f.x0), strict=True)
    for a, b in pairs:
        assert abs(a.score - b.score) < 0.05
        assert max(abs(a.x0 - b.x0), abs(a.y0 - b.y0), abs(a.x1 - b.x1), abs(a.y1 - b.y1)) < 4


def test_openvino_pads_tiles_to_a_few_shapes() -> None:
    # Each new input shape costs OpenVINO a kernel preparation: tiles of 100 x 300 and
    # 128 x 320 both go in as 128 x 384 (the heatmap, at a quarter of the input).
    assert SHAPE_STEP_PX == 128
    graph = prepared_graph(default_model_path())
    session = OpenVINOSession(graph, threads=1, outputs=["537"])  # the heatmap
    image = load_rgb("linus-trovalds.jpg")
    tile = np.ascontiguousarray(image[:100, :300])
    for height, width in ((100, 300), (128, 320)):
        (heatmap,) = session.run_tile(tile, height, width)
        assert heatmap.shape == (1, 1, 32, 96)


def test_openvino_runs_calls_in_flight_together_on_streams_of_their_own() -> None:
    # A call runs on a free stream of one thread: two calls at once, from two threads,
    # give the numbers a call alone gives.
    graph = prepared_graph(default_model_path())
    session = OpenVINOSession(graph, threads=2, outputs=["537"])  # the heatmap
    if session.streams < 2:
        pytest.skip("one physical core: OpenVINO runs one stream")
    tile = np.ascontiguousarray(load_rgb("linus-trovalds.jpg")[:200, :300])
    (alone,) = session.run_tile(tile, 200, 300)
    start = threading.Barrier(2)

    def call() -> npt.NDArray[np.float32]:
        start.wait()
        return session.run_tile(tile, 200, 300)[0]

    with ThreadPoolExecutor(max_workers=2) as pool:
        together = [f.result() for f in [pool.submit(call) for _ in range(2)]]
    for heatmap in together:
        np.testing.assert_array_equal(heatmap, alone)


_FIRST_CALLS_AT_ONCE = """
import threading, numpy as np
from imageblur.detection.centerface import default_model_path, prepared_graph
from imageblur.detection.runtime import OpenVINOSession
session = OpenVINOSession(prepared_graph(default_model_path()), threads=2, outputs=["537"])
start = threading.Barrier(2)
def call():
    start.wait()
    session.run_tile(np.zeros((200, 300, 3), np.uint8), 200, 300)
threads = [threading.Thread(target=call) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print("both ended")
"""


@pytest.mark.parametrize("attempt", range(3))
def test_two_first_calls_at_once_both_end(attempt: int) -> None:
    # The binding's first numpy exchange could deadlock two threads making it at once
    # (a pybind11 static guard taken with the GIL held): each attempt a new process,
    # since only the first calls of a process can meet it.
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_CALLS_AT_ONCE], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "both ended", done.stderr


def test_openvino_runs_a_stream_of_one_thread_per_core() -> None:
    session = OpenVINOSession(prepared_graph(default_model_path()), threads=4, outputs=["537"])
    # OpenVINO takes at most the physical cores (2 on the reference machine).
    assert 1 <= session.streams <= 4
    assert session._compiled.get_property("INFERENCE_NUM_THREADS") == session.streams


def test_openvino_on_one_thread_has_one_stream() -> None:
    session = OpenVINOSession(prepared_graph(default_model_path()), threads=1, outputs=["537"])
    assert session.streams == 1


def test_rejects_wrong_input(detector: PyramidDetector) -> None:
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10, 3), np.float32))


def test_missing_model_names_the_file_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "none.onnx"
    with pytest.raises(ModelError, match=r"none\.onnx.*make model"):
        centerface_detector(model_path=missing, threshold=THRESHOLD)


def test_wrong_model_hash_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "centerface.onnx"
    fake.write_bytes(b"not a model")
    digest = hashlib.sha256(b"not a model").hexdigest()
    with pytest.raises(ModelError, match=f"{digest}.*make model"):
        centerface_detector(model_path=fake, threshold=THRESHOLD)


@pytest.fixture(scope="module")
def int8_detector() -> PyramidDetector:
    return centerface_detector(**SHIPPED, precision="int8")


def test_the_int8_model_finds_the_example_faces(
    detector: PyramidDetector, int8_detector: PyramidDetector
) -> None:
    # The quantized network, on the pictures it was partly calibrated with (crops and
    # scales of them): each face once, where the float model puts it.
    for name in ("bill-gates.jpg", "linus-trovalds.jpg"):
        image = load_rgb(name)
        ours, reference = int8_detector.detect(image), detector.detect(image)
        assert len(ours) == len(reference) == 1
        assert ours[0].score > 0.8
        box, ref = ours[0], reference[0]
        assert covered(box, ref.x0, ref.y0, ref.x1, ref.y1) > 0.9
        assert box.width < 1.2 * ref.width and box.height < 1.2 * ref.height


def test_the_int8_model_is_shipped_in_the_package() -> None:
    xml = int8_model_path()
    assert xml.parent == default_model_path().parent
    assert xml.is_file() and xml.with_suffix(".bin").is_file()


def test_an_int8_model_with_another_hash_is_refused(tmp_path: Path) -> None:
    # A copy of the shipped files loads; a changed byte in either file is refused,
    # naming the file and the hash it has.
    xml, weights = tmp_path / "m.xml", tmp_path / "m.bin"
    xml.write_bytes(int8_model_path().read_bytes())
    weights.write_bytes(int8_model_path().with_suffix(".bin").read_bytes())
    centerface_detector(model_path=xml, threshold=THRESHOLD, precision="int8")
    for path in (weights, xml):
        data = bytearray(path.read_bytes())
        data[-2] ^= 1
        path.write_bytes(bytes(data))
        digest = hashlib.sha256(data).hexdigest()
        with pytest.raises(ModelError, match=f"{path.name} has sha256 {digest}"):
            centerface_detector(model_path=xml, threshold=THRESHOLD, precision="int8")
    xml.write_bytes(int8_model_path().read_bytes())
    weights.unlink()
    with pytest.raises(ModelError, match=r"not readable: .*m\.bin"):
        centerface_detector(model_path=xml, threshold=THRESHOLD, precision="int8")


def test_the_int8_model_runs_on_openvino_only() -> None:
    with pytest.raises(ValueError, match="openvino"):
        centerface_detector(threshold=THRESHOLD, precision="int8", runtime="onnxruntime")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        centerface_detector(threshold=0.0)
    with pytest.raises(ValueError):
        centerface_detector(threshold=THRESHOLD, threads=-1)


def test_pyramid_goes_down_to_a_thumbnail() -> None:
    cfg = PyramidConfig(scale_step=0.5, coarsest_side_px=320)
    assert pyramid_scales(300, 168, cfg) == [1.0]
    assert pyramid_scales(2400, 1350, cfg) == [1.0, 0.5, 0.25, 0.125]


def test_centerface_stops_its_pyramid_at_400_px(detector: PyramidDetector) -> None:
    # Web-size photos take two passes (docs/detection.md, Speed); the 940 px face of
    # bill-gates.jpg is still found by the 1/4 pass (the large-face test above).
    assert pyramid_scales(1200, 800, detector.pyramid) == [1.0, 0.5]
    assert pyramid_scales(2400, 1350, detector.pyramid) == [1.0, 0.5, 0.25]


def test_centerface_adds_up_weak_sightings_of_two_passes(detector: PyramidDetector) -> None:
    # Each pass keeps candidates down to 0.05, so a face that two passes see at 0.07
    # (each under the 0.12 a 22-64 px box needs) adds up to 0.135 and is hidden
    # (docs/detection.md, Privacy first: +5 / +4 faces protected on the subset).
    assert detector.pyramid.floor_score == 0.05
    weak = np.array([[0, 0, 40, 40, 0.07, 0], [1, 1, 41, 41, 0.07, 1]], np.float32)
    [face] = group(weak, detector.pyramid.group_iou)
    assert face[4] == pytest.approx(1 - 0.93**2)
    assert face[4] >= THRESHOLD


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
    detector = centerface_detector(**SHIPPED, pyramid=PyramidConfig(upscale=1.41))
    assert pyramid_scales(300, 168, detector.pyramid) == [1.41, 1.0]
    faces = detector.detect(load_rgb("linus-trovalds.jpg"))
    assert len(faces) == 1
    assert covered(faces[0], 168, 22, 195, 56) > 0.9


def test_small_and_large_boxes_need_a_higher_score() -> None:
    # boxes whose sqrt(area) is 10, 14, 18, 22, 40, 64, 96, 128 and 300 px
    sides = (10, 14, 18, 22, 40, 64, 96, 128, 300)
    boxes = np.array([[0, 0, s, s, 0] for s in sides], np.float32)
    need = size_thresholds(boxes, 0.12, 0.36, 0.2)
    assert need == pytest.approx([0.36, 0.36, 0.24, 0.12, 0.12, 0.12, 0.16, 0.2, 0.2])


def test_the_small_threshold_is_never_below_the_threshold() -> None:
    high = centerface_detector(threshold=0.5, small_threshold=0.35, large_threshold=0.25)
    assert high.thresholds.levels() == (0.5, 0.5)
    plain = centerface_detector(threshold=0.39)
    assert plain.thresholds.levels() == (0.39, 0.39)
    with pytest.raises(ValueError):
        centerface_detector(threshold=THRESHOLD, small_threshold=1.0)


def test_the_worker_and_blur_command_get_the_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    from imageblur.bootstrap import anonymize_options, build_detector
    from imageblur.config import load_settings

    monkeypatch.delenv("IMAGEBLUR_DETECTION_PRESET", raising=False)
    settings = load_settings()
    detector = build_detector(settings)
    assert isinstance(detector, PyramidDetector)
    assert (detector.threshold, *detector.thresholds.levels()) == (
        0.12,
        0.35,
        0.25,
    )
    options = anonymize_options(settings)
    assert (options.mask_scale, options.margin_px) == (1.1, 12.0)
    monkeypatch.setenv("IMAGEBLUR_DETECTION_PRESET", "tidy")
    tidy = build_detector(load_settings())
    assert isinstance(tidy, PyramidDetector)
    assert (tidy.threshold, *tidy.thresholds.levels()) == (0.39, 0.39, 0.39)
    assert (detector.pyramid.mirrored, tidy.pyramid.mirrored) == (0, 0)
    monkeypatch.setenv("IMAGEBLUR_DETECTION_PRESET", "thorough")
    settings = load_settings()
    thorough = build_detector(settings)
    assert isinstance(thorough, PyramidDetector)
    assert (thorough.threshold, *thorough.thresholds.levels()) == THOROUGH_LEVELS
    assert thorough.pyramid == replace(detector.pyramid, mirrored=2, small_pass_scale=1.41)
    options = anonymize_options(settings)
    assert (options.mask_scale, options.margin_px) == (1.1, 12.0)


def test_uncertain_candidates_are_the_groups_below_their_threshold(
    detector: PyramidDetector,
) -> None:
    listing = centerface_detector(**SHIPPED, uncertain_floor=0.1)
    linus = load_rgb("linus-trovalds.jpg")
    # Demanding 0.9 everywhere, the face (~34 px, ~0.8) is only listed, not hidden.
    strict = centerface_detector(threshold=0.9, uncertain_floor=0.1)
    hidden, uncertain = strict.detect_regions(linus)
    assert hidden == [] and len(uncertain) == 1 and 0.1 <= uncertain[0].score < 0.9
    assert covered(uncertain[0], *LINUS_FACE) > 0.8
    # Shrunk to a quarter, the face is ~11 px and scores ~0.2, under the 0.35 such small
    # boxes need: not hidden, and too small to be listed (UNCERTAIN_MIN_PX).
    tiny = np.ascontiguousarray(cv2.resize(linus, (75, 42), interpolation=cv2.INTER_AREA))
    assert detector.detect(tiny) == []
    assert listing.detect_regions(tiny) == ([], [])
    for image in (linus, tiny, load_rgb("bill-gates.jpg")):
        hidden, uncertain = listing.detect_regions(image)
        # What is hidden does not depend on the floor.
        assert hidden == detector.detect(image) == listing.detect(image)
        assert detector.detect_regions(image) == (hidden, [])
        rows = np.array([[f.x0, f.y0, f.x1, f.y1, f.score] for f in uncertain], np.float32)
        need = size_thresholds(rows.reshape(-1, 5), THRESHOLD, *SHIPPED_LEVELS)
        assert (rows.reshape(-1, 5)[:, 4] < need).all()
        assert all(f.score >= 0.1 and f.width * f.height >= 14**2 for f in uncertain)
    # A blank image has nothing, hidden or uncertain.
    assert listing.detect_regions(np.zeros((64, 64, 3), np.uint8)) == ([], [])


def test_the_uncertain_floor_is_never_below_what_the_passes_keep() -> None:
    # Below 0.05 (CenterFace's floor_score) a pass would keep weaker candidates, which
    # would join the hidden groups and change them: the floor is raised to it.
    assert centerface_detector(**SHIPPED, uncertain_floor=0.03).uncertain_floor == 0.05
    assert centerface_detector(**SHIPPED, uncertain_floor=0.11).uncertain_floor == 0.11
    assert centerface_detector(**SHIPPED).uncertain_floor is None
    with pytest.raises(ValueError):
        centerface_detector(**SHIPPED, uncertain_floor=0.0)


def test_a_cancelled_job_stops_before_the_next_pass(detector: PyramidDetector) -> None:
    """The worker cancels a job whose lease is lost; the pyramid checks between passes."""
    image = np.zeros((800, 1000, 3), np.uint8)
    cancelled = threading.Event()
    with cancellable(cancelled):
        assert detector.detect(image) == []  # not cancelled: the whole pyramid
        cancelled.set()
        with pytest.raises(Cancelled):
            detector.detect(image)
    assert detector.detect(image) == []  # outside a job, never cancelled


class BrightBox:
    """A stand-in network: the bounding box of a tile's bright pixels, scoring 0.3, so
    whatever the pyramid does to the image shows in the boxes it maps back."""

    input_px = None

    def run(self, tile: np.ndarray, floor: float) -> np.ndarray:
        ys, xs = np.nonzero(tile[:, :, 0] > 127)
        if xs.size == 0:
            return np.zeros((0, 6), np.float32)
        row = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.3, 0]
        return np.array([row], np.float32)


def test_a_box_found_on_the_mirrored_image_maps_back_exactly() -> None:
    # Odd and even widths: column i of the image is column width - 1 - i mirrored.
    for width in (7, 8):
        boxes = np.array([[1.0, 0.0, 3.0, 1.0, 0.5], [0.0, 2.0, width, 4.0, 0.2]], np.float32)
        mapped = unmirrored(boxes.copy(), width)
        assert mapped[:, :4].tolist() == [[width - 3, 0, width - 1, 1], [0, 2, width, 4]]
        assert mapped[:, 4].tolist() == boxes[:, 4].tolist()
        assert np.array_equal(unmirrored(mapped.copy(), width), boxes)


@pytest.mark.parametrize("width", [301, 300])
def test_the_mirrored_pass_sees_the_same_box_and_adds_up(width: int) -> None:
    image = np.zeros((250, width, 3), np.uint8)
    image[40:52, 17:26] = 255  # off-centre, odd-sized: a wrong mapping would show
    cfg = PyramidConfig(coarsest_side_px=100, floor_score=0.05)  # scales 1, 1/2, 1/4
    plain = PyramidDetector(BrightBox(), threshold=0.2, pyramid=cfg)
    looked_twice = PyramidDetector(BrightBox(), threshold=0.2, pyramid=replace(cfg, mirrored=1))
    (once,) = plain.detect(image)
    (twice,) = looked_twice.detect(image)
    assert (once.x0, once.y0, once.x1, once.y1) == (17, 40, 26, 52)
    assert (twice.x0, twice.y0, twice.x1, twice.y1) == (17, 40, 26, 52)
    # Its own pass in the noisy-or: 1 - 0.7 * 0.7.
    assert (once.score, twice.score) == pytest.approx((0.3, 0.51))


def test_a_weak_sighting_only_the_mirrored_pass_made_is_an_uncertain_candidate() -> None:
    class RightHalfOnly(BrightBox):
        """Sees the bright box only in a tile's right half, weakly: on this image only
        the mirrored pass sees it."""

        def run(self, tile: np.ndarray, floor: float) -> np.ndarray:
            rows = super().run(tile, floor)
            rows[:, 4] = 0.15  # above the floor, below the threshold
            return rows[rows[:, 0] >= tile.shape[1] / 2]

    image = np.zeros((250, 301, 3), np.uint8)
    image[40:60, 17:35] = 255  # left half, 18 x 20 px: large enough to be listed
    cfg = PyramidConfig(coarsest_side_px=100, floor_score=0.05)
    found = {}
    for mirrored in (0, 1):
        detector = PyramidDetector(
            RightHalfOnly(),
            threshold=0.2,
            pyramid=replace(cfg, mirrored=mirrored),
            uncertain_floor=0.1,
            uncertain_min_px=14.0,
        )
        found[mirrored] = detector.detect_regions(image)
    assert found[0] == ([], [])
    hidden, (unsure,) = found[1]
    assert hidden == []  # mapped back to where the face is, for a reviewer to hide
    assert (unsure.x0, unsure.y0, unsure.x1, unsure.y1, unsure.score) == pytest.approx(
        (17, 40, 35, 60, 0.15)
    )


@pytest.mark.parametrize(("side", "score"), [(12, 0.51), (40, 0.3)])
def test_the_small_face_pass_adds_up_for_small_boxes_only(side: int, score: float) -> None:
    image = np.zeros((250, 301, 3), np.uint8)
    image[40 : 40 + side, 17 : 17 + side] = 255
    cfg = PyramidConfig(coarsest_side_px=100, floor_score=0.05)  # scales 1, 1/2, 1/4
    enlarged = PyramidDetector(
        BrightBox(), threshold=0.2, pyramid=replace(cfg, small_pass_scale=1.5)
    )
    (face,) = enlarged.detect(image)
    # The finest pass leads the group (first of equal scores): its box, exactly.
    assert (face.x0, face.y0, face.x1, face.y1) == (17, 40, 17 + side, 40 + side)
    # 12 px: the enlarged pass sees it too (1 - 0.7 * 0.7); 40 px: over SMALL_PASS_MAX_PX,
    # the enlarged pass's sighting is dropped and the score is the plain passes' alone.
    assert face.score == pytest.approx(score)
    assert cfg.small_pass_max_px == SMALL_PASS_MAX_PX and 12 < SMALL_PASS_MAX_PX < 40


def test_the_extra_passes_run_once_each_and_count_as_work() -> None:
    calls: list[tuple[int, int]] = []

    class Counting(BrightBox):
        def run(self, tile: np.ndarray, floor: float) -> np.ndarray:
            calls.append(tile.shape[:2])
            return super().run(tile, floor)

    image = np.zeros((250, 301, 3), np.uint8)
    cfg = PyramidConfig(coarsest_side_px=100, tile_px=4096)
    runs: list[tuple[dict[str, float], list[tuple[int, int]]]] = [
        ({}, []),
        ({"small_pass_scale": 1.5}, [(375, 452)]),
        ({"small_pass_scale": 1.5, "mirrored": 1}, [(375, 452), (250, 301)]),
    ]
    for looks, extra in runs:
        calls.clear()
        detector = PyramidDetector(Counting(), threshold=0.2, pyramid=replace(cfg, **looks))
        with watched(Progress()) as progress:
            detector.detect(image)
        assert calls == [(250, 301), (125, 150), (62, 75), *extra]
        assert progress.done == progress.total == len(calls)  # every tile is announced
    with pytest.raises(ValueError, match="enlarges"):
        PyramidConfig(small_pass_scale=1.0)


def test_tiles_at_once_give_the_rows_of_tiles_one_at_a_time() -> None:
    # A model running two tiles at once (OpenVINO's streams) gets two of an image's tiles
    # at a time, from other threads; the rows come back in the windows' order, and every
    # tile still passes a checkpoint in the job's own thread.
    threads: set[str] = set()

    class TwoAtOnce(BrightBox):
        tiles_at_once = 2

        def run(self, tile: np.ndarray, floor: float) -> np.ndarray:
            threads.add(threading.current_thread().name)
            return super().run(tile, floor)

    image = np.zeros((700, 900, 3), np.uint8)
    image[100:160, 120:170] = 255  # seen by several overlapping tiles
    image[500:520, 780:800] = 255
    cfg = PyramidConfig(coarsest_side_px=100, tile_px=256, max_face_px=64)
    one = PyramidDetector(BrightBox(), threshold=0.2, pyramid=cfg)
    two = PyramidDetector(TwoAtOnce(), threshold=0.2, pyramid=cfg)
    with watched(Progress()) as progress:
        found = two.detect_regions(image)
    assert found == one.detect_regions(image)
    assert len(found[0]) >= 2
    assert progress.done == progress.total > 2
    # Passes of several tiles ran on the tile threads (those of one tile in the caller's).
    assert {"tiles_0", "tiles_1"} <= threads


def test_the_mirrored_pass_only_runs_where_configured() -> None:
    calls: list[tuple[int, int]] = []

    class Counting(BrightBox):
        def run(self, tile: np.ndarray, floor: float) -> np.ndarray:
            calls.append(tile.shape[:2])
            return super().run(tile, floor)

    image = np.zeros((250, 301, 3), np.uint8)
    cfg = PyramidConfig(coarsest_side_px=100)
    for mirrored, shapes in ((0, 3), (1, 4), (2, 5), (9, 6)):
        calls.clear()
        PyramidDetector(Counting(), threshold=0.2, pyramid=replace(cfg, mirrored=mirrored)).detect(
            image
        )
        assert len(calls) == shapes
