"""The record's regions (hidden detections and uncertain candidates) and `render`, which
hides exactly the regions marked hidden, with no detection."""

from __future__ import annotations

import dataclasses
import io
import tracemalloc

import numpy as np
from PIL import Image

from imageblur.anonymizer import Anonymizer, regions_of
from imageblur.bootstrap import anonymize_options
from imageblur.config import Settings
from imageblur.domain import Face, MaskGeometry, Region, regions_from_json, regions_to_json
from imageblur.ports import RGBImage

OPTIONS = anonymize_options(Settings())  # the shipped masks
WIDTH, HEIGHT = 320, 240


class Reviewing:
    """A detector that hides `hidden` and lists `uncertain`."""

    def __init__(self, hidden: list[Face], uncertain: list[Face]) -> None:
        self.hidden, self.uncertain = hidden, uncertain

    def detect(self, image: RGBImage) -> list[Face]:
        return list(self.hidden)

    def detect_regions(self, image: RGBImage) -> tuple[list[Face], list[Face]]:
        return list(self.hidden), list(self.uncertain)


def photo_jpeg() -> bytes:
    """Coarse random texture, as a JPEG the patch path takes: hiding any part of it
    changes the pixels a lot, and detail far from a mask is easy to compare."""
    cells = np.random.default_rng(12).integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), np.uint8)
    texture = np.kron(cells, np.ones((8, 8, 1), np.uint8))
    out = io.BytesIO()
    Image.fromarray(texture).save(out, "JPEG", quality=90)
    return out.getvalue()


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB")).astype(int)


