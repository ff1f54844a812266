"""The `imageblur` command as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from support import BILL, BILL_FACE, LINUS, decode, detail, run_server


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
