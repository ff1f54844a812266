"""What every family shares: the image pyramid, its tiles, the size band each pass
trusts, the grouping of the passes' candidates, and the size-dependent thresholds.

A single pass finds a band of face sizes only: at native size a network misses (or boxes
badly) faces larger than a few hundred pixels, and on a downscaled copy it misses small
ones. So the image is run at scales 1, 1/2, 1/4, ... down to a small thumbnail; large
scaled images are cut into overlapping tiles so memory stays bounded (a 50 MP photo never
becomes one 600 MB input tensor). Each scale keeps the detections whose size it sees
well. The candidates of all scales are then grouped (greedy, best score first) and each
group scores the noisy-or of its best score per scale, 1 - prod(1 - s): a face seen at
two scales with 0.3 each (0.51) beats a texture seen once at 0.45, which on the WIDER
FACE development subset buys about one point of recall at the same false-positive rate
(docs/detection.md).

A family only says how one tile goes through its network (`TileModel`);
`PyramidDetector` does the rest. `detect` is thread-safe if the family's `run` is.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from imageblur.cancel import checkpoint, expect
from imageblur.detection.families import KINDS
from imageblur.domain import CloserLook, DetectionThresholds, Face
from imageblur.ports import RGBImage

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.intp]
# Candidate rows of a tile: x0 y0 x1 y1 score kind (an index into KINDS).
EMPTY = np.zeros((0, 6), np.float32)
# Pairs of candidates tested at once in the grouping: bounds the memory a crowd of large
# boxes could take (about 10 MB of indices per batch); the photos of the WIDER FACE
# development subset have 19,000 pairs of overlapping candidates on average.
PAIR_BATCH = 1 << 18
# The grouping takes leaders one at a time while they take crowds (at least LARGE_GROUP
# candidates, allowing LARGE_GROUP_PATIENCE smaller groups in a row), then the rest by
# pairs: fastest on the WIDER FACE development subset (1.2 ms per photo against 2.4 ms
# by pairs only and 5.3 ms one leader at a time, CPU, on a shared 2-core machine).
LARGE_GROUP = 16
LARGE_GROUP_PATIENCE = 3
ALIGN = 32  # the networks downsample 5 times; inputs are padded to multiples of 32
_POOL_LOCK = threading.Lock()

# The box sizes (sqrt of the area, px) where the score a group needs changes: the small
# threshold up to 14 px, the threshold from 22 to 64 px, the large threshold from 128 px,
# linearly in between. On the WIDER FACE development subset, 3 in 4 low-scoring groups
# of CenterFace touching no face are under 14 px, against 1 in 10 of those on faces
# >= 20 px tall (docs/detection.md).
SIZE_KNOTS_PX = (14.0, 22.0, 64.0, 128.0)
# The boxes an enlarged small-face pass keeps: under 28 px in the image. On the WIDER FACE
# development subset, at the `thorough` preset's thresholds, keeping those under 24 or
# 26 px protects fewer faces >= 20 px, under 32 px hides more background for none more
# (docs/detection.md, "The thorough preset").
SMALL_PASS_MAX_PX = 28.0


@dataclass(frozen=True, slots=True)
class PyramidConfig:
    """How the image is scanned. Sizes are in pixels of the scaled image.

    `min_face_px`/`max_face_px` is the band of face sizes a pass trusts; the finest scale
    keeps everything smaller and the coarsest everything larger, so no size falls
    between two passes. Tiles overlap by `max_face_px` so a face in the band is always
    whole in some tile. Tiles of 1280 px keep onnxruntime near 500 MB per image in
    flight and run as fast per pixel as larger ones (2048 px: 1.5 GB). `upscale`
    (e.g. 1.41) adds a finer pass for faces under ~30 px: +2 points of recall for faces
    >= 20 px, at 2.5x the compute; off by default.
    `floor_score` is the lowest per-pass score that may contribute to a group.
    `mirrored`: how many of the finest scales run a second time on the horizontally
    mirrored image (the `thorough` preset: 2); a mirrored pass counts as a pass of its
    own in the noisy-or, so a face weakly seen both ways adds up (docs/detection.md).
    `small_pass_scale` (the `thorough` preset: 1.41) adds a pass on the image enlarged
    that much, beside the others rather than instead of the finest (unlike `upscale`),
    keeping only boxes under `small_pass_max_px` image pixels: its own pass in the
    noisy-or.
    """

    scale_step: float = 0.5
    coarsest_side_px: int = 320
    min_face_px: float = 24.0
    max_face_px: float = 128.0
    tile_px: int = 1280
    group_iou: float = 0.4
    floor_score: float = 0.1
    upscale: float | None = None
    mirrored: int = 0
    small_pass_scale: float | None = None
    small_pass_max_px: float = SMALL_PASS_MAX_PX

    def __post_init__(self) -> None:
        if self.small_pass_scale is not None and not 1.0 < self.small_pass_scale <= 2.0:
            raise ValueError(f"the small-face pass enlarges 1-2x, got {self.small_pass_scale}")


@dataclass(frozen=True, slots=True)
class View:
    """How one call scans the image, on top of the pyramid's own passes. `mirrored`:
    every pass runs on the horizontally mirrored image, boxes mapped back. `scale_offset`
    (in [1, 2)) multiplies every scale after the finest, so the coarser passes fall
    between the plain grid's (2 ** 0.5: scales 1, 0.71, 0.35, ... instead of 1, 0.5,
    0.25, ...). A network that misses a face one way may find it another: video
    detection varies the view from one detected frame to the next (docs/video.md)."""

    mirrored: bool = False
    scale_offset: float = 1.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.scale_offset < 2.0:
            raise ValueError(f"the scale offset is in [1, 2), got {self.scale_offset}")


PLAIN = View()


@dataclass(frozen=True, slots=True)
class SizeThresholds:
    """The score a group needs, by its size (SIZE_KNOTS_PX): `small` up to 14 px, rising
    or falling linearly to `threshold` from 22 to 64 px, then linearly to `large` from
    128 px. `small` and `large` are never below `threshold` (None: the threshold, one
    score for every size). Any family may use it; a detector takes one per call, so a
    per-upload preset can pass its own."""

    threshold: float
    small: float | None = None
    large: float | None = None

    def __post_init__(self) -> None:
        for value in (self.threshold, self.small, self.large):
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"thresholds must be in (0, 1), got {value}")

    def levels(self) -> tuple[float, float]:
        """The small and large thresholds as applied."""
        t = self.threshold
        return max(t, self.small or t), max(t, self.large or t)

    def need(self, dets: FloatArray) -> FloatArray:
        """The score each box (rows x0 y0 x1 y1 ...) needs."""
        return size_thresholds(dets, self.threshold, *self.levels())


def _size_thresholds(
    given: SizeThresholds | DetectionThresholds | None,
) -> SizeThresholds | None:
    if given is None or isinstance(given, SizeThresholds):
        return given
    return SizeThresholds(given.threshold, given.small, given.large)


def size_thresholds(
    dets: FloatArray, threshold: float, small_threshold: float, large_threshold: float
) -> FloatArray:
    """The score each box (rows x0 y0 x1 y1 ...) needs, by its size (SIZE_KNOTS_PX):
    `small_threshold`, rising or falling linearly to `threshold`, flat, then linearly to
    `large_threshold`."""
    levels = [small_threshold, threshold, threshold, large_threshold]
    ramp = np.interp(box_size(dets), SIZE_KNOTS_PX, levels)
    return np.asarray(ramp, np.float32)


class TileModel(Protocol):
    """One network of a family. `run` returns rows x0 y0 x1 y1 score kind (an index of
    KINDS), in tile pixels, for every candidate scoring at least `floor`."""

    @property
    def input_px(self) -> int | None:
        """The largest tile the network takes (a fixed-size export), None for any."""

    def run(self, tile: RGBImage, floor: float) -> FloatArray: ...


class PyramidDetector:
    """The `FaceDetector` port over a `TileModel`: scales, tiles, size bands, grouping,
    thresholds."""

    def __init__(
        self,
        model: TileModel,
        *,
        threshold: float,
        pyramid: PyramidConfig,
        small_threshold: float | None = None,
        large_threshold: float | None = None,
        uncertain_floor: float | None = None,
        uncertain_min_px: float = 0.0,
    ) -> None:
        """`threshold`, `small_threshold`, `large_threshold`: the `SizeThresholds` applied
        unless a call passes its own. `uncertain_floor`: the lowest score of the
        uncertain candidates `detect_regions` lists (None: none listed), at least
        `uncertain_min_px` across; never below the lowest score a pass keeps
        (`uncertain_floor_of`)."""
        self.thresholds = SizeThresholds(threshold, small_threshold, large_threshold)
        if uncertain_floor is not None and not 0.0 < uncertain_floor < 1.0:
            raise ValueError(f"thresholds must be in (0, 1), got {uncertain_floor}")
        self.model = model
        if model.input_px is not None and pyramid.tile_px > model.input_px:
            pyramid = _replace_tile(pyramid, model.input_px)
        self.pyramid = pyramid
        self._floor = uncertain_floor
        self.uncertain_min_px = uncertain_min_px
        self._tile_pool: ThreadPoolExecutor | None = None

    @property
    def threshold(self) -> float:
        return self.thresholds.threshold

    @property
    def uncertain_floor(self) -> float | None:
        """The floor of the uncertain candidates as applied, at the own thresholds."""
        return uncertain_floor_of(self._floor, self.threshold, self.pyramid)

    def detect(self, image: RGBImage) -> list[Face]:
        """Every region in an RGB uint8 H x W x 3 image, boxes in its pixel coordinates."""
        return self.detect_regions(image)[0]

    def detect_regions(
        self,
        image: RGBImage,
        thresholds: SizeThresholds | DetectionThresholds | None = None,
        *,
        view: View = PLAIN,
    ) -> tuple[list[Face], list[Face]]:
        """(hidden, uncertain): the regions `detect` returns, and the groups scoring at
        least the uncertain floor but below the threshold their size needs, at least
        `uncertain_min_px` across. `thresholds`: this call's (default: the detector's;
        an upload's preset passes its own); `view`: how this call scans (boxes always in
        the image's coordinates)."""
        policy = _size_thresholds(thresholds) or self.thresholds
        check_image(image)
        height, width = image.shape[:2]
        pass_floor = min(policy.threshold, self.pyramid.floor_score)
        scanned = np.ascontiguousarray(image[:, ::-1]) if view.mirrored else image
        candidates = self._candidates(scanned, pass_floor, view.scale_offset)
        groups = grouped(candidates, self.pyramid.group_iou)
        if view.mirrored:
            unmirrored(groups, width)
        dets = clipped(groups, width, height)
        # Sized as returned (clipped), so an evaluation replaying these regions at another
        # threshold applies the very same rule.
        hidden = dets[:, 4] >= policy.need(dets)
        floor = uncertain_floor_of(self._floor, policy.threshold, self.pyramid)
        floor = 1.0 if floor is None else floor
        listed = ~hidden & (dets[:, 4] >= floor) & (box_size(dets) >= self.uncertain_min_px)
        return regions(dets[hidden]), regions(dets[listed])

    def look_closer(self, image: RGBImage, face: Face, look: CloserLook) -> float:
        """A second, finer look at one region of `image`: a square around it, `margin`
        box heights of context on each side, scaled so the box is `look.face_px` tall,
        run through the network once. The best score of a candidate overlapping the box
        (IoU at least `look.iou`), 0 for none. A faint false box (a texture the pyramid
        saw at a few pixels) seldom still looks like a face enlarged; a small true face
        does (docs/video.md, "A second look at a faint track"). The square is always
        `look.side_px` across (beyond the image: black), so the runtime sees one input
        shape: a new shape costs it a reshape."""
        check_image(image)
        scale = min(max(look.face_px / max(face.height, 1.0), look.min_scale), look.max_scale)
        side = look.side_px
        cx, cy = (face.x0 + face.x1) / 2, (face.y0 + face.y1) / 2
        tx, ty = side / 2 - scale * cx, side / 2 - scale * cy
        warp = np.array([[scale, 0.0, tx], [0.0, scale, ty]], np.float64)
        tile = np.asarray(
            cv2.warpAffine(image, warp, (side, side), flags=cv2.INTER_LINEAR), np.uint8
        )
        dets = self.model.run(tile, self.pyramid.floor_score)
        if len(dets) == 0:
            return 0.0
        dets[:, [0, 2]] = (dets[:, [0, 2]] - tx) / scale
        dets[:, [1, 3]] = (dets[:, [1, 3]] - ty) / scale
        box = np.array([face.x0, face.y0, face.x1, face.y1], np.float32)
        near = _ious(box, dets) >= look.iou
        return float(dets[near, 4].max()) if near.any() else 0.0

    def _candidates(self, image: RGBImage, floor: float, scale_offset: float) -> FloatArray:
        """Rows x0 y0 x1 y1 score pass kind of every pass, each in its size band: the
        pyramid's, the enlarged one, then the mirrored ones."""
        height, width = image.shape[:2]
        scales = pyramid_scales(width, height, self.pyramid, scale_offset)
        enlarged = self.pyramid.small_pass_scale
        work = [*scales, *([enlarged] if enlarged else []), *scales[: self.pyramid.mirrored]]
        # The size of the work, in tiles: the lease keeper measures the job's rate in them.
        expect(sum(len(self._windows(_scaled_size(width, height, s))) for s in work))
        found: list[FloatArray] = []
        for index, scale in enumerate(scales):
            dets = self._at_scale(image, scale, floor)
            last = index == len(scales) - 1
            keep = size_band(dets, scale, self.pyramid, first=index == 0, last=last)
            found.append(_numbered(dets[keep], index))
        plain = len(scales)
        if enlarged is not None:
            dets = self._at_scale(image, enlarged, floor)
            found.append(_numbered(dets[box_size(dets) < self.pyramid.small_pass_max_px], plain))
            plain += 1
        found.extend(self._mirrored_passes(image, scales, floor, first=plain))
        return np.concatenate(found).astype(np.float32)

    def _mirrored_passes(
        self, image: RGBImage, scales: list[float], floor: float, *, first: int
    ) -> list[FloatArray]:
        """The finest `mirrored` scales run again on the mirrored image, boxes mapped
        back; each its own pass (numbered from `first`, after the plain ones), in its
        scale's band."""
        count = min(self.pyramid.mirrored, len(scales))
        if count <= 0:
            return []
        flipped = np.ascontiguousarray(image[:, ::-1])
        found: list[FloatArray] = []
        for index, scale in enumerate(scales[:count]):
            dets = unmirrored(self._at_scale(flipped, scale, floor), image.shape[1])
            last = index == len(scales) - 1
            keep = size_band(dets, scale, self.pyramid, first=index == 0, last=last)
            found.append(_numbered(dets[keep], first + index))
        return found

    def _at_scale(self, image: RGBImage, scale: float, floor: float) -> FloatArray:
        height, width = image.shape[:2]
        if scale == 1.0:
            scaled = image
        else:
            size = _scaled_size(width, height, scale)
            # INTER_AREA averages source pixels: no aliasing on strong downscales.
            inter = cv2.INTER_LINEAR if scale > 1.0 else cv2.INTER_AREA
            scaled = np.asarray(cv2.resize(image, size, interpolation=inter))
        sx, sy = width / scaled.shape[1], height / scaled.shape[0]
        windows = self._windows((scaled.shape[1], scaled.shape[0]))
        out: list[FloatArray] = [EMPTY]
        for (x0, y0, _, _), dets in zip(windows, self._runs(scaled, windows, floor), strict=True):
            dets[:, [0, 2]] = (dets[:, [0, 2]] + x0) * sx
            dets[:, [1, 3]] = (dets[:, [1, 3]] + y0) * sy
            out.append(dets)
        return np.concatenate(out)

    def _runs(
        self, scaled: RGBImage, windows: list[tuple[int, int, int, int]], floor: float
    ) -> Iterator[FloatArray]:
        """The network's rows of each window, in order. A model that runs several tiles
        at once (`tiles_at_once`: OpenVINO's streams) gets that many of this image's tiles
        at a time, so a photo alone still uses every core; the same rows either way."""
        at_once: int = getattr(self.model, "tiles_at_once", 1)
        depth = min(at_once, len(windows))
        pending: deque[Future[FloatArray]] = deque()
        for x0, y0, x1, y1 in windows:
            # One unit of progress; a job whose lease is lost stops here, between tiles.
            checkpoint()
            tile = scaled[y0:y1, x0:x1]
            if depth <= 1:
                yield self.model.run(tile, floor)
                continue
            pending.append(self._pool(at_once).submit(self.model.run, tile, floor))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def _pool(self, threads: int) -> ThreadPoolExecutor:
        """The threads that wait for the model's tiles (the model does the work), made on
        first use and shared by every call: the images in flight queue their tiles."""
        with _POOL_LOCK:
            if self._tile_pool is None:
                self._tile_pool = ThreadPoolExecutor(threads, thread_name_prefix="tiles")
            return self._tile_pool

    def _windows(self, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
        """The tiles of a pass over an image of `size` (width, height)."""
        overlap = int(self.pyramid.max_face_px)
        return list(tiles(size[0], size[1], self.pyramid.tile_px, overlap))


def _ious(box: FloatArray, dets: FloatArray) -> FloatArray:
    """The IoU of one box (x0 y0 x1 y1 ...) with each row of `dets`."""
    iw = np.minimum(box[2], dets[:, 2]) - np.maximum(box[0], dets[:, 0])
    ih = np.minimum(box[3], dets[:, 3]) - np.maximum(box[1], dets[:, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = np.maximum(dets[:, 2] - dets[:, 0], 0) * np.maximum(dets[:, 3] - dets[:, 1], 0)
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-6), np.float32)


def _numbered(dets: FloatArray, number: int) -> FloatArray:
    """Rows x0 y0 x1 y1 score kind of one pass as candidates: x0 y0 x1 y1 score pass kind."""
    passes = np.full(len(dets), number, np.float32)
    return np.column_stack([dets[:, :5], passes, dets[:, 5]])


def _scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The size of a pass's image (the image itself at scale 1)."""
    if scale == 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def unmirrored(dets: FloatArray, width: int) -> FloatArray:
    """Rows x0 y0 x1 y1 ... found on the horizontally mirrored image (`image[:, ::-1]`,
    `width` px wide) in the image's own coordinates, in place: pixel column i is column
    width - 1 - i there, so the edge x is width - x and a box's left and right swap."""
    x0 = dets[:, 0].copy()
    dets[:, 0] = width - dets[:, 2]
    dets[:, 2] = width - x0
    return dets


def uncertain_floor_of(floor: float | None, threshold: float, cfg: PyramidConfig) -> float | None:
    """The floor of the uncertain candidates as applied: never below the lowest score a
    pass keeps (min(threshold, `floor_score`): 0.05 for CenterFace). Lower, a pass would
    have to keep weaker candidates, and those would join the groups of what is hidden
    and raise their noisy-or scores: `detect` would hide something else. So a floor
    under it lists the groups the passes make, and no weaker ones."""
    if floor is None:
        return None
    return max(floor, min(threshold, cfg.floor_score))


def grouped(candidates: FloatArray, iou: float) -> FloatArray:
    """Candidates (x0 y0 x1 y1 score pass kind) grouped kind by kind (`group`): rows
    x0 y0 x1 y1 score kind."""
    out = [EMPTY]
    for index in range(len(KINDS)):
        groups = group(candidates[candidates[:, 6] == index][:, :6], iou)
        out.append(np.column_stack([groups, np.full(len(groups), index, np.float32)]))
    return np.concatenate(out).astype(np.float32)


def clipped(dets: FloatArray, width: int, height: int) -> FloatArray:
    """Rows x0 y0 x1 y1 ... with the boxes clipped to the image, in place."""
    dets[:, [0, 2]] = np.clip(dets[:, [0, 2]], 0.0, float(width))
    dets[:, [1, 3]] = np.clip(dets[:, [1, 3]], 0.0, float(height))
    return dets


def regions(dets: FloatArray) -> list[Face]:
    """Rows x0 y0 x1 y1 score kind as regions."""
    return [
        Face(
            x0=float(d[0]),
            y0=float(d[1]),
            x1=float(d[2]),
            y1=float(d[3]),
            score=float(d[4]),
            kind=KINDS[int(d[5])],
        )
        for d in dets
    ]


def group(dets: FloatArray, iou_threshold: float) -> FloatArray:
    """Merge candidates of all passes: rows x0 y0 x1 y1 score pass -> x0 y0 x1 y1 score.

    Greedy, best score first: the best remaining box takes every box overlapping it
    (IoU >= iou_threshold, or lying 80% inside it) and keeps its own geometry; the
    group's score is the noisy-or of the best score of each pass in it.

    The privacy preset keeps hundreds to thousands of weak candidates per photo, so it
    is done with arrays, in two steps giving the same groups as the plain loop, to the
    bit (tests/unit/test_grouping.py keeps that loop as the reference): leaders one at
    a time while each takes a crowd of candidates at once (a face's cluster), then the
    rest at once: the test over every pair of overlapping boxes left, and a short loop
    handing out the groups.
    """
    if len(dets) == 0:
        return np.zeros((0, 5), np.float32)
    ranked = dets[np.argsort(-dets[:, 4], kind="stable")]
    x0, y0, x1, y1 = (np.ascontiguousarray(ranked[:, i]) for i in range(4))
    box = np.stack([x0, y0, x1, y1, np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)])
    leader = np.arange(len(ranked))
    rest = _large_groups(box, iou_threshold, leader)
    if len(rest):
        leads, joins = _member_pairs(box[:, rest], iou_threshold)
        leader[rest] = rest[_leaders(len(rest), leads, joins)]
    return _noisy_or(ranked, leader)


