"""The JPEG patch reads coefficients and transforms once per image, for all regions
together, and writes the very bytes the per-region path (one encode, one coefficient
read per region, before the one-pass change) wrote: on the example photos, with many
overlapping and adjacent regions, regions on every edge, each chroma subsampling,
progressive streams, restart markers, greyscale and EXIF orientations. The worker's
anonymizer and a reviewer's re-render both go through it."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from imageblur import imaging, jpeg_patch
from imageblur.anonymizer import Anonymizer
from imageblur.blurring import region_mask
from imageblur.bootstrap import anonymize_options
from imageblur.config import Settings
from imageblur.domain import Face, Region
from imageblur.jpeg_coefficients import BlockRow, Transform, read_coefficients, transform
from support import BILL, LINUS

OPTIONS = anonymize_options(Settings())  # the shipped masks
SAMPLING = {0: [(1, 1)] * 3, 1: [(2, 1), (1, 1), (1, 1)], 2: [(2, 2), (1, 1), (1, 1)]}
# (block row, first block col, coefficients, which of them to paste) by block row
Pastes = dict[int, list[tuple[int, npt.NDArray[np.int16], npt.NDArray[np.bool_]]]]


def per_region_patch(
    original: bytes, upright: np.ndarray, regions: list[jpeg_patch.Region]
) -> bytes:
    """The patch as it was before the one-pass change (commit d212ada^): each region's
    MCU-aligned rectangle encoded and its coefficients read on their own, pasted in
    region order during the one lossless pass. Orientation from the decoded stream."""
    decoded = imaging.decode(original, max_pixels=10**8)
    layout = jpeg_patch.read_layout(original)
    op = jpeg_patch._ORIENT.get(decoded.orientation, Transform.NONE)
    comps = jpeg_patch._oriented(layout.components, transposed=op in jpeg_patch._TRANSPOSING)
    mcu = (8 * max(c.h for c in comps), 8 * max(c.v for c in comps))
    pastes: list[Pastes] = [{} for _ in comps]
    for box, mask in regions:
        _add_region(pastes, upright, box, mask, comps, mcu)

    def paste(row: BlockRow) -> None:
        for left, coefs, use in pastes[row.component].get(row.row, ()):
            dst = row.blocks[left : left + len(use)]
            dst[use] = coefs[use]

    rows = [p.keys() for p in pastes]
    out = transform(original, op=op, on_rows=paste, rows=rows, progressive=layout.progressive)
    icc = decoded.icc_profile
    return jpeg_patch.with_icc_profile(out, icc) if icc else out


def _add_region(
    pastes: list[Pastes],
    upright: np.ndarray,
    box: jpeg_patch.Box,
    mask: npt.NDArray[np.bool_],
    comps: tuple[jpeg_patch.Component, ...],
    mcu: tuple[int, int],
) -> None:
    """The old `_encode_patch` and `_rows_by_component`, for one region."""
    (mcu_w, mcu_h), (height, width) = mcu, upright.shape[:2]
    x0, y0, x1, y1 = box
    mx0, my0, mx1, my1 = x0 // mcu_w, y0 // mcu_h, -(-x1 // mcu_w), -(-y1 // mcu_h)
    padded = np.zeros(((my1 - my0) * mcu_h, (mx1 - mx0) * mcu_w), bool)
    padded[y0 - my0 * mcu_h : y1 - my0 * mcu_h, x0 - mx0 * mcu_w : x1 - mx0 * mcu_w] = mask
    touched = padded.reshape(my1 - my0, mcu_h, mx1 - mx0, mcu_w).any(axis=(1, 3))
    crop = upright[my0 * mcu_h : min(height, my1 * mcu_h), mx0 * mcu_w : min(width, mx1 * mcu_w)]
    coefs = read_coefficients(jpeg_patch._encode_like(crop, comps))
    for c, (comp, plane) in enumerate(zip(comps, coefs, strict=True)):
        use = np.repeat(np.repeat(touched, comp.v, axis=0), comp.h, axis=1)
        use = use[: plane.shape[0], : plane.shape[1]]
        for r in range(plane.shape[0]):
            if use[r].any():
                pastes[c].setdefault(my0 * comp.v + r, []).append((mx0 * comp.h, plane[r], use[r]))


def photo_pixels(source: str) -> np.ndarray:
    with Image.open(BILL if source == "bill" else LINUS) as img:
        return np.asarray(img.convert("RGB"))


def encoded(pixels: np.ndarray, **options: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=88, **options)
    return out.getvalue()


LAYOUTS = ["spread", "clustered"]


def many_regions(width: int, height: int, seed: int, layout: str) -> list[jpeg_patch.Region]:
    """`spread`: over the whole picture, so every MCU row and column is touched (the
    patch encodes the whole picture). `clustered`: the same in the bottom-right part
    and one box in the top-left corner, so MCU rows and columns between them are not
    (the patch encodes a cut-out whose MCUs are not where the picture has them)."""
    if layout == "spread":
        return spread_regions(width, height, seed)
    left, top = width * 9 // 20, height * 9 // 20
    regions = [rect((0, 0, 9, 9))] + [
        ((x0 + left, y0 + top, x1 + left, y1 + top), mask)
        for (x0, y0, x1, y1), mask in spread_regions(width - left, height - top, seed)
    ]
    for mcu in ((8, 8), (16, 16)):
        touched = jpeg_patch._touched(regions, (height, width), mcu)
        assert not touched.any(axis=1).all() and not touched.any(axis=0).all()
    return regions


def spread_regions(width: int, height: int, seed: int) -> list[jpeg_patch.Region]:
    """Overlapping ellipses of face sizes, a row of abutting rectangles (on and off the
    MCU grid), boxes on every edge and corner, a 1-pixel box, a full-width strip, and a
    box whose mask is empty."""
    rng = np.random.default_rng(seed)
    regions: list[jpeg_patch.Region] = []
    for _ in range(40):
        w, h = (int(v) for v in rng.integers(4, min(width, height) // 4, 2))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        regions.append(((x, y, x + w, y + h), region_mask((x, y, x + w, y + h), "ellipse")))
    for x in range(33, min(width, 33 + 8 * 23), 23):  # adjacent: x1 of one is x0 of the next
        regions.append(rect((x, height // 3, min(width, x + 23), height // 3 + 19)))
    for x in range(0, min(width, 96), 16):  # adjacent on the MCU grid
        regions.append(rect((x, 2 * height // 3 - 8, x + 16, 2 * height // 3 + 8)))
    for box in (
        (0, 0, 21, 13),
        (width - 19, 0, width, 27),
        (0, height - 11, 30, height),
        (width - 37, height - 29, width, height),
        (width // 2, 0, width // 2 + 40, 5),
        (0, height // 2, 7, height // 2 + 30),
        (width - 3, height // 2, width, height // 2 + 50),
        (width // 3, height - 2, width // 3 + 60, height),
        (5, 5, 6, 6),
        (0, height // 4, width, height // 4 + 9),
    ):
        x0, y0, x1, y1 = box
        regions.append(rect((x0, y0, min(x1, width), min(y1, height))))
    regions.append(((40, 40, 80, 80), np.zeros((40, 40), bool)))
    return regions


def rect(box: jpeg_patch.Box) -> jpeg_patch.Region:
    x0, y0, x1, y1 = box
    return box, np.ones((y1 - y0, x1 - x0), bool)


def hidden(data: bytes, regions: list[jpeg_patch.Region]) -> imaging.DecodedImage:
    """Decoded as the worker decodes, the masked pixels inverted (texture kept, so a
    block encoded from other pixels would show)."""
    decoded = imaging.decode(data, max_pixels=10**8)
    for (x0, y0, x1, y1), mask in regions:
        area = decoded.rgb[y0:y1, x0:x1]
        area[mask] = 255 - area[mask]
    return decoded


def one_pass(data: bytes, decoded: imaging.DecodedImage, regions: list[jpeg_patch.Region]) -> bytes:
    return jpeg_patch.patch(
        data,
        decoded.rgb,
        regions,
        orientation=decoded.orientation,
        grayscale=decoded.grayscale,
        icc_profile=decoded.icc_profile,
    )


def assert_same_as_per_region(data: bytes, regions: list[jpeg_patch.Region]) -> bytes:
    decoded = hidden(data, regions)
    out = one_pass(data, decoded, regions)
    assert out == per_region_patch(data, decoded.rgb, regions)
    return out


def assert_lossless_outside(before: bytes, after: bytes, regions: list[jpeg_patch.Region]) -> None:
    """Every block of an MCU no mask touches keeps the original's coefficients."""
    layout = jpeg_patch.read_layout(before)
    comps = layout.components
    mcu_w, mcu_h = 8 * max(c.h for c in comps), 8 * max(c.v for c in comps)
    touched = jpeg_patch._touched(regions, (layout.height, layout.width), (mcu_w, mcu_h))
    for comp, old, new in zip(
        comps, read_coefficients(before), read_coefficients(after), strict=True
    ):
        allowed = np.repeat(np.repeat(touched, comp.v, axis=0), comp.h, axis=1)
        changed = (old != new).any(axis=2)
        assert not (changed & ~allowed[: old.shape[0], : old.shape[1]]).any()
        assert changed.any()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("source", ["bill", "linus"])
