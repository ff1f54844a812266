"""bench/video.py: a small generated clip, the ideal output rendered from its true boxes,
and `check`'s figures read back from the pixels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import pytest

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT.parent / "shared" / "example-pictures" / "bill-gates.jpg"
FACE = "718,294,724,929"  # x, y, w, h of the face in the photo


def video(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "bench/video.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def check(clip: Path, output: Path, *extra: str) -> dict[str, Any]:
    text = video("check", str(clip), str(output), "--boxes", f"{clip}.boxes.json", "--json", *extra)
    report: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clip") / "clip.mp4"
    size = ("--size", "320x180", "--fps", "15", "--seconds", "2", "--cut")
    video("make-clip", str(PHOTO), str(out), "--box", FACE, *size)
    return out


def test_make_clip_writes_a_phone_like_clip_and_its_boxes(clip: Path) -> None:
    with av.open(str(clip)) as box:
        assert box.streams.video[0].codec_context.name == "h264"
        assert box.streams.audio[0].codec_context.name == "aac"
        assert (box.streams.video[0].width, box.streams.video[0].height) == (320, 180)
        assert "com.apple.quicktime.location.ISO6709" in box.metadata
        assert "creation_time" in box.metadata
    boxes = json.loads(Path(f"{clip}.boxes.json").read_text())
    assert boxes["frames"] == len(boxes["boxes"]) == 30
    assert boxes["cuts"] == [15]


def test_check_reads_an_untouched_clip_as_all_exposed_with_its_metadata(clip: Path) -> None:
    report = check(clip, clip)
    assert report["exposed_face_frames_20"] == 1.0
    assert report["background_hidden"] == 0.0
    assert report["sound_kept"] is True
    assert any("ISO6709" in key for key in report["metadata_left"])


def test_check_reads_the_ideal_output_as_all_hidden_and_counts_a_flash(
    clip: Path, tmp_path: Path
) -> None:
    ideal, flashing = tmp_path / "ideal.mp4", tmp_path / "flashing.mp4"
    video("oracle", str(clip), str(ideal), "--boxes", f"{clip}.boxes.json")
    video("oracle", str(clip), str(flashing), "--boxes", f"{clip}.boxes.json", "--miss", "5,6,20")
    report = check(clip, ideal)
    assert report["exposed_face_frames_20"] == report["exposed_face_frames_40"] == 0.0
    assert report["flashes"] == 0
    assert report["output_frames"] == report["input_frames"] == 30
    assert report["frames_match"] is True
    assert report["sound_kept"] is True
    assert report["metadata_left"] == {}
    flashes = check(clip, flashing)
    assert flashes["flashes"] == 2
    assert flashes["exposed_face_frames_20"] == pytest.approx(3 / 30)


def run_json(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, *args, "--json"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_the_linker_comparison_runs_without_the_libraries() -> None:
    report = run_json("bench/tracking_ab.py", "--scenes", "3")
    assert {"per-frame", "ours"} <= set(report["linkers"])
    assert report["linkers"]["ours"]["exposed_face_frames"] <= 0.05


def test_the_real_detector_comparison_runs_on_a_tiny_clip(tmp_path: Path) -> None:
    dataset = ROOT.parent / "shared" / "wider-face-dev"
    args = ("--clips", "1", "--seconds", "0.5", "--size", "320x180", "--strides", "1,3")
    report = run_json("bench/tracking_real.py", str(dataset), *args, "--work", str(tmp_path))
    assert set(report["plans"]) == {"per-frame", "tracked/1", "tracked/3"}
    assert report["plans"]["per-frame"]["face_frames_20"] > 0


def test_the_benchmark_runs_each_tool_on_a_tiny_clip(tmp_path: Path) -> None:
    """`run` end to end on one 0.5 s clip: ours, per-frame and a stand-in for deface (it
    copies the clip: everything exposed), so the plumbing stays working without deface."""
    fake = tmp_path / "deface"
    fake.write_text(
        f"#!{sys.executable}\nimport shutil, sys\n"
        "args = sys.argv[1:]\nclip = next(a for a in args if a.endswith('.mp4'))\n"
        "shutil.copy(clip, args[args.index('-o') + 1])\n"
    )
    fake.chmod(0o755)
    args = ("--sizes", "320x180", "--clips", "1", "--seconds", "0.5", "--deface", str(fake))
    report = run_json("bench/video.py", "run", *args, "--out", str(tmp_path / "work"))
    rows = report["sizes"]["320x180"]
    assert set(rows) == {"ours", "per-frame", "deface"}
    assert rows["ours"]["face_frames_20"] == rows["deface"]["face_frames_20"] > 0
    assert rows["deface"]["exposed_face_frames_20"] == 1.0
    assert rows["ours"]["frames"] == 15
    assert rows["ours"]["sound_kept"] is True
    assert rows["ours"]["metadata_left"] == []
    assert rows["ours"]["peak_rss_mb"] > 0
    assert {t["target"] for t in report["targets"]} >= {"flashes vs per-frame"}
    lines = (tmp_path / "work" / "clips.jsonl").read_text().splitlines()
    assert [json.loads(line)["tool"] for line in lines] == ["ours", "per-frame", "deface"]