def _joins(lead: FloatArray, rows: FloatArray, iou_threshold: float) -> npt.NDArray[np.bool_]:
    """Whether each of `rows` joins the group `lead` leads (boxes as columns x0 y0 x1 y1
    area, `lead` one box or one per row): IoU at least `iou_threshold`, or lying 80%
    inside. The float32 operations of the plain loop, in its order, leader first
    (min/max of -0.0 and 0.0 or of NaN depend on the order)."""
    iw = np.minimum(lead[2], rows[2])
    iw -= np.maximum(lead[0], rows[0])
    inter = np.maximum(0.0, iw)
    ih = np.minimum(lead[3], rows[3])
    ih -= np.maximum(lead[1], rows[1])
    inter *= np.maximum(0.0, ih)
    union = lead[4] + rows[4]
    union -= inter
    member: npt.NDArray[np.bool_] = inter / np.maximum(union, 1e-6) >= iou_threshold
    member |= inter / np.maximum(rows[4], 1e-6) >= 0.8
    return member


def _large_groups(box: FloatArray, iou_threshold: float, leader: IntArray) -> IntArray:
    """The plain loop (columns x0 y0 x1 y1 area in score order), recording each row's
    leader, while leaders take crowds: it stops after LARGE_GROUP_PATIENCE leaders in a
    row took fewer than LARGE_GROUP rows each, and returns the rows left. One leader
    costs about 20 array operations over what is left, whatever it takes."""
    rest = np.arange(box.shape[1])
    small = 0
    while len(rest) and small < LARGE_GROUP_PATIENCE:
        member = _joins(box[:, 0], box, iou_threshold)
        member[0] = True  # a degenerate (zero-area) leader still forms its own group
        taken = rest[member]
        leader[taken] = rest[0]
        small = small + 1 if len(taken) < LARGE_GROUP else 0
        keep = ~member
        rest, box = rest[keep], box[:, keep]
    return rest


