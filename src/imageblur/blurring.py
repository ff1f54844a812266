"""Hide detected faces: blur, pixelate or fill a mask a little larger than each face.

The strength scales with the face: a face is always reduced to the same small number of
samples across (`BLUR_CELLS`, `PIXELATE_CELLS`), whether it is 40 or 400 pixels tall.
Blur first averages the region down to that grid, then smooths it back up, so the output
carries no detail finer than the grid: deconvolution cannot bring back what was
averaged away (a plain Gaussian blur, by contrast, can be partly inverted). Solid mode
keeps nothing at all.

Pixels outside the masks are never written: the result is pixel-identical there.

Which pixels a face's mask covers is `mask_outlines`, the one place that geometry is
written; the worker's `Anonymizer`, `anonymize`, `full_mask` and the benchmarks all take
it from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from imageblur.domain import Face, MaskGeometry, MaskShape, Rect
from imageblur.ports import RGBImage

Mode = Literal["blur", "pixelate", "solid"]
Shape = MaskShape
Box = tuple[int, int, int, int]  # x0, y0, x1, y1; x1 and y1 exclusive
Outline = tuple[Box, Shape]  # a mask rectangle, and whether all of it or its ellipse
Mask = tuple[Box, npt.NDArray[np.bool_]]  # a mask rectangle and its hidden pixels
Cells = tuple[int, int, int, int]  # row0, col0, row1, col1 of a grid; ends exclusive

BLUR_CELLS = 6  # samples kept across the mask's shorter side in blur mode
PIXELATE_CELLS = 8  # blocks across the mask's shorter side in pixelate mode
SOLID_RGB = (0, 0, 0)
# Added on each side of every mask, beyond `mask_scale`. CenterFace places boxes on a
# 4 px grid, so its error has a part that does not shrink with the face: 3 px is 15% of
# a 20 px face and nothing on a 200 px one. On the WIDER FACE development subset,
# 1.25x + 3 px protects 2 points more faces >= 20 px than 1.3x alone for about the
# same blurred area (docs/detection.md). The default of `anonymize` (the `tidy` preset's
# margin); the worker passes the preset's `mask_margin_px` in its `MaskGeometry`.
MASK_MARGIN_PX = 3.0


def mask_outlines(
    faces: Sequence[Face], width: int, height: int, geometry: MaskGeometry
) -> list[Outline]:
    """How each face is hidden: its box grown `geometry.scale` times about its centre
    plus `geometry.margin_px` on each side, clipped to the image (an empty rectangle is
    dropped), and of that rectangle the inscribed ellipse or all of it (`geometry.shape`;
    a plate is always all of it).

    The blur geometry, written here only: the worker's `Anonymizer` (first render and
    re-render), `imageblur blur` through it, `anonymize`, `full_mask` and the benchmarks
    all call it (tests/unit/test_one_blur_geometry.py checks the imports).
    """
    scale, margin_px = geometry.scale, geometry.margin_px
    if scale <= 0 or margin_px < 0:
        raise ValueError(f"need mask scale > 0 and margin_px >= 0: {scale}, {margin_px}")
    outlines: list[Outline] = []
    for face in faces:
        cx, cy = (face.x0 + face.x1) / 2, (face.y0 + face.y1) / 2
        half_w = face.width * scale / 2 + margin_px
        half_h = face.height * scale / 2 + margin_px
        # floor/ceil: the mask never ends up smaller than the scaled box.
        x0 = max(0, int(np.floor(cx - half_w)))
        y0 = max(0, int(np.floor(cy - half_h)))
        x1 = min(width, int(np.ceil(cx + half_w)))
        y1 = min(height, int(np.ceil(cy + half_h)))
        if x1 > x0 and y1 > y0:
            outlines.append(((x0, y0, x1, y1), _shape_of(face, geometry.shape)))
    return outlines


def masks_of(outlines: Sequence[Outline]) -> list[Mask]:
    """Each outline drawn: its rectangle and the hidden pixels of it (`region_mask`)."""
    return [(box, region_mask(box, shape)) for box, shape in outlines]


def region_mask(box: Box, shape: Shape) -> npt.NDArray[np.bool_]:
    """The pixels of `box` (a mask rectangle) that are hidden, as a bool array of the
    box's size: all of them, or the inscribed ellipse."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if shape == "box":
        return np.ones((h, w), bool)
    # Pixel centres inside the ellipse inscribed in the box. Computed rather than drawn
    # with cv2.ellipse, whose integer geometry can leave a face's edge pixels out.
    ys = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / (h / 2)
    xs = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / (w / 2)
    return np.asarray(ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0)


