"""The sandbox: a decode in a fresh child process under CPU, memory and wall-clock
limits; HEIC and AVIF strict checks go through it."""

from __future__ import annotations

import io
import resource

import pytest
from PIL import Image

from imageblur import imaging, sandbox
from imageblur.domain import InvalidImage
from phone_photos import avif, heic


def test_the_child_runs_under_the_limits_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBLUR_API_TOKEN", "a-secret-the-decoder-must-not-see")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another-secret")
    limits = sandbox.run(
        "imageblur.sandbox:own_limits", b"x" * 1000, cpu_s=7, memory_bytes=300 << 20, wall_s=60
    )
    assert limits["cpu_s"] == 7 and limits["bytes"] == 1000
    room = limits["address_space"] - limits["address_space_used"]
    assert 250 << 20 < room <= 300 << 20
    assert resource.getrlimit(resource.RLIMIT_CPU)[0] != 7  # never the caller's own
    assert set(limits["environment"]) <= {"PATH", "PYTHONPATH", "HOME", "LANG", "LC_CTYPE"} | {
        "VIRTUAL_ENV",
        "LC_ALL",
        "TMPDIR",
        "LD_LIBRARY_PATH",
        "MALLOC_ARENA_MAX",
        "PYTHONHOME",
    }


def test_a_child_past_its_wall_clock_bound_is_killed() -> None:
    with pytest.raises(sandbox.LimitExceededError, match="longer than"):
        sandbox.run("imageblur.sandbox:own_limits", b"", cpu_s=5, memory_bytes=1 << 30, wall_s=0.01)


def test_a_child_that_runs_out_of_memory_is_refused_not_accepted() -> None:
    big = avif(Image.effect_noise((1024, 1024), 50).convert("RGB"))
    try:
        refused = sandbox.run(
            "imageblur.imaging:decode_check", big, "AVIF", cpu_s=30, memory_bytes=1 << 20, wall_s=60
        )
    except sandbox.LimitExceededError:
        return
    assert refused is not None and refused[2] == "corrupt_image"


def test_only_known_targets_run() -> None:
    with pytest.raises(ValueError, match="not a sandbox target"):
        sandbox.run("os:system", b"", cpu_s=1, memory_bytes=1, wall_s=1)


@pytest.mark.parametrize("make", [heic, avif], ids=["heic", "avif"])
def test_heif_checks_decode_in_the_child_and_keep_their_answers(make: object) -> None:
    data = make(Image.new("RGB", (64, 48), "red"))  # type: ignore[operator]
    fmt = imaging.sniff_format(data)
    assert fmt in imaging.ISOLATED
    assert imaging.check(data, max_pixels=10_000).width == 64
    cut = data[: len(data) - 40]  # the coded image cut short: only a decode sees it
    with pytest.raises(InvalidImage) as refused:
        imaging.check(cut, max_pixels=10_000)
    assert refused.value.http_status == 400 and refused.value.code == "corrupt_image"


def test_jpeg_png_and_webp_decode_in_process() -> None:
    assert not {imaging.JPEG, imaging.PNG, imaging.WEBP} & set(imaging.ISOLATED)
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "WEBP")
    assert imaging.check(out.getvalue(), max_pixels=100).width == 8
