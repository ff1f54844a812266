"""JPEGs come back untouched outside the masks: the original's DCT coefficients are kept
bit for bit in every MCU no mask touches, on real libjpeg-turbo streams."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from imageblur import imaging, jpeg_patch
from imageblur.anonymizer import AnonymizeOptions, Anonymizer
from imageblur.blurring import mask_outlines, region_mask
from imageblur.bootstrap import anonymize_options, build_detector
from imageblur.config import Settings
from imageblur.domain import Face
from imageblur.jpeg_coefficients import Transform, read_coefficients, transform
from support import BILL, BILL_FACE, LINUS, detail

GREY = 128
OPTIONS: AnonymizeOptions = anonymize_options(Settings())  # the shipped masks


def photo(width: int, height: int) -> np.ndarray:
    """Real photographic content (textures, edges) at any size."""
    with Image.open(BILL) as img:
        return np.asarray(img.convert("RGB").resize((width, height)))


def jpeg(pixels: np.ndarray, **options: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90, **options)
    return out.getvalue()


def ellipse(box: tuple[int, int, int, int]) -> jpeg_patch.Region:
    return box, region_mask(box, "ellipse")


def hide_and_patch(data: bytes, regions: list[jpeg_patch.Region]) -> bytes:
    """Decode as the worker does, paint the regions grey, patch."""
    decoded = imaging.decode(data, max_pixels=10**8)
    for (x0, y0, x1, y1), mask in regions:
        decoded.rgb[y0:y1, x0:x1][mask] = GREY
    return jpeg_patch.patch(
        data,
        decoded.rgb,
        regions,
        orientation=decoded.orientation,
        grayscale=decoded.grayscale,
        icc_profile=decoded.icc_profile,
    )


def touched_mcus(
    regions: list[jpeg_patch.Region], width: int, height: int, mcu: tuple[int, int]
) -> np.ndarray:
    """MCU grid (rows x cols): True where a region's mask has a pixel."""
    full = np.zeros((height, width), bool)
    for (x0, y0, x1, y1), mask in regions:
        full[y0:y1, x0:x1] |= mask
    mw, mh = mcu
    rows, cols = -(-height // mh), -(-width // mw)
    padded = np.zeros((rows * mh, cols * mw), bool)
    padded[:height, :width] = full
    return padded.reshape(rows, mh, cols, mw).any(axis=(1, 3))


def assert_only_touched_blocks_differ(
    before: bytes, after: bytes, touched: np.ndarray, sampling: list[tuple[int, int]]
) -> None:
    for (h, v), old, new in zip(
        sampling, read_coefficients(before), read_coefficients(after), strict=True
    ):
        assert old.shape == new.shape
        changed = (old != new).any(axis=2)
        allowed = np.repeat(np.repeat(touched, v, axis=0), h, axis=1)[
            : old.shape[0], : old.shape[1]
        ]
        assert not (changed & ~allowed).any(), "a block outside the masks changed"
        assert changed.any()


SUBSAMPLING = {0: [(1, 1)] * 3, 1: [(2, 1), (1, 1), (1, 1)], 2: [(2, 2), (1, 1), (1, 1)]}


@pytest.mark.parametrize("subsampling", [0, 1, 2], ids=["444", "422", "420"])
@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("size", [(320, 240), (333, 251)], ids=["aligned", "odd"])
def test_only_mcus_under_the_masks_change(
    subsampling: int, progressive: bool, size: tuple[int, int]
) -> None:
    width, height = size
    original = jpeg(photo(width, height), subsampling=subsampling, progressive=progressive)
    # One face inside, one over the bottom-right edge (partial MCUs).
    regions = [ellipse((37, 29, 131, 140)), ellipse((width - 60, height - 45, width, height))]
    out = hide_and_patch(original, regions)

    sampling = SUBSAMPLING[subsampling]
    mcu = (8 * sampling[0][0], 8 * sampling[0][1])
    touched = touched_mcus(regions, width, height, mcu)
    assert_only_touched_blocks_differ(original, out, touched, sampling)
    assert jpeg_patch.read_layout(out).progressive is progressive

    # Decoded: outside the touched MCUs (and a 2 px ring, chroma upsampling) identical.
    old = imaging.decode(original, max_pixels=10**8).rgb.astype(int)
    new = imaging.decode(out, max_pixels=10**8).rgb.astype(int)
    near = np.kron(touched, np.ones((mcu[1], mcu[0]), bool))[:height, :width]
    near = np.asarray(Image.fromarray(near).filter(ImageFilter.MaxFilter(5)))  # 2 px around
    assert not ((old != new).any(axis=2) & ~near).any()
    # Under the masks: the hidden pixels, not the face.
    (x0, y0, x1, y1), mask = regions[0]
    assert np.abs(new[y0:y1, x0:x1][mask] - GREY).mean() < 3


def test_grayscale_jpeg_is_patched() -> None:
    pixels = photo(200, 120)[:, :, 1]
    out = io.BytesIO()
    Image.fromarray(pixels, "L").save(out, "JPEG", quality=85)
    original = out.getvalue()
    regions = [ellipse((20, 20, 90, 100))]
    patched = hide_and_patch(original, regions)
    touched = touched_mcus(regions, 200, 120, (8, 8))
    assert_only_touched_blocks_differ(original, patched, touched, [(1, 1)])


@pytest.mark.parametrize(
    ("orientation", "op"), [(3, Transform.ROT180), (6, Transform.ROT90), (8, Transform.ROT270)]
)
def test_exif_orientation_is_applied_losslessly(orientation: int, op: Transform) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    original = jpeg(photo(320, 240), subsampling=2, exif=exif)
    decoded = imaging.decode(original, max_pixels=10**8)
    height, width = decoded.rgb.shape[:2]
    regions = [ellipse((40, 50, 140, 170))]
    out = hide_and_patch(original, regions)

    assert Image.open(io.BytesIO(out)).size == (width, height)
    upright = transform(original, op=op)  # the lossless rotation alone
    touched = touched_mcus(regions, width, height, (16, 16))
    assert_only_touched_blocks_differ(upright, out, touched, SUBSAMPLING[2])


def test_orientation_without_a_lossless_form_is_refused() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    original = jpeg(photo(333, 251), subsampling=2, exif=exif)  # partial edge MCUs
    with pytest.raises(jpeg_patch.UnsupportedJPEGError, match="lossless transform"):
        hide_and_patch(original, [ellipse((10, 10, 60, 60))])


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def markers(data: bytes) -> list[int]:
    """The markers of the segments before the first scan."""
    out, pos = [], 2
    while data[pos + 1] != 0xDA:
        out.append(data[pos + 1])
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return out


def test_metadata_and_appended_images_are_dropped_icc_kept() -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    icc = bytes(range(256)) * 300  # 76.8 kB: two APP2 segments
    main = jpeg(photo(256, 160), exif=exif, icc_profile=icc, comment=b"who: Bill")
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>secret</x:xmpmeta>"
    mpf = b"MPF\x00" + b"\x00" * 40
    gain_map = jpeg(photo(64, 40))  # Ultra HDR / MPF secondary image, after the main EOI
    original = main[:2] + segment(0xE1, xmp) + segment(0xE2, mpf) + main[2:] + gain_map
    out = hide_and_patch(original, [ellipse((30, 30, 100, 120))])

    assert set(markers(out)) <= {0xE0, 0xE2, 0xDB, 0xC4, 0xC0, 0xDD}  # no EXIF, XMP, comment
    assert b"SecretCam" not in out and b"secret" not in out and b"MPF" not in out
    assert out.count(b"\xff\xd8") == 1 and out.endswith(b"\xff\xd9")  # one image only
    assert Image.open(io.BytesIO(out)).info["icc_profile"] == icc


def test_unsupported_streams_say_why() -> None:
    baseline = jpeg(photo(64, 48))
    sof = baseline.index(b"\xff\xc0")
    arithmetic = baseline[: sof + 1] + b"\xc9" + baseline[sof + 2 :]
    with pytest.raises(jpeg_patch.UnsupportedJPEGError, match="arithmetic coding"):
        jpeg_patch.read_layout(arithmetic)
    cmyk = io.BytesIO()
    Image.new("CMYK", (64, 48), (0, 50, 100, 0)).save(cmyk, "JPEG")
    with pytest.raises(jpeg_patch.UnsupportedJPEGError, match="4 colour components"):
        jpeg_patch.read_layout(cmyk.getvalue())
    rgb = np.zeros((48, 64, 3), np.uint8)
    truncated = baseline[: len(baseline) // 2]
    with pytest.raises(jpeg_patch.UnsupportedJPEGError, match="refused"):
        jpeg_patch.patch(truncated, rgb, [], orientation=1, grayscale=False, icc_profile=None)


class _FixedFaces:
    def __init__(self, *faces: Face) -> None:
        self._faces = list(faces)

    def detect(self, image: np.ndarray) -> list[Face]:
        return list(self._faces)


def test_anonymizer_falls_back_to_a_full_reencode_and_says_why() -> None:
    cmyk = io.BytesIO()
    Image.new("CMYK", (64, 48), (0, 50, 100, 0)).save(cmyk, "JPEG")
    anonymizer = Anonymizer(_FixedFaces(Face(10, 10, 30, 30, 0.9)), OPTIONS)
    result = anonymizer(cmyk.getvalue())
    assert result.jpeg_fallback is not None and "4 colour components" in result.jpeg_fallback
    assert Image.open(io.BytesIO(result.data)).mode == "RGB"
    assert anonymizer(jpeg(photo(64, 48))).jpeg_fallback is None


@pytest.fixture(scope="module")
def anonymizer() -> Anonymizer:
    settings = Settings()  # the defaults, as `make run` serves them
    return Anonymizer(build_detector(settings), anonymize_options(settings))


def changed_16px_blocks(before: bytes, after: bytes) -> float:
    """Share of 16 x 16 blocks whose inside (each block's one-pixel border ignored)
    decodes to different pixels."""
    old = np.asarray(Image.open(io.BytesIO(before)).convert("RGB"))
    new = np.asarray(Image.open(io.BytesIO(after)).convert("RGB"))
    diff = (old != new).any(axis=2)
    rows, cols = diff.shape[0] // 16, diff.shape[1] // 16
    blocks = diff[: rows * 16, : cols * 16].reshape(rows, 16, cols, 16)
    return float(blocks[:, 1:15, :, 1:15].any(axis=(1, 3)).mean())


def test_bill_gates_keeps_most_blocks_and_loses_his_face(anonymizer: Anonymizer) -> None:
    original = BILL.read_bytes()
    result = anonymizer(original)
    assert result.faces >= 1 and result.jpeg_fallback is None
    assert changed_16px_blocks(original, result.data) <= 0.45
    x0, y0, x1, y1 = BILL_FACE
    face = np.asarray(Image.open(io.BytesIO(result.data)).convert("RGB"))[y0:y1, x0:x1]
    before = np.asarray(Image.open(BILL).convert("RGB"))[y0:y1, x0:x1]
    assert detail(face) < 0.3 * detail(before)


def test_linus_is_patched_too(anonymizer: Anonymizer) -> None:
    original = LINUS.read_bytes()
    result = anonymizer(original)
    assert result.faces >= 1 and result.jpeg_fallback is None
    assert changed_16px_blocks(original, result.data) < 0.5


def test_phone_jpeg_with_appended_images_is_accepted_and_only_the_main_one_kept() -> None:
    main, preview = Image.fromarray(photo(128, 96)), Image.fromarray(photo(64, 48))
    mpo = io.BytesIO()
    main.save(mpo, "MPO", save_all=True, append_images=[preview])
    assert imaging.check(mpo.getvalue(), max_pixels=10**6).width == 128
    anonymizer = Anonymizer(_FixedFaces(Face(10, 10, 60, 60, 0.9)), OPTIONS)
    result = anonymizer(mpo.getvalue())
    assert result.jpeg_fallback is None
    assert result.data.count(b"\xff\xd8") == 1 and b"MPF" not in result.data


def test_a_plate_is_patched_as_its_whole_rectangle() -> None:
    """A plate's mask is the full rectangle even when faces use ellipses: the patched
    MCUs cover its corners too."""
    solid = dataclasses.replace(OPTIONS, mode="solid", shape="ellipse")
    plate = Face(40, 40, 120, 80, 0.9, kind="plate")
    result = Anonymizer(_FixedFaces(plate), solid)(jpeg(photo(160, 120)))
    assert result.jpeg_fallback is None and result.plates == 1
    out = np.asarray(Image.open(io.BytesIO(result.data)).convert("RGB")).astype(int)
    ((x0, y0, x1, y1), _) = mask_outlines([plate], 160, 120, solid.geometry)[0]
    inner = out[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]
    for corner in (inner[:3, :3], inner[:3, -3:], inner[-3:, :3], inner[-3:, -3:]):
        assert corner.max() < 40, "a corner of the plate's rectangle was left visible"


def test_a_kept_exif_group_makes_the_jpeg_reencoded_whole_with_it() -> None:
    """The patch writes no EXIF: while the policy keeps a group, the full re-encode
    (which writes what the policy keeps) is used, and says why."""
    exif = Image.Exif()
    exif[0x0132] = "2026:12:01 10:00:00"  # DateTime: the `datetime` group
    exif[0x010F] = "Phone maker"  # Make: never kept
    data = jpeg(photo(96, 64), exif=exif.tobytes())
    keep = dataclasses.replace(OPTIONS, keep_metadata=frozenset({"datetime"}))
    result = Anonymizer(_FixedFaces(Face(10, 10, 40, 40, 0.9)), keep)(data)
    assert result.jpeg_fallback is not None and "metadata policy" in result.jpeg_fallback
    kept = Image.open(io.BytesIO(result.data)).getexif()
    assert kept.get(0x0132) == "2026:12:01 10:00:00" and 0x010F not in kept
    # The default policy keeps no EXIF: the same JPEG is patched, and carries none.
    default = Anonymizer(_FixedFaces(Face(10, 10, 40, 40, 0.9)), OPTIONS)(data)
    assert default.jpeg_fallback is None
    assert not Image.open(io.BytesIO(default.data)).getexif()


@pytest.mark.parametrize("subsampling", [0, 2], ids=["444", "420"])
def test_many_regions_are_patched_in_one_pass_as_a_whole_encode_would(subsampling: int) -> None:
    width, height = 333, 251
    original = jpeg(photo(width, height), subsampling=subsampling)
    rng = np.random.default_rng(7)
    corners = rng.integers(0, (width - 5, height - 5), (60, 2))
    regions = [
        ellipse((int(x), int(y), min(width, int(x) + 23), min(height, int(y) + 17)))
        for x, y in corners
    ] + [ellipse((width - 30, height - 20, width, height))]  # partial edge MCUs
    decoded = imaging.decode(original, max_pixels=10**8)
    for (x0, y0, x1, y1), mask in regions:
        decoded.rgb[y0:y1, x0:x1][mask] = GREY
    out = jpeg_patch.patch(
        original, decoded.rgb, regions, orientation=1, grayscale=False, icc_profile=None
    )
    sampling = SUBSAMPLING[subsampling]
    mcu = (8 * sampling[0][0], 8 * sampling[0][1])
    touched = touched_mcus(regions, width, height, mcu)
    assert_only_touched_blocks_differ(original, out, touched, sampling)
    # Each patched block is the block a whole encode of the hidden pixels gives.
    comps = jpeg_patch.read_layout(original).components
    whole = read_coefficients(jpeg_patch._encode_like(decoded.rgb, comps))
    for (h, v), got, want in zip(sampling, read_coefficients(out), whole, strict=True):
        under = np.repeat(np.repeat(touched, v, axis=0), h, axis=1)[: got.shape[0], : got.shape[1]]
        assert np.array_equal(got[under], want[under])