def test_example_photos_as_they_are(source: str, layout: str) -> None:
    """The example files themselves (baseline 4:2:0, partial edge MCUs)."""
    data = (BILL if source == "bill" else LINUS).read_bytes()
    width, height = Image.open(io.BytesIO(data)).size
    regions = many_regions(width, height, seed=1, layout=layout)
    out = assert_same_as_per_region(data, regions)
    assert_lossless_outside(data, out, regions)


def variants() -> Iterator[tuple[str, dict[str, object]]]:
    for subsampling in (0, 1, 2):
        for progressive in (False, True):
            kind = "progressive" if progressive else "baseline"
            yield f"{kind}-{subsampling}", {"subsampling": subsampling, "progressive": progressive}
    yield "restart-blocks", {"subsampling": 2, "restart_marker_blocks": 3}
    yield (
        "restart-rows-progressive",
        {"subsampling": 1, "restart_marker_rows": 1, "progressive": True},
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("name", "options"), list(variants()), ids=[n for n, _ in variants()])
def test_real_photo_streams_of_every_supported_shape(
    name: str, options: dict[str, object], layout: str
) -> None:
    """The photo at an odd size (partial MCUs on the right and bottom)."""
    data = encoded(photo_pixels("bill")[101:768, 203:1204], **options)  # 1001 x 667
    regions = many_regions(1001, 667, seed=2, layout=layout)
    out = assert_same_as_per_region(data, regions)
    assert_lossless_outside(data, out, regions)
    assert jpeg_patch.read_layout(out).progressive is bool(options.get("progressive"))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_greyscale_photo(progressive: bool, layout: str) -> None:
    grey = np.asarray(Image.fromarray(photo_pixels("linus")).convert("L"))
    out = io.BytesIO()
    Image.fromarray(grey).save(out, "JPEG", quality=88, progressive=progressive)
    data = out.getvalue()
    regions = many_regions(300, 168, seed=3, layout=layout)
    assert_lossless_outside(data, assert_same_as_per_region(data, regions), regions)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("orientation", [3, 5, 6, 8])
