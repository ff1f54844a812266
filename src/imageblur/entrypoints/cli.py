"""The `imageblur` command: serve | api | worker | blur | batch | alive | migrate | reseal
| config."""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from imageblur import __version__
from imageblur.allocator import limit_arenas
from imageblur.config import Settings, SettingsError, load_settings
from imageblur.domain import ImageblurError, Rect, UploadOptions
from imageblur.logs import configure_logging, get_logger

if TYPE_CHECKING:
    from imageblur.anonymizer import AnonymizedImage
    from imageblur.bootstrap import Container
    from imageblur.entrypoints.metrics_server import MetricsServer

log = get_logger("imageblur.cli")

_T = TypeVar("_T")
_R = TypeVar("_R")

# `imageblur blur` starts this many files per image in flight (see `_in_flight`).
AHEAD_PER_THREAD = 2

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".hif", ".avif"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imageblur", description="Privacy-first image anonymization: blur every face."
    )
    parser.add_argument("--version", action="version", version=f"imageblur {__version__}")
    parser.add_argument(
        "--config", metavar="FILE", help="TOML or YAML settings file (or IMAGEBLUR_CONFIG)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, text in (
        ("serve", "API and worker in one process (the embedded default)"),
        ("api", "the HTTP API alone"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--host", help="listen address (IMAGEBLUR_HOST)")
        p.add_argument("--port", type=int, help="listen port (IMAGEBLUR_PORT)")

    p = sub.add_parser("worker", help="process jobs from the queue")
    p.add_argument("--threads", type=int, dest="worker_threads", help="jobs at once")
    p.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    p.add_argument(
        "--kinds",
        dest="worker_kinds",
        metavar="KINDS",
        help="job kinds to take, comma-separated: kind names, `pictures`, `long` "
        "(IMAGEBLUR_WORKER_KINDS; default: every kind)",
    )

    p = sub.add_parser(
        "blur", help="anonymize local pictures and videos, files or folders, no server needed"
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    p.add_argument("-o", "--output", type=Path, default=Path("blurred"), help="output folder")
    _add_choices(p)
    p.add_argument(
        "--threads",
        type=int,
        dest="worker_threads",
        metavar="N",
        help="images in flight, as the worker's jobs (IMAGEBLUR_WORKER_THREADS; their decoded "
        "pixels within IMAGEBLUR_WORKER_PIXEL_BUDGET)",
    )

    _add_batch(sub)
    sub.add_parser(
        "alive", help="liveness probe of a worker: its heartbeat file is fresh (exit 0) or not"
    )
    sub.add_parser("migrate", help="create or upgrade the metadata schema")
    p = sub.add_parser(
        "reseal",
        help="seal originals stored without encryption, and re-seal those under old keys, "
        "with the current originals key",
    )
    p.add_argument("--dry-run", action="store_true", help="count, change nothing")
    p = sub.add_parser("config", help="print the effective settings, secrets masked")
    p.add_argument("--json", action="store_true", help="as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {
        k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None
    }
    try:
        settings = load_settings(args.config, **overrides)
    except SettingsError as exc:
        print(f"imageblur: {exc}", file=sys.stderr)
        return 2
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    try:
        return _run(args, settings)
    except SettingsError as exc:  # a start-up check of api, serve or worker
        print(f"imageblur: {exc}", file=sys.stderr)
        return 2
    except ImageblurError as exc:
        from imageblur.detection.runtime import ModelError  # not at import: it loads numpy

        if not isinstance(exc, ModelError):
            raise
        print(f"imageblur: {exc}", file=sys.stderr)  # missing, or not the pinned model
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command
    if command in ("serve", "api", "worker", "blur"):
        limit_arenas()  # before any thread starts: see imageblur.allocator
    if command in ("serve", "api"):
        return _serve(settings, run_worker=command == "serve")
    if command == "worker":
        return _worker(settings, burst=args.burst)
    if command == "blur":
        areas = UploadOptions(hide=tuple(args.hide or ()), ignore=tuple(args.ignore or ()))
        return _blur(settings, args.paths, args.output, areas=areas)
    if command == "batch":
        return _batch(settings, args)
    if command == "migrate":
        return _migrate(settings)
    if command == "reseal":
        return _reseal(settings, dry_run=args.dry_run)
    if command == "alive":
        return _alive(settings)
    return _print_config(settings, as_json=args.json)


def _add_batch(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "batch",
        help="anonymize a bucket or folder into another on a running API (a bucket batch) "
        "and follow it",
    )
    p.add_argument("source", metavar="SRC", help="s3://bucket/prefix or file:/folder")
    p.add_argument("target", metavar="DST", help="s3://bucket/prefix or file:/folder")
    p.add_argument("--url", help="the API (IMAGEBLUR_URL; default http://127.0.0.1:IMAGEBLUR_PORT)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a batch option: mode, keep_metadata, preset or callback_url (again for more)",
    )
    p.add_argument("--dry-run", action="store_true", help="list and count, write nothing")


def _batch(settings: Settings, args: argparse.Namespace) -> int:
    """Post the batch (the token from IMAGEBLUR_API_TOKEN, never printed) and follow it."""
    import os

    from imageblur.entrypoints import batch_cli

    url = args.url or os.environ.get("IMAGEBLUR_URL") or f"http://127.0.0.1:{settings.port}"
    try:
        body = {
            "source": batch_cli.location(args.source),
            "target": batch_cli.location(args.target),
            "options": batch_cli.options(args.option),
            "dry_run": args.dry_run,
        }
    except batch_cli.UsageError as exc:
        print(f"imageblur: {exc}", file=sys.stderr)
        return 2
    tokens = settings.api_tokens()
    return batch_cli.run(url, tokens[0] if tokens else None, body)


def _serve(settings: Settings, *, run_worker: bool) -> int:
    import uvicorn

    from imageblur.entrypoints.api import create_app

    worker_failed = threading.Event()

    def stop_serving() -> None:  # a worker thread died: exit non-zero, to be restarted
        worker_failed.set()
        server.should_exit = True

    app = create_app(settings, run_worker=run_worker, on_worker_failure=stop_serving)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,  # ours, configured above
            server_header=False,
            # `http` and `loop` stay "auto": httptools and uvloop, installed with us.
            timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        )
    )
    # After a graceful shutdown uvicorn restores the SIGTERM handler it found and raises
    # the signal again, so with the default handler the process dies of it (exit 143)
    # and an orchestrator records a clean stop as an error. Ours ends it with exit 0.
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 1 if worker_failed.is_set() else 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _worker(settings: Settings, *, burst: bool) -> int:
    from imageblur.bootstrap import build
    from imageblur.entrypoints.startup import check_worker
    from imageblur.entrypoints.worker import WorkerRuntime

    check_worker(settings)
    container = build(settings, with_detector=True)
    runtime = WorkerRuntime(container, burst=burst)
    runtime.install_signal_handlers()
    metrics = _metrics_server(settings, container)
    try:
        runtime.start()
        runtime.wait()
    finally:
        runtime.stop()
        if metrics is not None:
            metrics.stop()
        container.close()
    return 1 if runtime.failed else 0


def _metrics_server(settings: Settings, container: Container) -> MetricsServer | None:
    """The worker's own metrics port (IMAGEBLUR_METRICS_PORT), if one is set."""
    from imageblur.entrypoints.metrics_server import MetricsServer

    if settings.metrics_port is None:
        return None
    token = settings.metrics_token
    server = MetricsServer(
        container.metrics.registry,
        host=settings.host,
        port=settings.metrics_port,
        token=token.get_secret_value() if token is not None else None,
        readiness=lambda: {"originals_key": container.key_problem()},
    )
    try:
        port = server.start()
    except BaseException:
        container.close()
        raise
    log.info("metrics.listening", host=settings.host, port=port, path="/metrics")
    return server


def _migrate(settings: Settings) -> int:
    from imageblur.bootstrap import build_repository

    repository = build_repository(settings)
    try:
        repository.migrate()
    finally:
        repository.close()
    log.info("schema.migrated", repository=settings.repository)
    return 0


def _reseal(settings: Settings, *, dry_run: bool) -> int:
    """Bring every original under the current key; safe beside running processes (an
    original deleted meanwhile is not written back) and to run again."""
    from imageblur.adapters.encrypted_store import Resealed
    from imageblur.bootstrap import build_originals
    from imageblur.domain import BackendUnavailable, ObjectMissing, OriginalUnreadable

    if settings.originals_key is None:
        print(
            "imageblur: reseal needs IMAGEBLUR_ORIGINALS_KEY, the key to seal with", file=sys.stderr
        )
        return 2
    store = build_originals(settings)
    counts = dict.fromkeys([*Resealed, "unreadable"], 0)
    try:
        for obj in store.list():
            try:
                counts[store.reseal(obj.key, dry_run=dry_run)] += 1
            except ObjectMissing:
                continue  # its picture finished meanwhile
            except OriginalUnreadable as exc:
                counts["unreadable"] += 1
                log.warning("reseal.unreadable", key=obj.key, reason=str(exc))
    except BackendUnavailable as exc:
        print(f"imageblur: the originals' store is unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(_reseal_summary(counts, store.keyring.current_id, dry_run=dry_run))
    return 1 if counts["unreadable"] else 0


def _reseal_summary(counts: dict[str, int], key_id: str | None, *, dry_run: bool) -> str:
    would = "would be " if dry_run else ""
    return (
        f"{'dry run: ' if dry_run else ''}originals under key id {key_id}: "
        f"{counts['sealed']} plaintext {would}sealed, "
        f"{counts['resealed']} under old keys {would}re-sealed, "
        f"{counts['current']} already current, {counts['unreadable']} unreadable"
    )


def _alive(settings: Settings) -> int:
    import time

    path = settings.heartbeat_file
    if path is None:
        print("imageblur: IMAGEBLUR_HEARTBEAT_FILE is not set", file=sys.stderr)
        return 2
    try:
        age_s = time.time() - path.stat().st_mtime
    except OSError:
        print(f"imageblur: no heartbeat at {path}", file=sys.stderr)
        return 1
    if age_s > settings.heartbeat_max_age_s:
        print(f"imageblur: heartbeat is {age_s:.0f} s old", file=sys.stderr)
        return 1
    return 0


def _print_config(settings: Settings, *, as_json: bool) -> int:
    values = settings.masked()
    if as_json:
        print(json.dumps(values, indent=2, default=str))
    else:
        for name, value in values.items():
            print(f"IMAGEBLUR_{name.upper()}={'' if value is None else value}")
    return 0


def _collect(paths: Sequence[Path]) -> Iterator[tuple[Path, Path]]:
    """(file, its path relative to the output folder) for every image and video under
    `paths`."""
    from imageblur.entrypoints.blur_videos import VIDEO_SUFFIXES

    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in suffixes:
                    yield file, file.relative_to(path.parent)
        else:
            yield path, Path(path.name)


def _add_choices(p: argparse.ArgumentParser) -> None:
    """`imageblur blur`'s choices, those an upload's options make on the API."""
    p.add_argument("--mode", dest="blur_mode", choices=["blur", "pixelate", "solid"])
    p.add_argument(
        "--keep-metadata",
        dest="keep_metadata",
        metavar="GROUPS",
        help="metadata groups kept, comma-separated (IMAGEBLUR_KEEP_METADATA): gps, datetime, "
        "camera_settings, copyright",
    )
    p.add_argument(
        "--preset",
        dest="detection_preset",
        choices=["privacy", "tidy", "thorough"],
        help="detection preset (IMAGEBLUR_DETECTION_PRESET)",
    )
    p.add_argument(
        "--hide",
        action="append",
        type=_rectangle,
        metavar="X,Y,W,H",
        help="a rectangle always hidden, in pixels of the upright picture or frame (again "
        "for more)",
    )
    p.add_argument(
        "--ignore",
        action="append",
        type=_rectangle,
        metavar="X,Y,W,H",
        help="a rectangle where detections are not hidden (a face at least half inside it "
        "is left as it is, unless a --hide rectangle touches it; again for more)",
    )


def _rectangle(text: str) -> Rect:
    """`X,Y,W,H` as `--hide` takes it."""
    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: X,Y,W,H in whole pixels")
    x, y, width, height = (int(p) for p in parts)
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height at least 1")
    return Rect(x, y, width, height)


def _blur(
    settings: Settings, paths: Sequence[Path], output: Path, *, areas: UploadOptions | None = None
) -> int:
    """Pictures first, several in flight; then videos, one at a time. `areas`: the
    `hide` and `ignore` rectangles of every picture and video, as an upload's options
    (the other choices are settings: `--mode`, `--preset`, `--keep-metadata`)."""
    from imageblur.bootstrap import build_detector, worker_anonymizer
    from imageblur.entrypoints.blur_videos import blur_videos, is_video

    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"imageblur: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    collected = list(_collect(paths))
    videos = [item for item in collected if is_video(item[0])]  # by their bytes
    files = [item for item in collected if item not in videos]
    detector = build_detector(settings)
    out_root = output.resolve()
    failures = 0
    if files or not videos:
        # The worker's anonymizer, with its pixel budget: see `_blur_pictures`.
        anonymize = worker_anonymizer(settings, detector)
        if areas is not None and (areas.hide or areas.ignore):
            anonymize = anonymize.choosing(areas)
        failures += _blur_pictures(anonymize, files, out_root, threads=settings.worker_threads)
    if videos:
        failures += blur_videos(settings, detector, videos, out_root, areas=areas)
    return 1 if failures else 0


def _blur_pictures(
    anonymize: Callable[[bytes], AnonymizedImage],
    files: Sequence[tuple[Path, Path]],
    out_root: Path,
    *,
    threads: int,
) -> int:
    """Anonymize the pictures; the number that failed.

    With the worker's anonymizer, its pixel budget, and as many images in flight as it
    has jobs (IMAGEBLUR_WORKER_THREADS): one image decodes, blurs or encodes while
    another's detection runs, and two large photos never hold their pixels at once."""
    from tqdm import tqdm

    work = functools.partial(_anonymize_file, anonymize, out_root)
    failures = 0
    with contextlib.closing(_in_flight(files, work, threads=threads)) as done:
        for outcome in tqdm(done, total=len(files), unit="image", disable=None):
            failures += _report(outcome)
    print(f"{len(files) - failures} of {len(files)} images anonymized into {out_root}")
    return failures


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One file's anonymization, done in a pool thread, reported in the main thread."""

    source: Path
    target: Path  # before the result's extension
    result: AnonymizedImage | None = None
    skipped: str | None = None  # why it could not be read or decoded
    refused: bool = False  # its output would overwrite it


def _anonymize_file(
    anonymize: Callable[[bytes], AnonymizedImage], out_root: Path, file: tuple[Path, Path]
) -> _Outcome:
    from imageblur.domain import InvalidImage

    source, relative = file
    target = out_root / relative
    if target.resolve() == source.resolve():
        return _Outcome(source, target, refused=True)
    try:
        return _Outcome(source, target, result=anonymize(source.read_bytes()))
    except (InvalidImage, OSError) as exc:
        return _Outcome(source, target, skipped=str(exc))


def _write_whole(target: Path, data: bytes) -> None:
    """Write beside the target and rename: a Ctrl-C in the middle of the write leaves
    no half-written result under the target's name, only nothing."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_bytes(data)
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _report(outcome: _Outcome) -> int:
    """Write the result, or say why there is none (1: a failure). In the main thread and
    in the files' order, so that the output, the messages and the log read as when the
    images were done one at a time, and of two inputs with the same output name (a.heic
    and a.jpg) the later one's result is kept as it always was."""
    from tqdm import tqdm

    source, result = outcome.source, outcome.result
    if outcome.refused:
        print(f"imageblur: refusing to overwrite the input {source}", file=sys.stderr)
        return 1
    if result is None:
        tqdm.write(f"{source}: skipped: {outcome.skipped}", file=sys.stderr)
        return 1
    target = outcome.target.with_suffix(result.extension)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_whole(target, result.data)
    log.info(
        "file.blurred",
        source=str(source),
        target=str(target),
        faces=result.faces,
        plates=result.plates,
        jpeg_full_reencode=result.jpeg_fallback,
    )
    return 0


def _in_flight(
    items: Sequence[_T], work: Callable[[_T], _R], *, threads: int
) -> Generator[_R, None, None]:
    """`work` of each item on `threads` threads, yielded in the items' order.

    A few more items than threads are started, so that a thread that finished a small
    image takes the next one while a large one is still being worked on (the pixel budget
    decides whether it may start decoding). Closing the generator early (Ctrl-C, an error
    while writing) stops the rest: items not started are dropped, and the detections in
    hand stop at their next pass (the worker's cancellation, `imageblur.cancel`), so
    that the process ends promptly. Only the caller writes files: a result is whole or
    absent.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from imageblur.cancel import Cancelled, cancellable

    stop = threading.Event()

    def run(item: _T) -> _R:
        if stop.is_set():
            raise Cancelled("stopped")
        with cancellable(stop):
            return work(item)

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="imageblur-blur")
    queued = iter(items)
    ahead: deque[Future[_R]] = deque()
    try:
        for item in itertools.islice(queued, AHEAD_PER_THREAD * threads):
            ahead.append(pool.submit(run, item))
        while ahead:
            result = ahead.popleft().result()
            for item in itertools.islice(queued, 1):
                ahead.append(pool.submit(run, item))
            yield result
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


if __name__ == "__main__":
    raise SystemExit(main())