def _member_pairs(box: FloatArray, iou_threshold: float) -> tuple[IntArray, IntArray]:
    """The pairs of rows (a, b), a < b, where b joins a's group if a leads (`_joins`);
    boxes as columns x0 y0 x1 y1 area, in score order."""
    # A positive threshold (as compared, in float32) needs a positive intersection:
    # only boxes whose spans overlap are tested. Else any pair may join.
    overlapping = bool(np.float32(iou_threshold) > 0)
    leads, joins = [np.zeros(0, np.intp)], [np.zeros(0, np.intp)]
    for a, b in _pairs(box, overlapping=overlapping):
        member = _joins(box.take(a, axis=1), box.take(b, axis=1), iou_threshold)
        leads.append(a[member])
        joins.append(b[member])
    return np.concatenate(leads), np.concatenate(joins)


def _pairs(box: FloatArray, *, overlapping: bool) -> Iterator[tuple[IntArray, IntArray]]:
    """Pairs of rows (a, b), a < b, in batches of about PAIR_BATCH: with `overlapping`,
    those whose x and y spans overlap (every pair with a positive intersection, and
    maybe a few more), else all. A sweep: in x0 order, each box pairs with the boxes
    starting inside its x span."""
    n = box.shape[1]
    if overlapping:
        by_x = np.argsort(box[0], kind="stable")
        ends = np.searchsorted(box[0].take(by_x), box[2].take(by_x), side="left")
    else:
        by_x, ends = np.arange(n), np.full(n, n)
    counts = np.maximum(ends - np.arange(1, n + 1), 0)
    total = np.cumsum(counts)
    cuts = np.searchsorted(total, np.arange(PAIR_BATCH, total[-1], PAIR_BATCH)) + 1
    y0, y1 = box[1].take(by_x), box[3].take(by_x)
    for lo, hi in itertools.pairwise(sorted({0, n, *cuts.tolist()})):
        c = counts[lo:hi]
        # Row p of the sweep pairs with p + 1, p + 2, ... p + c[p].
        shift = np.arange(lo + 1, hi + 1) - (total[lo:hi] - c - (total[lo - 1] if lo else 0))
        left = np.repeat(np.arange(lo, hi), c)
        right = np.repeat(shift, c)
        right += np.arange(len(right))
        if overlapping:
            low = np.maximum(y0.take(left), y0.take(right))
            keep = low < np.minimum(y1.take(left), y1.take(right))
            left, right = left[keep], right[keep]
        u, v = by_x.take(left), by_x.take(right)
        yield np.minimum(u, v), np.maximum(u, v)