@pytest.mark.parametrize("subsampling", [0, 2], ids=["444", "420"])
def test_exif_orientations(orientation: int, subsampling: int, layout: str) -> None:
    """Regions in upright pixels, the stream turned losslessly (MCU-aligned size: the
    only one every orientation has a lossless form for)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(photo_pixels("bill")[200:680, 800:1440], subsampling=subsampling, exif=exif)
    decoded = imaging.decode(data, max_pixels=10**8)
    height, width = decoded.rgb.shape[:2]
    assert (width, height) == ((480, 640) if orientation in (5, 6, 8) else (640, 480))
    assert_same_as_per_region(data, many_regions(width, height, seed=orientation, layout=layout))


def test_one_region_over_the_whole_photo_and_none_at_all() -> None:
    data = LINUS.read_bytes()
    assert_same_as_per_region(data, [rect((0, 0, 300, 168))])
    decoded = imaging.decode(data, max_pixels=10**8)
    nothing = one_pass(data, decoded, [])
    assert nothing == per_region_patch(data, decoded.rgb, [])
    assert read_coefficients(nothing)[0].tolist() == read_coefficients(data)[0].tolist()


def test_cmyk_is_refused_by_the_one_pass_as_by_the_per_region_path() -> None:
    out = io.BytesIO()
    Image.new("CMYK", (64, 48), (0, 50, 100, 0)).save(out, "JPEG")
    upright = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(jpeg_patch.UnsupportedJPEGError, match="4 colour components"):
        jpeg_patch.patch(
            out.getvalue(),
            upright,
            [rect((0, 0, 8, 8))],
            orientation=1,
            grayscale=False,
            icc_profile=None,
        )


class _Counting:
    """Counts the coefficient reads and lossless transforms the patch makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = self.transforms = 0
        read, run = read_coefficients, transform  # what jpeg_patch imports

        def counted_read(data: bytes) -> list[npt.NDArray[np.int16]]:
            self.reads += 1
            return read(data)

        def counted_transform(data: bytes, **kw: object) -> bytes:
            self.transforms += 1
            return run(data, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(jpeg_patch, "read_coefficients", counted_read)
        monkeypatch.setattr(jpeg_patch, "transform", counted_transform)


class _Faces:
    def __init__(self, faces: list[Face]) -> None:
        self._faces = faces

    def detect(self, image: np.ndarray) -> list[Face]:
        return list(self._faces)


def test_the_worker_and_a_reviewers_render_read_and_transform_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """40 detected faces, then a render of them with 200 manual boxes: one coefficient
    read and one transform each, and the render's output is the per-region path's."""
    data = encoded(photo_pixels("bill")[101:768, 203:1204])
    rng = np.random.default_rng(4)
    faces = [
        Face(int(x), int(y), int(x) + 30, int(y) + 40, 0.9)
        for x, y in rng.integers(0, (960, 620), (40, 2))
    ]
    anonymizer = Anonymizer(_Faces(faces), OPTIONS)
    counting = _Counting(monkeypatch)
    first = anonymizer(data)
    assert first.jpeg_fallback is None and first.faces == 40
    assert (counting.reads, counting.transforms) == (1, 1)

    manual = [
        Region(f"m{i}", int(x), int(y), 25, 20, None, "manual", "face", False, True)
        for i, (x, y) in enumerate(rng.integers(0, (970, 640), (200, 2)))
    ]
    render = anonymizer.render(data, [*first.regions, *manual])
    assert render.jpeg_fallback is None and render.faces == 240
    assert (counting.reads, counting.transforms) == (2, 2)


def test_a_render_writes_what_the_per_region_path_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reviewer's correction (detector regions and manual boxes, overlapping) gives
    the bytes the per-region path gives for the same masks and pixels."""
    data = LINUS.read_bytes()
    seen: list[tuple[np.ndarray, list[jpeg_patch.Region], bytes]] = []
    real = jpeg_patch.patch

    def keep(
        original: bytes, upright: np.ndarray, regions: list[jpeg_patch.Region], **kw: object
    ) -> bytes:
        out = real(original, upright, regions, **kw)  # type: ignore[arg-type]
        seen.append((upright.copy(), list(regions), out))
        return out

    monkeypatch.setattr(jpeg_patch, "patch", keep)
    boxes = [(150, 0, 60, 70), (180, 30, 60, 60), (0, 120, 300, 48), (290, 160, 10, 8)]
    regions = [
        Region("r1", 163, 14, 37, 49, 0.9, "detector", "face", False, True),
        *(
            Region(f"m{i}", *box, None, "manual", "face", False, True)
            for i, box in enumerate(boxes)
        ),
    ]
    result = Anonymizer(_Faces([]), OPTIONS).render(data, regions)
    assert result.jpeg_fallback is None
    ((upright, masks, out),) = seen
    assert out == result.data
    assert out == per_region_patch(data, upright, masks)


def test_region_order_does_not_matter() -> None:
    data = encoded(photo_pixels("linus"), subsampling=1)
    regions = many_regions(300, 168, seed=5, layout="clustered")
    decoded = hidden(data, regions)
    forward = one_pass(data, decoded, regions)
    assert forward == one_pass(data, decoded, regions[::-1])
