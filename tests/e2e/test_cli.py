"""The `imageblur` command as a user runs it."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path
from typing import Any

import pytest

from imageblur import imaging, jpeg_patch
from imageblur.ports import RegionDetector, RGBImage
from support import (
    BILL,
    BILL_FACE,
    LINUS,
    decode,
    detail,
    jpeg_bytes,
    png_bytes,
    run_server,
    wait_until,
)


def imageblur(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "imageblur.entrypoints.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "IMAGEBLUR_LOG_FORMAT": "json", **(env or {})},
        cwd=cwd,
        timeout=300,
    )


def test_blur_files_and_folders_into_an_output_folder(tmp_path: Path) -> None:
    album = tmp_path / "album"
    (album / "sub").mkdir(parents=True)
    shutil.copy(BILL, album / "bill.jpg")
    shutil.copy(LINUS, album / "sub" / "linus.jpg")
    (album / "notes.txt").write_text("not a picture")
    out = tmp_path / "out"
    result = imageblur("blur", str(album), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 of 2 images anonymized" in result.stdout
    blurred = decode((out / "album" / "bill.jpg").read_bytes())
    x0, y0, x1, y1 = BILL_FACE
    face = (slice(y0 + 200, y1 - 200), slice(x0 + 150, x1 - 150))
    assert detail(blurred[face]) < 0.25 * detail(decode(BILL.read_bytes())[face])
    assert (out / "album" / "sub" / "linus.jpg").is_file()
    assert (album / "bill.jpg").read_bytes() == BILL.read_bytes()  # input untouched


def test_blur_reports_bad_files_and_exits_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff broken")
    result = imageblur("blur", str(bad), "-o", str(tmp_path / "o"))
    assert result.returncode == 1
    assert "bad.jpg: skipped" in result.stderr


def test_config_prints_effective_settings_with_secrets_masked() -> None:
    env = {"IMAGEBLUR_PORT": "9123", "IMAGEBLUR_RABBITMQ_URL": "amqp://u:s3cret@h/"}
    result = imageblur("config", "--json", env=env)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["port"] == 9123
    assert "s3cret" not in result.stdout


def test_config_shows_the_presets_effective_detection_values() -> None:
    default = json.loads(imageblur("config", "--json").stdout)
    assert (default["detection_preset"], default["detection_threshold"]) == ("privacy", 0.12)
    env = {"IMAGEBLUR_DETECTION_PRESET": "tidy", "IMAGEBLUR_MASK_SCALE": "1.4"}
    result = imageblur("config", env=env)
    assert result.returncode == 0, result.stderr
    lines = set(result.stdout.splitlines())
    assert {
        "IMAGEBLUR_DETECTION_PRESET=tidy",
        "IMAGEBLUR_DETECTION_THRESHOLD=0.39",
        "IMAGEBLUR_MASK_SCALE=1.4",  # explicit: beats the preset's 1.25
        "IMAGEBLUR_MASK_MARGIN_PX=3.0",
    } <= lines
    thorough = imageblur("config", env={"IMAGEBLUR_DETECTION_PRESET": "thorough"})
    assert {
        "IMAGEBLUR_DETECTION_THRESHOLD=0.24",
        "IMAGEBLUR_DETECTION_MIRRORED_PASSES=2",
        "IMAGEBLUR_DETECTION_SMALL_FACE_PASS_SCALE=1.41",
    } <= set(thorough.stdout.splitlines())


def test_a_wrong_setting_fails_at_start_naming_it() -> None:
    result = imageblur("serve", env={"IMAGEBLUR_MAX_PIXELS": "-5"})
    assert result.returncode == 2
    assert "IMAGEBLUR_MAX_PIXELS" in result.stderr


def test_migrate_creates_the_schema_and_is_idempotent(tmp_path: Path) -> None:
    env = {"IMAGEBLUR_DATA_DIR": str(tmp_path)}
    for _ in range(2):
        result = imageblur("migrate", env=env)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "imageblur.sqlite3").is_file()


def test_worker_burst_mode_processes_what_is_pending_then_exits(tmp_path: Path) -> None:
    """Records left pending by a stopped embedded server are finished by a burst worker."""
    from imageblur.bootstrap import build
    from imageblur.config import load_settings
    from imageblur.services import ImageService

    env = {"IMAGEBLUR_DATA_DIR": str(tmp_path)}
    container = build(load_settings(data_dir=tmp_path), with_detector=False)
    record = container.images.submit(LINUS.read_bytes(), name="l.jpg")
    container.close()  # the in-process queue, and the job in it, are gone
    assert isinstance(container.images, ImageService)

    result = imageblur("worker", "--burst", env=env)
    assert result.returncode == 0, result.stderr
    container = build(load_settings(data_dir=tmp_path), with_detector=False)
    assert container.images.get(record.id).status == "done"
    container.close()


def test_alive_reports_a_worker_heartbeat(tmp_path: Path) -> None:
    beat = tmp_path / "alive"
    env = {"IMAGEBLUR_DATA_DIR": str(tmp_path), "IMAGEBLUR_HEARTBEAT_FILE": str(beat)}
    assert imageblur("alive", env=env).returncode == 1  # no worker ran yet
    assert imageblur("worker", "--burst", env=env).returncode == 0
    assert imageblur("alive", env=env).returncode == 0
    os.utime(beat, (0, 0))
    assert imageblur("alive", env=env).returncode == 1


def test_sigterm_stops_the_server_cleanly_with_exit_0(tmp_path: Path) -> None:
    # Orchestrators stop a pod with SIGTERM; a clean stop must not look like a crash.
    with run_server(tmp_path / "data") as server:
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, server.logs()
        assert '"api.stopped"' in server.logs()


def _mixed_album(root: Path) -> Path:
    """Good and bad files, sorted as the command walks them: pictures of every size
    between bad files, so that in flight a later file may finish before an earlier one."""
    album = root / "album"
    (album / "sub").mkdir(parents=True)
    shutil.copy(BILL, album / "a-bill.jpg")
    (album / "b-broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    for n in range(3):
        (album / f"c-noise-{n}.jpg").write_bytes(jpeg_bytes(640, 480, seed=n))
    (album / "d-empty.png").write_bytes(b"")
    (album / "e-flat.png").write_bytes(png_bytes(300, 200))
    (album / "f-text.webp").write_text("not a picture")
    shutil.copy(LINUS, album / "g-linus.jpg")
    shutil.copy(LINUS, album / "sub" / "linus.jpg")
    (album / "sub" / "h-noise.jpg").write_bytes(jpeg_bytes(1200, 900, seed=7))
    (album / "notes.txt").write_text("not an image suffix: not collected")
    return album


def _blur_album(album: Path, out: Path, *, threads: int) -> subprocess.CompletedProcess[str]:
    """The album, and a file inside the output folder that would be its own output."""
    out.mkdir()
    own = out / "own.jpg"
    own.write_bytes(LINUS.read_bytes())
    paths = (str(album), str(own))
    return imageblur("blur", *paths, "-o", str(out), "--threads", str(threads))  # type: ignore[no-any-return]


def _messages(stderr: str, out: Path) -> list[str]:
    """The lines for people (not the JSON log), the output folder written OUT."""
    lines = stderr.replace(str(out), "OUT").splitlines()
    return [line for line in lines if not line.startswith("{")]


def _blurred_sources(stderr: str) -> list[str]:
    events = (json.loads(line) for line in stderr.splitlines() if line.startswith("{"))
    return [e["source"] for e in events if e.get("event") == "file.blurred"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_blur_in_flight_gives_exactly_what_one_at_a_time_gives(tmp_path: Path) -> None:
    """Several images in flight (the worker's setting) and one at a time: the same files,
    byte for byte, the same messages in the files' order, the same exit status."""
    album = _mixed_album(tmp_path)
    one = _blur_album(album, tmp_path / "one", threads=1)
    many = _blur_album(album, tmp_path / "many", threads=3)

    assert (one.returncode, many.returncode) == (1, 1), many.stderr
    for result, out in ((one, tmp_path / "one"), (many, tmp_path / "many")):
        assert result.stdout == f"8 of 12 images anonymized into {out}\n"
    skipped = _messages(many.stderr, tmp_path / "many")
    assert skipped == _messages(one.stderr, tmp_path / "one")
    assert [line.split(":")[0] for line in skipped] == [
        str(album / "b-broken.jpg"),
        str(album / "d-empty.png"),
        str(album / "f-text.webp"),
        "imageblur",  # refusing to overwrite the input .../own.jpg
    ]
    assert skipped[-1] == "imageblur: refusing to overwrite the input OUT/own.jpg"
    assert _blurred_sources(many.stderr) == _blurred_sources(one.stderr)
    assert len(_blurred_sources(many.stderr)) == 8
    blurred = _files(tmp_path / "many")
    assert blurred == _files(tmp_path / "one")
    assert sorted(blurred) == [
        "album/a-bill.jpg",
        "album/c-noise-0.jpg",
        "album/c-noise-1.jpg",
        "album/c-noise-2.jpg",
        "album/e-flat.png",
        "album/g-linus.jpg",
        "album/sub/h-noise.jpg",
        "album/sub/linus.jpg",
        "own.jpg",
    ]
    assert blurred["own.jpg"] == LINUS.read_bytes()  # refused, untouched


def test_blur_shows_its_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    album = tmp_path / "album"
    album.mkdir()
    for n in range(3):
        (album / f"{n}.jpg").write_bytes(jpeg_bytes(320, 240, seed=n))
    (album / "3-bad.jpg").write_bytes(b"\xff\xd8\xff broken")
    leader, follower = pty.openpty()
    # A terminal of 80 x 24 (a new pseudo-terminal is 0 x 0, where tqdm draws nothing).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    terminal: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(leader, terminal), daemon=True)
    reader.start()
    cli = [sys.executable, "-m", "imageblur.entrypoints.cli", "blur", str(album)]
    with subprocess.Popen(
        [*cli, "-o", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**os.environ, "IMAGEBLUR_LOG_LEVEL": "warning"},
    ) as process:
        os.close(follower)
        assert process.wait(timeout=300) == 1
    reader.join(timeout=60)
    shown = b"".join(terminal).decode(errors="replace")
    assert "4/4" in shown and "100%" in shown, shown
    assert f"{album / '3-bad.jpg'}: skipped" in shown


def _read_all(fd: int, into: list[bytes]) -> None:
    """What a terminal shows, until the last process holding it closes it."""
    try:
        while chunk := os.read(fd, 65536):
            into.append(chunk)
    except OSError:  # EIO: the other side is closed
        pass
    finally:
        os.close(fd)


class _DecodedPixels:
    """Decoded pixels held at once, seen through the real decode and the real encoders:
    an image holds its pixels from the end of its decode to the end of its encode (the
    lossless patch, or a whole re-encode where the patch refuses)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}
        self.peak = 0
        self.encoded = threading.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        decode, patch, encode = imaging.decode, jpeg_patch.patch, imaging.encode

        def decoded(*args: Any, **kwargs: Any) -> imaging.DecodedImage:
            image = decode(*args, **kwargs)
            with self._lock:
                self._held[threading.get_ident()] = image.rgb.shape[0] * image.rgb.shape[1]
                self.peak = max(self.peak, sum(self._held.values()))
            return image

        def released(real: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                result = real(*args, **kwargs)  # raised (the patch refused): still held
                with self._lock:
                    self._held.pop(threading.get_ident())
                self.encoded.set()
                return result

            return call

        monkeypatch.setattr(imaging, "decode", decoded)
        monkeypatch.setattr(jpeg_patch, "patch", released(patch))
        monkeypatch.setattr(imaging, "encode", released(encode))


class _FirstDetectionWaits:
    """The real detector, whose first detection starts only once another image was
    decoded, detected, blurred and encoded: possible only with images in flight."""

    def __init__(self, real: RegionDetector, encoded: threading.Event) -> None:
        self._real = real
        self._encoded = encoded
        self._first = threading.Lock()
        self.overlapped: bool | None = None

    def detect(self, image: RGBImage) -> Any:
        return self.detect_regions(image)[0]

    def detect_regions(self, image: RGBImage) -> Any:
        if self._first.acquire(blocking=False):
            self.overlapped = self._encoded.wait(timeout=120)
        return self._real.detect_regions(image)


def test_blur_overlaps_images_within_the_worker_pixel_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two large photos never hold their pixels at once; a small one runs beside a large
    one, its decode and encode during the large one's detection."""
    from imageblur import bootstrap
    from imageblur.entrypoints import cli

    large, small = 1600 * 1200, 400 * 300
    album = tmp_path / "album"
    album.mkdir()
    for n in range(3):
        (album / f"{n}-large.jpg").write_bytes(jpeg_bytes(1600, 1200, seed=n))
        (album / f"{n}-small.jpg").write_bytes(jpeg_bytes(400, 300, seed=10 + n))
    pixels = _DecodedPixels()
    pixels.install(monkeypatch)
    gated: list[_FirstDetectionWaits] = []

    def build_detector(settings: Any) -> _FirstDetectionWaits:
        real = build(settings)
        assert isinstance(real, RegionDetector)
        gated.append(_FirstDetectionWaits(real, pixels.encoded))
        return gated[0]

    build = bootstrap.build_detector
    monkeypatch.setattr(bootstrap, "build_detector", build_detector)
    budget = large + small + 1000  # one large and one small fit, two large do not
    monkeypatch.setenv("IMAGEBLUR_WORKER_PIXEL_BUDGET", str(budget))
    monkeypatch.setenv("IMAGEBLUR_WORKER_THREADS", "2")
    # The command's own logging set-up caches every logger used afterwards with its
    # processors; once a second in-process set-up replaced them (test_poison_messages),
    # `capture_logs` in later tests saw nothing from those loggers (test_keycheck failed
    # in the full suite only, after test_keys had used its logger): keep pytest's.
    monkeypatch.setattr(cli, "configure_logging", lambda **_: None)

    assert cli.main(["blur", str(album), "-o", str(tmp_path / "out")]) == 0
    assert gated[0].overlapped, "no image went through while the first one was detected"
    assert large + small <= pixels.peak <= budget
    assert len(list((tmp_path / "out" / "album").iterdir())) == 6


def test_ctrl_c_stops_blur_promptly_leaving_only_whole_files(tmp_path: Path) -> None:
    album = tmp_path / "album"
    album.mkdir()
    for n in range(60):
        (album / f"{n:02}.jpg").write_bytes(jpeg_bytes(1024, 768, seed=n))
    out = tmp_path / "out"
    with subprocess.Popen(
        [sys.executable, "-m", "imageblur.entrypoints.cli", "blur", str(album), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a terminal starts it, whatever the test runner does with SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        env={**os.environ, "IMAGEBLUR_LOG_LEVEL": "warning"},
    ) as process:
        wait_until(lambda: list(out.rglob("*.jpg")), timeout_s=300, what="a first result")
        process.send_signal(signal.SIGINT)  # Ctrl-C
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGINT  # as one image at a time died of it
    assert "KeyboardInterrupt" in stderr
    assert "Exception in thread" not in stderr and "Cancelled" not in stderr, stderr
    written = sorted(out.rglob("*.jpg"))
    assert 0 < len(written) < 60
    for path in written:  # each result whole: written by the main thread before it stopped
        assert decode(path.read_bytes()).shape == (768, 1024, 3)


def test_blur_handles_videos_beside_pictures(tmp_path: Path) -> None:
    from clips import Clip, decoded

    album = tmp_path / "album"
    album.mkdir()
    shutil.copy(BILL, album / "bill.jpg")
    Clip(frames=10, audio=["aac"]).write(album / "clip.mp4")
    Clip(container="mov", frames=5).write(album / "phone.MOV")
    (album / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64)
    out = tmp_path / "out"
    result = imageblur("blur", str(album), "-o", str(out), "--mode", "solid")
    assert result.returncode == 1, result.stderr  # the broken one
    assert "1 of 1 images anonymized" in result.stdout
    assert "2 of 3 videos anonymized" in result.stdout
    assert "broken.mp4: skipped: the video could not be read" in result.stderr
    assert sorted(p.name for p in (out / "album").iterdir()) == [
        "bill.jpg",
        "clip.mp4",
        "phone.mp4",
    ]
    assert len(decoded(out / "album" / "clip.mp4")) == 10
    assert len(decoded(out / "album" / "phone.mp4")) == 5


def test_blur_takes_the_upload_options_as_flags(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = imageblur(
        "blur", str(BILL), "-o", str(out), "--mode", "solid", "--hide", "400,300,200,200"
    )
    assert result.returncode == 0, result.stderr
    pixels = decode((out / "bill-gates.jpg").read_bytes()).astype(float)
    corner = pixels[308:492, 408:592]
    assert corner.std(axis=(0, 1)).max() < 3  # hidden with one flat colour
    x0, y0, x1, y1 = BILL_FACE
    assert pixels[y0 + 250 : y1 - 250, x0 + 200 : x1 - 200].std(axis=(0, 1)).max() < 3
    bad = imageblur("blur", str(BILL), "-o", str(out), "--hide", "0,0,-1,5")
    assert bad.returncode == 2 and "X,Y,W,H" in bad.stderr


def test_blur_takes_ignore_and_preset_and_hides_in_videos_too(tmp_path: Path) -> None:
    """`--ignore` leaves a face inside its rectangle as it is; `--preset` is the
    detection preset's setting; `--hide` covers every frame of a video as well."""
    from clips import Clip, decoded
    from imageblur.entrypoints import cli

    assert cli._parser().parse_args(["blur", "x", "--preset", "tidy"]).detection_preset == "tidy"
    x0, y0, x1, y1 = BILL_FACE
    around = f"{x0 - 20},{y0 - 20},{x1 - x0 + 40},{y1 - y0 + 40}"
    album = tmp_path / "album"
    album.mkdir()
    shutil.copy(BILL, album / "bill.jpg")
    Clip(width=160, height=120, frames=6).write(album / "clip.mp4")
    out = tmp_path / "out"
    args = ["--mode", "solid", "--preset", "tidy", "--ignore", around, "--hide", "0,0,40,30"]
    result = imageblur("blur", str(album), "-o", str(out), *args)
    assert result.returncode == 0, result.stderr
    pixels = decode((out / "album" / "bill.jpg").read_bytes()).astype(float)
    assert pixels[y0 + 250 : y1 - 250, x0 + 200 : x1 - 200].std(axis=(0, 1)).max() > 10
    assert pixels[4:26, 4:36].std(axis=(0, 1)).max() < 3  # hidden with one flat colour
    frames = [f.to_ndarray(format="rgb24") for f in decoded(out / "album" / "clip.mp4")]
    assert len(frames) == 6
    assert all(f[4:26, 4:36].std(axis=(0, 1)).max() < 3 for f in frames)
    assert all(f[60:110, 60:150].std(axis=(0, 1)).max() > 10 for f in frames)