def _leaders(count: int, leads: IntArray, joins: IntArray) -> IntArray:
    """The leader of each row: in score order, each row not yet taken leads and takes
    every row not yet taken it may (`_member_pairs`). Plain Python, over the rows that
    may take another only: a few hundred per photo."""
    # numpy sorts 16-bit keys by radix, ten times faster than wider ones.
    keys = leads.astype(np.uint16) if count <= 1 << 16 else leads
    targets = joins[np.argsort(keys, kind="stable")].tolist()
    per_source = np.bincount(leads, minlength=count)
    starts = (np.cumsum(per_source) - per_source).tolist()
    sizes = per_source.tolist()
    leader = list(range(count))
    taken = bytearray(count)
    for source in np.flatnonzero(per_source).tolist():
        if taken[source]:
            continue
        start = starts[source]
        for row in targets[start : start + sizes[source]]:
            if not taken[row]:
                taken[row] = 1
                leader[row] = source
    return np.array(leader, np.intp)


def _noisy_or(ranked: FloatArray, leader: IntArray) -> FloatArray:
    """Rows x0 y0 x1 y1 score, one per group in the leaders' order: the leader's box and
    1 - prod(1 - best score of each pass), in float64, pass by pass in pass order."""
    leaders = np.flatnonzero(leader == np.arange(len(ranked)))
    group_of = np.searchsorted(leaders, leader)
    _, column = np.unique(ranked[:, 5], return_inverse=True)
    shape = (len(leaders), int(column.max()) + 1)
    best = np.full(shape, -np.inf)
    np.maximum.at(best, (group_of, column), ranked[:, 4].astype(np.float64))
    seen = np.zeros(shape, bool)
    seen[group_of, column] = True
    miss = np.ones(len(leaders))
    for p in range(shape[1]):
        miss = np.where(seen[:, p], miss * (1.0 - best[:, p]), miss)
    return np.column_stack([ranked[leaders, :4], (1.0 - miss).astype(np.float32)])