def full_mask(outlines: Sequence[Outline], width: int, height: int) -> npt.NDArray[np.bool_]:
    """Every pixel hiding these outlines changes (or may change), as an H x W bool array:
    `full_mask(mask_outlines(faces, ...), ...)` is what the worker hides for `faces`."""
    out = np.zeros((height, width), bool)
    for box, shape in outlines:  # one mask at a time, never all of them at once
        x0, y0, x1, y1 = box
        out[y0:y1, x0:x1] |= region_mask(box, shape)
    return out


def _shape_of(face: Face, shape: Shape) -> Shape:
    """A plate is always hidden as a rectangle: its corners hold characters, which an
    inscribed ellipse would leave visible."""
    return "box" if face.kind == "plate" else shape


def anonymize(
    image: RGBImage,
    faces: Sequence[Face],
    *,
    mode: Mode = "blur",
    shape: Shape = "ellipse",
    mask_scale: float,
    margin_px: float = MASK_MARGIN_PX,
    in_place: bool = False,
) -> RGBImage:
    """The image with every face hidden: a new one, the input untouched (unless
    `in_place`).

    `mode`: `blur` (strong, size-relative), `pixelate` (blocks) or `solid` (black fill).
    `shape`: the hidden region is the ellipse or the whole rectangle of each face's box
    grown `mask_scale` times plus `margin_px` on each side.
    `in_place`: hide the faces in `image` itself and return it; saves a copy of the
    whole image (150 MB for 50 MP) when the caller has no further use for the original.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("anonymize() expects an RGB uint8 array of shape H x W x 3")
    if mode not in ("blur", "pixelate", "solid"):
        raise ValueError(f"unknown mode {mode!r}")
    if shape not in ("ellipse", "box"):
        raise ValueError(f"unknown shape {shape!r}")
    height, width = image.shape[:2]
    geometry = MaskGeometry(scale=mask_scale, margin_px=margin_px, shape=shape)
    masks = masks_of(mask_outlines(faces, width, height, geometry))
    return hide_masks(image, masks, mode=mode, in_place=in_place)


def hide_masks(
    image: RGBImage,
    masks: Sequence[Mask],
    *,
    mode: Mode = "blur",
    in_place: bool = False,
) -> RGBImage:
    """The image with the pixels of each (box, mask of the box's size) hidden, the
    strength by the box's size: what `anonymize` does once it has the masks. A caller
    with masks of its own (a manual rectangle) hides them the same way."""
    if mode not in ("blur", "pixelate", "solid"):
        raise ValueError(f"unknown mode {mode!r}")
    out = image if in_place else image.copy()
    for box, mask in masks:
        x0, y0, x1, y1 = box
        # Read from `out`: where masks overlap, detail already removed stays removed.
        region = out[y0:y1, x0:x1]
        np.copyto(region, _hide(region, mode), where=mask[..., None])
    return out


def merged_boxes(boxes: Sequence[Box]) -> list[Mask]:
    """The union of `boxes` as (rectangle, mask of the rectangle's size) pairs whose
    rectangles do not overlap: boxes that overlap or touch, directly or through others,
    share one mask, hidden as one region (its strength by the rectangle's size).

    However many boxes there are, the masks together hold at most one value per pixel
    of the image, and each pixel is hidden once: a reviewer's 500 boxes cost what one
    box over the same area costs. The work is done on the grid of the boxes' own edges
    (at most 2n + 1 lines each way), never per pixel in Python.
    """
    return merged_masks([(box, "box") for box in boxes])


def merged_masks(shaped: Sequence[Outline]) -> list[Mask]:
    """`merged_boxes` for masks of either shape (`region_mask` of each box): the union
    as masks over rectangles that do not overlap. A whole box costs nothing per box; an
    ellipse is drawn into its rectangle's mask, one at a time."""
    if not shaped:
        return []
    xs = np.unique(np.array([(b[0], b[2]) for b, _ in shaped]))
    ys = np.unique(np.array([(b[1], b[3]) for b, _ in shaped]))
    # cells[i, j] covers the pixels ys[i]:ys[i+1] x xs[j]:xs[j+1].
    cells = np.zeros((len(ys) - 1, len(xs) - 1), bool)
    whole = np.zeros_like(cells)  # the cells of the box-shaped ones: hidden whole
    for (x0, y0, x1, y1), shape in shaped:
        area = slice(*np.searchsorted(ys, (y0, y1))), slice(*np.searchsorted(xs, (x0, x1)))
        cells[area] = True
        if shape == "box":
            whole[area] = True
    rects = disjoint_rectangles(cells, parts_at_most=len(shaped))  # a part holds a box
    owner = np.zeros(cells.shape, np.min_scalar_type(len(rects)))
    out: list[Mask] = []
    for k, (r0, c0, r1, c1) in enumerate(rects):
        owner[r0:r1, c0:c1] = k
        heights, widths = np.diff(ys[r0 : r1 + 1]), np.diff(xs[c0 : c1 + 1])
        mask = np.repeat(np.repeat(whole[r0:r1, c0:c1], heights, axis=0), widths, axis=1)
        out.append(((int(xs[c0]), int(ys[r0]), int(xs[c1]), int(ys[r1])), mask))
    for box, shape in shaped:
        if shape != "box":
            x0, y0, x1, y1 = box
            (gx, gy, _, _), mask = out[owner[np.searchsorted(ys, y0), np.searchsorted(xs, x0)]]
            mask[y0 - gy : y1 - gy, x0 - gx : x1 - gx] |= region_mask(box, shape)
    return out


def disjoint_rectangles(
    grid: npt.NDArray[np.bool_], *, parts_at_most: int | None = None
) -> list[Cells]:
    """Rectangles (row0, col0, row1, col1; ends exclusive) that cover every True cell
    of `grid` and do not overlap: the bounding boxes of its connected parts, merged
    again while two of them overlap (rings one inside another end as one rectangle)."""
    grouped = grid.astype(np.uint8)
    # 16-bit labels when the caller knows there are fewer parts (half the memory of a
    # grid as large as a 50 MP picture's).
    small = parts_at_most is not None and parts_at_most < 65_535
    ltype = cv2.CV_16U if small else cv2.CV_32S
    while True:
        count, _, stats, _ = cv2.connectedComponentsWithStats(grouped, connectivity=4, ltype=ltype)
        filled = np.zeros_like(grouped)
        rects: list[Cells] = []
        for x, y, w, h, _area in stats[1:count]:
            filled[y : y + h, x : x + w] = 1
            rects.append((int(y), int(x), int(y + h), int(x + w)))
        if np.array_equal(filled, grouped):
            return rects
        grouped = filled


def opaque_masks(alpha: npt.NDArray[np.uint8], masks: Sequence[Mask]) -> None:
    """Make the hidden pixels fully opaque in `alpha` (in place): a cut-out portrait's
    transparency has the shape of the head, which the blur of its colours leaves intact."""
    for (x0, y0, x1, y1), mask in masks:
        alpha[y0:y1, x0:x1][mask] = 255


def _hide(region: RGBImage, mode: Mode) -> RGBImage:
    if mode == "solid":
        return np.full_like(region, SOLID_RGB)
    if mode == "pixelate":
        small = _shrink(region, PIXELATE_CELLS)
        return np.asarray(cv2.resize(small, region.shape[1::-1], interpolation=cv2.INTER_NEAREST))
    return _blur(region)


def _blur(region: RGBImage) -> RGBImage:
    """Average down to a coarse grid, then smooth back up: looks like a blur, keeps
    only BLUR_CELLS samples across however large the face is."""
    small = _shrink(region, BLUR_CELLS)
    # Smooth at 8x the grid, not at full size: the same look for any face size, at a
    # cost independent of the kernel (a sigma-80 blur of a 1000 px face is slow).
    mid_size = (small.shape[1] * 8, small.shape[0] * 8)
    mid = cv2.resize(small, mid_size, interpolation=cv2.INTER_LINEAR)
    mid = cv2.GaussianBlur(mid, (0, 0), sigmaX=4.0, sigmaY=4.0, borderType=cv2.BORDER_REPLICATE)
    return np.asarray(cv2.resize(mid, region.shape[1::-1], interpolation=cv2.INTER_LINEAR))


def _shrink(region: RGBImage, cells: int) -> RGBImage:
    """Area-average the region to `cells` samples across its shorter side."""
    h, w = region.shape[:2]
    factor = min(1.0, cells / min(h, w))
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return np.asarray(cv2.resize(region, size, interpolation=cv2.INTER_AREA))


def spared(
    faces: Sequence[Face], *, ignore: Sequence[Rect], hide: Sequence[Rect]
) -> tuple[list[Face], list[Face]]:
    """(hidden, spared): an upload's `ignore` rectangles spare a detection whose box lies
    at least half inside one of them, unless it touches a `hide` rectangle (`hide`
    wins). Pictures and videos alike."""
    kept = [f for f in faces if any(_inside(f, r) >= 0.5 for r in ignore)]
    kept = [f for f in kept if not any(_inside(f, r) for r in hide)]
    return [f for f in faces if f not in kept], kept


def _inside(face: Face, rect: Rect) -> float:
    """The share of the face's box that lies inside `rect`."""
    w = min(face.x1, rect.x + rect.width) - max(face.x0, rect.x)
    h = min(face.y1, rect.y + rect.height) - max(face.y0, rect.y)
    area = face.width * face.height
    return max(w, 0) * max(h, 0) / area if area > 0 else 0.0
