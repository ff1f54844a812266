"""`imageblur blur` for videos: one at a time (each keeps both cores busy), with a
progress bar in frames. A video's result is written whole or not at all (the
pipeline renames it into place when it is complete)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from imageblur.config import Settings
from imageblur.domain import UploadOptions
from imageblur.logs import get_logger
from imageblur.ports import FaceDetector

if TYPE_CHECKING:
    from imageblur.video.pipeline import VideoOptions

log = get_logger("imageblur.cli")

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv"}


def is_video(path: Path) -> bool:
    """A video by its first bytes (MP4/MOV or WebM/Matroska), whatever its name says."""
    from imageblur.video.errors import InvalidVideo
    from imageblur.video.probe import sniff_container

    try:
        with path.open("rb") as file:
            sniff_container(file.read(64))
    except (InvalidVideo, OSError):
        return False
    return True


def blur_videos(
    settings: Settings,
    detector: FaceDetector,
    files: Sequence[tuple[Path, Path]],
    out_root: Path,
    *,
    areas: UploadOptions | None = None,
) -> int:
    """Anonymize each (video, path relative to `out_root`); the number that failed.
    `areas`: the `hide` and `ignore` rectangles, as an upload's options."""
    from imageblur.bootstrap import video_options
    from imageblur.video.service_parts import chosen

    detector, options = chosen(detector, video_options(settings), areas)
    failures = 0
    for source, relative in files:
        failures += _blur_one(source, out_root / relative, detector, options)
    print(f"{len(files) - failures} of {len(files)} videos anonymized into {out_root}")
    return failures


def _blur_one(
    source: Path, target_stem: Path, detector: FaceDetector, options: VideoOptions
) -> int:
    """Anonymize one video into `target_stem` + the result's extension; 1 if it failed."""
    from tqdm import tqdm

    from imageblur.video.errors import BrokenVideo, InvalidVideo
    from imageblur.video.pipeline import blur_video, output_extension
    from imageblur.video.probe import probe
    from imageblur.video.progress import Progress

    try:
        info = probe(source, options.limits)
    except (InvalidVideo, OSError) as exc:
        print(f"{source}: skipped: {exc}", file=sys.stderr)
        return 1
    target = target_stem.with_suffix(output_extension(info))
    if target.resolve() == source.resolve():
        print(f"imageblur: refusing to overwrite the input {source}", file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    with tqdm(total=2 * info.frames, unit="frame", desc=source.name, disable=None) as bar:

        def show(progress: Progress) -> None:
            bar.total = 2 * progress.frames_total
            before = progress.frames_total if progress.stage == "render" else 0
            bar.n = before + progress.frames_done
            bar.set_postfix_str(progress.stage, refresh=False)
            bar.refresh()

        try:
            result = blur_video(source, target, detector, options, on_progress=show, info=info)
        except (BrokenVideo, OSError) as exc:
            tqdm.write(f"{source}: failed: {exc}", file=sys.stderr)
            return 1
    log.info(
        "file.blurred",
        source=str(source),
        target=str(target),
        faces=result.faces,
        frames=result.frames,
        audio=result.audio,
    )
    return 0