def box_size(dets: FloatArray) -> FloatArray:
    """The size of each box (rows x0 y0 x1 y1 ...): the square root of its area, px."""
    w = np.maximum(dets[:, 2] - dets[:, 0], 0)
    h = np.maximum(dets[:, 3] - dets[:, 1], 0)
    return np.asarray(np.sqrt(w * h), np.float32)


def pyramid_scales(width: int, height: int, cfg: PyramidConfig, offset: float = 1.0) -> list[float]:
    """[upscale,] 1, step, step^2, ... until the shorter side fits `coarsest_side_px`;
    every scale after 1 multiplied by `offset` (a `View`'s)."""
    scales = [1.0]
    short = min(width, height)
    while short * scales[-1] > cfg.coarsest_side_px:
        scales.append(cfg.scale_step ** len(scales) * offset)
    if cfg.upscale is not None and cfg.upscale > 1.0:
        scales.insert(0, cfg.upscale)
    return scales


def tiles(
    width: int, height: int, tile_px: int, overlap_px: int
) -> Iterator[tuple[int, int, int, int]]:
    """Windows (x0, y0, x1, y1) of at most tile_px square covering the image."""
    for y0, y1 in _spans(height, tile_px, overlap_px):
        for x0, x1 in _spans(width, tile_px, overlap_px):
            yield x0, y0, x1, y1