def changed(before: bytes, after: bytes, box: tuple[int, int, int, int]) -> float:
    """Mean absolute change of the pixels in box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    return float(np.abs(pixels(after) - pixels(before))[y0:y1, x0:x1].mean())


def region(rid: str, box: tuple[int, int, int, int], **kw: object) -> Region:
    x0, y0, x1, y1 = box
    fields: dict[str, object] = {
        "score": 0.9,
        "source": "detector",
        "kind": "face",
        "uncertain": False,
        "hidden": True,
    }
    fields.update(kw)
    return Region(rid, x0, y0, x1 - x0, y1 - y0, **fields)  # type: ignore[arg-type]


def test_uncertain_candidates_are_listed_not_hidden() -> None:
    data = photo_jpeg()
    hidden = [Face(40, 40, 80, 90, 0.9), Face(200, 60, 240, 110, 0.5)]
    uncertain = [Face(120, 150, 160, 200, 0.7)]
    result = Anonymizer(Reviewing(hidden, uncertain), OPTIONS)(data)
    assert result.faces == 2
    assert [(r.id, r.score, r.uncertain, r.hidden) for r in result.regions] == [
        ("r1", 0.9, False, True),
        ("r2", 0.7, True, False),
        ("r3", 0.5, False, True),
    ]
    assert all(r.source == "detector" and r.kind == "face" for r in result.regions)
    assert changed(data, result.data, (50, 50, 70, 80)) > 5  # hidden
    assert changed(data, result.data, (120, 150, 160, 200)) == 0  # listed only


def test_region_boxes_are_rounded_outward_and_clipped_to_the_image() -> None:
    faces = [Face(10.4, 20.6, 30.2, 40.0, 0.9), Face(-5.0, 200.5, 330.0, 260.0, 0.8)]
    first, second = regions_of(faces, [], WIDTH, HEIGHT)
    assert (first.x, first.y, first.width, first.height) == (10, 20, 21, 20)
    assert (second.x, second.y, second.width, second.height) == (0, 200, WIDTH, 40)
    # A degenerate box at the edge still makes a region of at least one pixel.
    (edge,) = regions_of([Face(320.0, 240.0, 320.0, 240.0, 0.5)], [], WIDTH, HEIGHT)
    assert (edge.x, edge.y, edge.width, edge.height) == (319, 239, 1, 1)


def test_regions_are_capped_keeping_the_hidden_ones() -> None:
    hidden = [Face(0, 0, 10, 10, s) for s in (0.2, 0.5)]
    uncertain = [Face(20, 20, 30, 30, s) for s in (0.1, 0.3, 0.4)]
    regions = regions_of(hidden, uncertain, WIDTH, HEIGHT, max_regions=3)
    assert [(r.id, r.score, r.hidden) for r in regions] == [
        ("r1", 0.5, True),
        ("r2", 0.4, False),
        ("r3", 0.2, True),
    ]


def test_render_hides_a_manual_box_and_keeps_far_blocks() -> None:
    data = photo_jpeg()
    manual = region("r1", (100, 80, 164, 144), score=None, source="manual")
    result = Anonymizer(Reviewing([], []), OPTIONS).render(data, [manual])
    assert result.jpeg_fallback is None  # the lossless patch path
    assert (result.faces, result.plates) == (1, 0)
    assert result.regions == [manual]
    # The whole rectangle is hidden, corners included (no ellipse for a manual box).
    assert changed(data, result.data, (100, 80, 108, 88)) > 5
    assert changed(data, result.data, (100, 80, 164, 144)) > 5
    diff = np.abs(pixels(result.data) - pixels(data)).sum(axis=2)
    far = np.ones_like(diff, bool)
    far[80 - 32 : 144 + 32, 100 - 32 : 164 + 32] = False
    assert not diff[far].any()


def test_render_clips_a_manual_box_partly_outside() -> None:
    data = photo_jpeg()
    manual = region("r1", (280, 200, 400, 300), score=None, source="manual")
    result = Anonymizer(Reviewing([], []), OPTIONS).render(data, [manual])
    assert changed(data, result.data, (280, 200, WIDTH, HEIGHT)) > 5


def test_render_leaves_a_detector_region_visible_when_not_hidden() -> None:
    data = photo_jpeg()
    shown = region("r1", (40, 40, 80, 90), hidden=False)
    result = Anonymizer(Reviewing([], []), OPTIONS).render(data, [shown])
    assert (result.faces, result.plates) == (0, 0)
    assert not np.abs(pixels(result.data) - pixels(data)).any()


def test_render_of_the_first_regions_with_a_candidate_hidden() -> None:
    data = photo_jpeg()
    detector = Reviewing([Face(40, 40, 80, 90, 0.9)], [Face(200, 60, 240, 110, 0.2)])
    anonymizer = Anonymizer(detector, OPTIONS)
    first = anonymizer(data)
    face, candidate = first.regions
    corrected = [region_with(face, hidden=False), region_with(candidate, hidden=True)]
    again = anonymizer.render(data, corrected, content_type="image/jpeg")
    assert again.faces == 1
    assert changed(data, again.data, (45, 45, 75, 85)) == 0
    assert changed(data, again.data, (205, 70, 235, 100)) > 5
    # A detector region is hidden under the detector's mask: an ellipse, corners kept.
    assert changed(data, again.data, (0, 0, 60, 40)) == 0


def test_render_counts_hidden_regions_by_kind() -> None:
    data = photo_jpeg()
    plate = region("r1", (20, 150, 90, 180), kind="plate")
    face = region("r2", (150, 40, 200, 100))
    result = Anonymizer(Reviewing([], []), OPTIONS).render(data, [plate, face])
    assert (result.faces, result.plates) == (1, 1)
    # A plate is a whole rectangle even with ellipse masks.
    assert changed(data, result.data, (20, 150, 26, 156)) > 0


def region_with(r: Region, *, hidden: bool) -> Region:
    return Region(r.id, r.x, r.y, r.width, r.height, r.score, r.source, r.kind, r.uncertain, hidden)


def test_an_anonymizer_holds_its_pixels_of_the_budget_only_while_it_works() -> None:
    from imageblur.pixel_budget import PixelBudget

    budget = PixelBudget(1)  # smaller than any photo: each call runs alone
    anonymizer = Anonymizer(Reviewing([], []), OPTIONS, budget=budget)
    data = photo_jpeg()
    assert anonymizer(data).width == 320
    assert anonymizer.render(data, []).width == 320
    assert budget.in_flight == 0


def test_regions_record_the_mask_geometry_they_were_hidden_with() -> None:
    detector = Reviewing([Face(40, 40, 80, 90, 0.9)], [Face(200, 60, 240, 110, 0.2)])
    result = Anonymizer(detector, OPTIONS)(photo_jpeg())
    geometry = MaskGeometry(OPTIONS.mask_scale, OPTIONS.margin_px, OPTIONS.shape)
    assert [r.mask for r in result.regions] == [geometry, geometry]
    assert regions_from_json(regions_to_json(result.regions)) == result.regions
    # As an older release stored it: no geometry, so today's settings apply.
    legacy = {k: v for k, v in result.regions[0].to_dict().items() if k != "mask"}
    assert Region.from_dict(legacy).mask is None


def rgba_png(alpha: np.ndarray) -> bytes:
    cells = np.random.default_rng(5).integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), np.uint8)
    rgb = np.kron(cells, np.ones((8, 8, 1), np.uint8))
    out = io.BytesIO()
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(out, "PNG")
    return out.getvalue()


def hidden_pixels(before: bytes, after: bytes) -> np.ndarray:
    return (np.abs(pixels(after) - pixels(before)).sum(axis=2) > 0) & (rgba(after)[..., 3] > 0)


def rgba(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGBA"))


def test_a_re_render_hides_what_the_first_render_hid_after_the_mask_settings_change() -> None:
    data = rgba_png(np.full((HEIGHT, WIDTH), 255, np.uint8))  # PNG: exact pixels
    detector = Reviewing([Face(60, 50, 110, 120, 0.9), Face(200, 60, 240, 110, 0.8)], [])
    first = Anonymizer(detector, OPTIONS)(data)
    smaller = dataclasses.replace(OPTIONS, mask_scale=1.0, margin_px=0.0, shape="ellipse")
    again = Anonymizer(detector, smaller).render(data, first.regions)
    before, after = hidden_pixels(data, first.data), hidden_pixels(data, again.data)
    assert before.sum() > 1000
    assert not (before & ~after).any()  # a superset: nothing the first render hid shows
    # A region stored without its geometry (an older release) is masked with today's.
    legacy = [dataclasses.replace(r, mask=None) for r in first.regions]
    today = hidden_pixels(data, Anonymizer(detector, smaller).render(data, legacy).data)
    assert today.sum() < before.sum()


def test_alpha_inside_the_masks_is_made_opaque() -> None:
    # A cut-out portrait: opaque where the head is, transparent around it. Kept as
    # uploaded, the alpha channel would show the head's outline over the blur.
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    head = ((xx - 160) / 40.0) ** 2 + ((yy - 110) / 55.0) ** 2 <= 1.0
    data = rgba_png(np.where(head, 255, 0).astype(np.uint8))
    detector = Reviewing([Face(120, 55, 200, 165, 0.9)], [])
    for result in (
        Anonymizer(detector, OPTIONS)(data),
        Anonymizer(detector, OPTIONS).render(data, regions_of(detector.hidden, [], WIDTH, HEIGHT)),
    ):
        alpha = rgba(result.data)[..., 3]
        assert (alpha[55:165, 125:195] == 255).all()  # the silhouette is gone
        assert (alpha[:20] == 0).all()  # far from the mask: as uploaded
    manual = region("m1", (0, 0, 30, 30), score=None, source="manual")
    corner = rgba(Anonymizer(detector, OPTIONS).render(data, [manual]).data)[..., 3]
    assert (corner[:30, :30] == 255).all() and (corner[30:40, :30] == 0).all()


def large_jpeg(width: int, height: int) -> bytes:
    cells = np.random.default_rng(1).integers(0, 256, (height // 16, width // 16, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(np.kron(cells, np.ones((16, 16, 1), np.uint8))).save(out, "JPEG", quality=85)
    return out.getvalue()


def render_peak_bytes(anonymizer: Anonymizer, data: bytes, regions: list[Region]) -> int:
    tracemalloc.start()
    try:
        result = anonymizer.render(data, regions)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.jpeg_fallback is None  # the lossless patch path, where it counts most
    return peak


def test_a_render_peak_is_bounded_by_the_image_not_the_region_count() -> None:
    width, height = 2400, 1600
    data = large_jpeg(width, height)
    anonymizer = Anonymizer(Reviewing([], []), OPTIONS)
    one = [region("m1", (0, 0, width, height), score=None, source="manual")]
    rng = np.random.default_rng(2)
    many = [
        region(f"m{i}", (int(x), int(y), int(x) + w, int(y) + h), score=None, source="manual")
        for i, (x, y, w, h) in enumerate(
            zip(
                rng.integers(0, width // 2, 500),
                rng.integers(0, height // 2, 500),
                rng.integers(width // 2, width, 500),
                rng.integers(height // 2, height, 500),
                strict=True,
            )
        )
    ]
    # Hidden detector regions as large (a reviewer may hide every uncertain candidate).
    detected = [dataclasses.replace(r, source="detector", score=0.5) for r in many]
    one_detected = [dataclasses.replace(one[0], source="detector", score=0.5)]
    peak_one = render_peak_bytes(anonymizer, data, one)
    peak_many = render_peak_bytes(anonymizer, data, many)
    # Before the merge, each of these boxes held a mask and a coefficient copy of its
    # own: 500 boxes of a quarter of the picture or more cost gigabytes.
    assert peak_many < 1.2 * peak_one, (peak_one, peak_many)
    # An ellipse is computed in floats over its box: compared with one such region.
    peak_one = render_peak_bytes(anonymizer, data, one_detected)
    peak_detected = render_peak_bytes(anonymizer, data, detected)
    assert peak_detected < 1.2 * peak_one, (peak_one, peak_detected)


def test_detector_masks_larger_than_the_picture_are_merged_and_still_hide_their_union() -> None:
    data = rgba_png(np.full((HEIGHT, WIDTH), 255, np.uint8))
    rng = np.random.default_rng(6)
    corners = rng.integers(0, 200, (40, 2))
    regions = [
        region(f"r{i}", (int(x), int(y), int(x) + 120, int(y) + 100))
        for i, (x, y) in enumerate(corners)
    ]
    anonymizer = Anonymizer(Reviewing([], []), OPTIONS)
    union = np.zeros((HEIGHT, WIDTH), bool)
    for r in regions:  # each as a first render would hide it alone
        union |= hidden_pixels(data, anonymizer.render(data, [r]).data)
    merged = hidden_pixels(data, anonymizer.render(data, regions).data)
    assert not (union & ~merged).any()
