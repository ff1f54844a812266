"""Anonymization: detail destroyed inside the masks, pixels identical outside."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from imageblur.blurring import (
    MASK_MARGIN_PX,
    PIXELATE_CELLS,
    anonymize,
    disjoint_rectangles,
    full_mask,
    hide_masks,
    mask_outlines,
    merged_boxes,
    merged_masks,
    opaque_masks,
    region_mask,
)
from imageblur.config import Settings
from imageblur.domain import Face, MaskGeometry, MaskShape

PICTURES = Path(__file__).resolve().parents[2].parent / "shared" / "example-pictures"
MODES = ("blur", "pixelate", "solid")
MASK_SCALE: float = Settings.model_fields["mask_scale"].default  # the shipped default


def geometry(
    scale: float, shape: MaskShape = "ellipse", margin_px: float = MASK_MARGIN_PX
) -> MaskGeometry:
    return MaskGeometry(scale=scale, margin_px=margin_px, shape=shape)


def hidden(faces: list[Face], width: int, height: int, mask: MaskGeometry) -> np.ndarray:
    return full_mask(mask_outlines(faces, width, height, mask), width, height)


def load_rgb(name: str) -> np.ndarray:
    path = PICTURES / name
    if not path.is_file():
        pytest.skip(f"example picture missing: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def detail(pixels: np.ndarray) -> float:
    """Mean absolute Laplacian: high for sharp texture, near zero once blurred."""
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(gray, cv2.CV_32F)).mean())


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# Boxes of the example faces (what the detector returns, rounded); no model needed here.
GATES = Face(698, 279, 1449, 1220, 0.92)
LINUS = Face(163, 14, 200, 63, 0.84)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", ["ellipse", "box"])
def test_outside_the_mask_is_pixel_identical(mode: str, shape: str) -> None:
    image = noise(300, 400)
    faces = [Face(50, 40, 150, 170, 0.9), Face(300, 200, 330, 240, 0.5)]
    out = anonymize(image, faces, mode=mode, shape=shape, mask_scale=1.3)  # type: ignore[arg-type]
    mask = hidden(faces, 400, 300, geometry(1.3, shape))  # type: ignore[arg-type]
    assert out is not image
    assert np.array_equal(out[~mask], image[~mask])
    assert not np.array_equal(out[mask], image[mask])


def test_input_is_not_modified() -> None:
    image = noise(100, 100)
    before = image.copy()
    anonymize(image, [Face(10, 10, 60, 60, 0.9)], mask_scale=MASK_SCALE)
    assert np.array_equal(image, before)


@pytest.mark.parametrize("mode", MODES)
def test_in_place_gives_the_same_pixels_without_a_copy(mode: str) -> None:
    image = noise(200, 300)
    faces = [Face(20, 20, 120, 140, 0.9), Face(90, 100, 200, 190, 0.8)]  # overlapping
    expected = anonymize(image, faces, mode=mode, mask_scale=MASK_SCALE)  # type: ignore[arg-type]
    out = anonymize(image, faces, mode=mode, mask_scale=MASK_SCALE, in_place=True)  # type: ignore[arg-type]
    assert out is image
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("name", "face"), [("bill-gates.jpg", GATES), ("linus-trovalds.jpg", LINUS)]
)
def test_example_faces_lose_their_detail(name: str, face: Face, mode: str) -> None:
    image = load_rgb(name)
    out = anonymize(image, [face], mode=mode, mask_scale=MASK_SCALE)  # type: ignore[arg-type]
    x0, y0, x1, y1 = (int(v) for v in (face.x0, face.y0, face.x1, face.y1))
    # The inner part of the face box is inside the ellipse whatever the mode.
    inner = (
        slice(y0 + (y1 - y0) // 5, y1 - (y1 - y0) // 5),
        slice(x0 + (x1 - x0) // 5, x1 - (x1 - x0) // 5),
    )
    assert detail(image[inner]) > 2.0
    if mode == "pixelate":
        # Block edges are sharp on purpose; what matters is how few values are left.
        colours = np.unique(out[inner].reshape(-1, 3), axis=0)
        assert len(colours) <= (PIXELATE_CELLS + 1) ** 2
        assert len(colours) < 0.1 * len(np.unique(image[inner].reshape(-1, 3), axis=0))
    else:
        assert detail(out[inner]) < 0.25 * detail(image[inner])
    mask = hidden([face], image.shape[1], image.shape[0], geometry(MASK_SCALE))
    assert np.array_equal(out[~mask], image[~mask])


@pytest.mark.parametrize("size", [40, 400])
def test_blur_strength_follows_the_face_size(size: int) -> None:
    # Random noise at two face sizes: after blurring, the number of distinct "features"
    # left across the face must be about the same, i.e. the kernel grows with the face.
    image = cv2.resize(
        noise(64, 64, seed=size), (size * 2, size * 2), interpolation=cv2.INTER_NEAREST
    )
    face = Face(size / 2, size / 2, size * 1.5, size * 1.5, 0.9)
    out = anonymize(image, [face], mode="blur", shape="box", mask_scale=1.0)
    crop = out[size // 2 : size * 3 // 2, size // 2 : size * 3 // 2]
    # Resample to 40 px and measure detail: similar (low) for both sizes.
    small = cv2.resize(crop, (40, 40), interpolation=cv2.INTER_AREA)
    assert detail(small) < 3.0


def test_solid_fills_with_black() -> None:
    image = noise(100, 100)
    face = Face(20, 20, 80, 80, 0.9)
    out = anonymize(image, [face], mode="solid", shape="box", mask_scale=1.0, margin_px=0)
    assert (out[20:80, 20:80] == 0).all()
    assert (out[:20] == image[:20]).all()


def test_pixelate_makes_blocks() -> None:
    image = noise(200, 200)
    out = anonymize(
        image, [Face(0, 0, 160, 160, 0.9)], mode="pixelate", shape="box", mask_scale=1.0
    )
    block = out[0:20, 0:20]
    assert (block == block[0, 0]).all()


def boxes_of(faces: list[Face], width: int, height: int, mask: MaskGeometry) -> list[object]:
    return [box for box, _ in mask_outlines(faces, width, height, mask)]


def test_mask_outlines_grow_about_the_centre_and_clip() -> None:
    faces = [Face(100, 100, 200, 150, 0.9), Face(-5, 0, 10, 20, 0.9)]
    want = [(75, 87, 225, 163), (0, 0, 14, 25)]
    assert boxes_of(faces, 1000, 1000, geometry(1.5, margin_px=0)) == want
    assert mask_outlines([Face(50, 50, 60, 60, 0.9)], 40, 40, geometry(1.3)) == []


def test_mask_margin_is_added_in_pixels() -> None:
    face = Face(100, 100, 120, 130, 0.9)
    assert boxes_of([face], 1000, 1000, geometry(1.0, margin_px=3)) == [(97, 97, 123, 133)]
    assert boxes_of([face], 1000, 1000, geometry(1.0, margin_px=0)) == [(100, 100, 120, 130)]


def test_mask_outlines_keep_the_shape_but_hide_a_plate_whole() -> None:
    face = Face(10, 10, 30, 30, 0.9)
    plate = Face(40, 10, 80, 20, 0.9, "plate")
    shapes = [s for _, s in mask_outlines([face, plate], 100, 100, geometry(1.0, "ellipse"))]
    assert shapes == ["ellipse", "box"]
    assert {s for _, s in mask_outlines([face], 100, 100, geometry(1.0, "box"))} == {"box"}


def test_mask_outlines_reject_a_bad_geometry() -> None:
    with pytest.raises(ValueError):
        mask_outlines([], 10, 10, geometry(0.0))
    with pytest.raises(ValueError):
        mask_outlines([], 10, 10, geometry(1.0, margin_px=-1))


def test_ellipse_covers_the_box_centre_not_its_corners() -> None:
    mask = region_mask((0, 0, 40, 20), "ellipse")
    assert mask.shape == (20, 40)
    assert mask[10, 20] and mask[10, 0] and mask[0, 20]
    assert not mask[0, 0] and not mask[19, 39]
    assert region_mask((0, 0, 40, 20), "box").all()


def test_no_faces_returns_an_equal_copy() -> None:
    image = noise(50, 50)
    out = anonymize(image, [], mask_scale=MASK_SCALE)
    assert np.array_equal(out, image) and out is not image


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        anonymize(np.zeros((5, 5), np.uint8), [], mask_scale=MASK_SCALE)
    with pytest.raises(ValueError):
        anonymize(noise(5, 5), [], mode="smudge", mask_scale=MASK_SCALE)  # type: ignore[arg-type]


def painted(boxes: list[tuple[int, int, int, int]], height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        out[y0:y1, x0:x1] = True
    return out


def test_merged_boxes_cover_their_union_once_with_disjoint_rectangles() -> None:
    rng = np.random.default_rng(3)
    corners = rng.integers(0, 400, (300, 2))
    sizes = rng.integers(1, 60, (300, 2))
    pairs = zip(corners, sizes, strict=True)
    boxes = [(int(x), int(y), int(x + w), int(y + h)) for (x, y), (w, h) in pairs]
    merged = merged_boxes(boxes)
    union = np.zeros((460, 460), bool)
    cover = np.zeros((460, 460), np.int32)
    for (x0, y0, x1, y1), mask in merged:
        assert mask.shape == (y1 - y0, x1 - x0) and mask.dtype == bool
        union[y0:y1, x0:x1] |= mask
        cover[y0:y1, x0:x1] += 1
    assert np.array_equal(union, painted(boxes, 460, 460))
    assert cover.max() == 1  # no pixel in two rectangles: the masks are never larger
    assert len(merged) < len(boxes)  # overlapping boxes share a mask


def test_boxes_apart_keep_their_own_mask_and_strength() -> None:
    boxes = [(0, 0, 10, 10), (20, 0, 30, 10)]
    assert [box for box, _ in merged_boxes(boxes)] == boxes
    assert merged_boxes([]) == []


def test_rings_one_inside_another_end_as_one_rectangle() -> None:
    # Each ring alone spans the picture: as separate masks they would cost the picture
    # once per ring.
    boxes = []
    for i in range(0, 40, 4):
        x0, y0, x1, y1 = i, i, 100 - i, 100 - i
        boxes += [
            (x0, y0, x1, y0 + 2),
            (x0, y1 - 2, x1, y1),
            (x0, y0, x0 + 2, y1),
            (x1 - 2, y0, x1, y1),
        ]
    ((box, mask),) = merged_boxes(boxes)
    assert box == (0, 0, 100, 100)
    assert np.array_equal(mask, painted(boxes, 100, 100))
    grid = np.zeros((5, 5), bool)
    grid[0, :] = grid[4, :] = grid[:, 0] = grid[:, 4] = grid[2, 2] = True
    assert disjoint_rectangles(grid) == [(0, 0, 5, 5)]


def test_a_merged_mask_hides_like_one_box_over_the_same_area() -> None:
    image = noise(120, 160)
    boxes = [(10, 10, 60, 50), (40, 30, 100, 90), (10, 10, 60, 50)]
    hidden = hide_masks(image, merged_boxes(boxes), mode="solid")
    assert np.array_equal((hidden == 0).all(axis=2), painted(boxes, 120, 160))


def test_opaque_masks_makes_hidden_pixels_opaque_and_leaves_the_rest() -> None:
    alpha = np.zeros((50, 60), np.uint8)
    box = (10, 5, 40, 45)
    masks = [(box, region_mask(box, "ellipse"))]
    opaque_masks(alpha, masks)
    assert np.array_equal(
        alpha == 255, hidden([Face(10, 5, 40, 45, 1.0)], 60, 50, geometry(1.0, margin_px=0))
    )
    assert alpha[~(alpha == 255)].max() == 0


def test_merged_masks_draw_each_ellipse_into_its_rectangle() -> None:
    rng = np.random.default_rng(4)
    shaped = []
    for x, y, w, h in rng.integers(1, 200, (120, 4)):
        shaped.append(((int(x), int(y), int(x + w), int(y + h)), "ellipse" if x % 3 else "box"))
    want = np.zeros((400, 400), bool)
    for box, shape in shaped:
        x0, y0, x1, y1 = box
        want[y0:y1, x0:x1] |= region_mask(box, shape)
    got = np.zeros((400, 400), np.int32)
    for (x0, y0, x1, y1), mask in merged_masks(shaped):  # type: ignore[arg-type]
        got[y0:y1, x0:x1] += mask
    assert np.array_equal(got, want)  # the union, each pixel in one mask only