def _spans(length: int, tile_px: int, overlap_px: int) -> list[tuple[int, int]]:
    """As few equal spans as cover `length` with tiles of at most `tile_px` overlapping
    by at least `overlap_px`. Equal spans rather than fixed-size tiles keep the wasted
    overlap small: 1920 px with 1280 px tiles and 128 px overlap is two 1024 px spans."""
    if length <= tile_px:
        return [(0, length)]
    count = -(-(length - overlap_px) // (tile_px - overlap_px))
    size = -(-(length + (count - 1) * overlap_px) // count)
    size = min(length, round_up(size, ALIGN))  # the network pads to 32 anyway
    starts = np.linspace(0, length - size, count).round().astype(int)
    return [(int(s), int(s) + size) for s in starts]


def size_band(
    dets: FloatArray, scale: float, cfg: PyramidConfig, *, first: bool, last: bool
) -> npt.NDArray[np.bool_]:
    """Detections whose size (in scaled pixels) this pass sees well."""
    size = box_size(dets) * scale
    keep = np.ones(len(dets), bool)
    if not first:
        keep &= size >= cfg.min_face_px
    if not last:
        keep &= size <= cfg.max_face_px
    return keep


def padded(
    tile: npt.NDArray[np.floating[Any]], height: int, width: int, fill: float = 0.0
) -> FloatArray:
    """The tile in the top-left corner of a 1 x 3 x height x width float blob: no
    resizing, so boxes need no rescaling."""
    blob = np.full((1, 3, height, width), fill, np.float32)
    h, w = tile.shape[:2]
    blob[0, :, :h, :w] = tile.transpose(2, 0, 1)
    return blob


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def check_image(image: Any) -> None:
    if not (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.shape[0] > 0
        and image.shape[1] > 0
    ):
        raise ValueError("detect() expects an RGB uint8 array of shape H x W x 3")


def _replace_tile(cfg: PyramidConfig, tile_px: int) -> PyramidConfig:
    # Tiles overlap by max_face_px: keep a third of a small fixed input for new area.
    return replace(cfg, tile_px=tile_px, max_face_px=min(cfg.max_face_px, tile_px * 2 / 3))
