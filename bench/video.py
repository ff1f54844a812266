#!/usr/bin/env python3
"""Generated clips with known face boxes, and what an anonymized clip leaves exposed.

    python bench/video.py make-clip PHOTO OUT.mp4 --box X,Y,W,H [--box ...]
        [--size 1280x720] [--fps 30] [--seconds 8] [--cut] [--leave-reenter]
    python bench/video.py check IN OUT --boxes BOXES.json [--solid R,G,B] [--json]
    python bench/video.py oracle IN OUT --boxes BOXES.json [--scale 1.25] [--miss 10,11]
    python bench/video.py run [--sizes 720p,1080p,2160p] [--clips 12] [--out DIR]
        [--skip-deface | --deface PATH] [--deface-venv DIR] [--seconds 8]
        [--tools ours,per-frame,deface] [--reuse] [--json]

`make-clip` writes a clip (generated: a virtual camera pans and zooms over PHOTO,
H.264 + AAC tone in MP4 with a phone's location, creation time, make and model) and
OUT.mp4.boxes.json, the face boxes of every frame (`bench/clip_camera.py`). `--box` is a
face in PHOTO pixels (repeat it for more faces). `--cut` adds a second shot (the mirrored
photo) halfway; `--leave-reenter` pans until the face has left the frame and back.

`check` reads an output made in solid mode, beside its input clip, and prints exposed
face-frames (faces >= 20 px and >= 40 px), flashes, background hidden, whether the sound
is kept and which metadata is left (`bench/clip_check.py` documents the pixel rule).

`oracle` writes the ideal output from the true boxes (each grown `--scale` about its
centre, filled black; `--miss` leaves those frames' faces exposed, to show what a flash
looks like in `check`'s figures): a reference for `check` itself.

`run` is the benchmark (`bench/video_run.py`): `--clips` clips of `--seconds` s at 30
fps per size from the first photos by path of ../shared/wider-face-dev (`--dataset`),
each through our pipeline (solid, tracking at the default stride), our per-frame mode
and deface 1.5.0 (`--replacewith solid --keep-audio`; `--deface PATH` a deface command,
else installed into `--deface-venv`), each a whole process; at 2160p 2 clips, ours only,
for peak memory. Prints a table per size and the item-6 targets (`bench/video_report.py`).
The clips and outputs go to `--out` (default: a new temporary folder); clips already
there are reused; with `--reuse`, so are the figures of a (size, clip, tool) already
in `OUT/clips.jsonl` (resuming a run, or measuring one tool again beside the others'
kept figures). `--tools`: only these tools run (the others' figures may be reused).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from clip_camera import ClipSpec, make_clip
from clip_check import check
from provenance import measured_commit
from video_report import table, targets
from video_run import run

DATASET = Path(__file__).resolve().parents[2] / "shared" / "wider-face-dev"


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "make-clip":
        width, height = _pair(args.size, "x", int)
        boxes = [(x, y, x + w, y + h) for x, y, w, h in (_numbers(b, 4) for b in args.box)]
        spec = ClipSpec(width, height, args.fps, args.seconds, args.cut, args.leave_reenter)
        record = make_clip(Path(args.photo), Path(args.out), boxes, spec)
        out_of_view = sum(1 for frame in record["boxes"] if frame[0] is None)  # type: ignore[attr-defined]
        print(
            f"{args.out}: {record['frames']} frames {width}x{height} at {args.fps} fps, "
            f"cuts at {record['cuts']}, face 1 out of the frame in {out_of_view} frames"
            + (" (photo upscaled)" if record["upscaled"] else "")
        )
    elif args.command == "check":
        solid = tuple(int(v) for v in _numbers(args.solid, 3))
        report = check(Path(args.clip), Path(args.output), Path(args.boxes), solid=solid)  # type: ignore[arg-type]
        report["commit"] = measured_commit()
        print(json.dumps(report) if args.json else _table(report))
    elif args.command == "run":
        benchmark(args)
    else:
        misses = {int(v) for v in args.miss.split(",") if v}
        oracle(Path(args.clip), Path(args.output), Path(args.boxes), args.scale, misses)


def benchmark(args: argparse.Namespace) -> None:
    from speed import install_deface

    work = Path(args.out or tempfile.mkdtemp(prefix="video-bench-"))
    only = [t for t in args.tools.split(",") if t]
    skip_deface = args.skip_deface or (bool(only) and "deface" not in only)
    deface = None if skip_deface else args.deface
    if deface is None and not skip_deface:
        venv = Path(args.deface_venv or work / "deface-venv")
        deface = install_deface(venv)
    sizes = [s for s in args.sizes.split(",") if s]
    report = run(
        Path(args.dataset),
        sizes,
        args.clips,
        work,
        deface,
        seconds=args.seconds,
        only=only,
        reuse=args.reuse,
    )
    report["commit"] = measured_commit()
    report["targets"] = targets(report["sizes"])
    report["out"] = str(work)
    print(json.dumps(report) if args.json else table(report))


def oracle(clip: Path, output: Path, boxes_file: Path, scale: float, misses: set[int]) -> None:
    """The clip with every true box grown `scale` times filled black (but in `misses`),
    the audio copied."""
    per_frame = json.loads(boxes_file.read_text())["boxes"]
    with av.open(str(clip)) as source, av.open(str(output), "w", format="mp4") as sink:
        video_in = source.streams.video[0]
        rate = video_in.average_rate or Fraction(30)
        video = sink.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = video_in.width, video_in.height, "yuv420p"
        video.options = {"crf": "20", "preset": "veryfast"}
        audio_in = source.streams.audio[0] if source.streams.audio else None
        audio = sink.add_stream_from_template(audio_in) if audio_in else None
        for packet in source.demux(*(s for s in (video_in, audio_in) if s is not None)):
            if packet.stream is audio_in and audio is not None and packet.dts is not None:
                packet.stream = audio
                sink.mux(packet)
                continue
            for frame in packet.decode():
                index = round(float(frame.time * rate)) if frame.time is not None else 0
                image = frame.to_ndarray(format="rgb24")
                if index not in misses and index < len(per_frame):
                    _fill(image, per_frame[index], scale)
                out = av.VideoFrame.from_ndarray(image, format="rgb24")
                out.pts, out.time_base = frame.pts, frame.time_base
                sink.mux(video.encode(out))
        sink.mux(video.encode(None))


def _fill(image: np.ndarray[Any, Any], boxes: list[list[float] | None], scale: float) -> None:
    height, width = image.shape[:2]
    for box in boxes:
        if box is None:
            continue
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        hw, hh = (box[2] - box[0]) * scale / 2, (box[3] - box[1]) * scale / 2
        x0, y0 = max(0, int(cx - hw)), max(0, int(cy - hh))
        x1, y1 = min(width, int(np.ceil(cx + hw))), min(height, int(np.ceil(cy + hh)))
        image[y0:y1, x0:x1] = 0


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"commit {report['commit']}",
        f"frames: input {report['input_frames']}, output {report['output_frames']}"
        + ("" if report["frames_match"] else " (DIFFERENT: frames paired by order, figures off)"),
        f"exposed face-frames >= 20 px: {report['exposed_face_frames_20']:.2%} "
        f"of {report['face_frames_20']}",
        f"exposed face-frames >= 40 px: {report['exposed_face_frames_40']:.2%} "
        f"of {report['face_frames_40']}",
        f"flashes: {report['flashes']} (per face {report['flashes_per_face']})",
        f"background hidden: {report['background_hidden']:.2%}",
        f"sound kept: {'yes' if report['sound_kept'] else 'no'} "
        f"(in {report['audio_in']}, out {report['audio_out']})",
        "metadata left: "
        + (", ".join(f"{k}={v}" for k, v in report["metadata_left"].items()) or "none"),
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make-clip", help="write a generated clip and its face boxes")
    make.add_argument("photo")
    make.add_argument("out")
    make.add_argument("--box", action="append", required=True, help="X,Y,W,H in photo pixels")
    make.add_argument("--size", default="1280x720")
    make.add_argument("--fps", type=int, default=30)
    make.add_argument("--seconds", type=float, default=8.0)
    make.add_argument("--cut", action="store_true")
    make.add_argument("--leave-reenter", action="store_true")
    for name, text in (
        ("check", "figures of an output in solid mode"),
        ("oracle", "the ideal output"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("clip")
        sub.add_argument("output")
        sub.add_argument("--boxes", required=True)
    check_ = commands.choices["check"]
    check_.add_argument("--solid", default="0,0,0", help="the fill colour R,G,B")
    check_.add_argument("--json", action="store_true")
    run_ = commands.add_parser("run", help="the benchmark: ours, per-frame and deface")
    run_.add_argument("--dataset", default=str(DATASET))
    run_.add_argument("--sizes", default="720p,1080p,2160p", help="720p, 1080p, 2160p or WxH")
    run_.add_argument("--clips", type=int, default=12, help="the first N clips (2160p: 2)")
    run_.add_argument("--seconds", type=float, default=8.0)
    run_.add_argument("--out", default=None, help="clips and outputs here (kept)")
    run_.add_argument("--skip-deface", action="store_true")
    run_.add_argument("--deface", type=Path, default=None, help="a deface command to run")
    run_.add_argument("--deface-venv", default=None, help="deface installed (or found) here")
    run_.add_argument("--tools", default="", help="only these: ours, per-frame, deface")
    run_.add_argument("--reuse", action="store_true", help="figures already in OUT are kept")
    run_.add_argument("--json", action="store_true")
    oracle_ = commands.choices["oracle"]
    oracle_.add_argument("--scale", type=float, default=1.25)
    oracle_.add_argument("--miss", default="", help="frames whose faces are left exposed")
    return parser


def _numbers(text: str, count: int) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise SystemExit(f"expected {count} comma-separated numbers: {text!r}")
    return values


def _pair(text: str, sep: str, kind: type[int]) -> tuple[int, int]:
    parts = text.split(sep)
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise SystemExit(f"expected WxH: {text!r}")
    return kind(parts[0]), kind(parts[1])


if __name__ == "__main__":
    sys.exit(main())
