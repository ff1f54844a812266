"""The image record, its status, the job message, the key scheme and the domain errors.

Nothing here does I/O; adapters and services share these types.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- the key scheme ---------------------------------------------------------------

_ID = re.compile(r"^[0-9a-f]{32}$")
# What a client may send as X-Request-ID: short, and safe in logs and headers.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# An original or a result: `<id>.<ext>`, a detection's `<id>-a<attempt>.<ext>`, a
# re-render's `<id>-r<revision>.<ext>`, a video job's tracks `<id>-a<attempt>.tracks.json`;
# an extension may hold a digit (a video's `.mp4`).
_KEY = re.compile(r"^([0-9a-f]{32})(?:-[ar][0-9]{1,9})?(?:\.tracks)?\.[a-z][a-z0-9]{2,3}$")


def new_image_id() -> str:
    return uuid.uuid4().hex


def is_image_id(text: str) -> bool:
    return bool(_ID.fullmatch(text))


def is_request_id(text: str) -> bool:
    return bool(_REQUEST_ID.fullmatch(text))


def new_request_id() -> str:
    return uuid.uuid4().hex


def object_key(image_id: str, extension: str) -> str:
    """Storage keys come from the server-made id only, never from the client's name."""
    return f"{image_id}{extension}"


def render_key(image_id: str, revision: int, extension: str) -> str:
    """The result of a re-render has a key of its own revision: a render superseded by a
    newer correction, finishing late, can then never overwrite the newer result."""
    return f"{image_id}-r{revision}{extension}"


TRACKS_TYPE = "application/json"  # a video's tracks object (`video.track_plan`)


def tracks_key(image_id: str, attempt: int) -> str:
    """A video job's tracks, beside its result (`attempt_key`): of the attempt's own. Not
    `<id>-a<n>.json`: the previous release's garbage collection would take that for a
    result no record names and delete it; it ignores keys of this shape."""
    return attempt_key(image_id, attempt, ".tracks.json")


def attempt_key(image_id: str, attempt: int, extension: str) -> str:
    """The result of a detection has a key of its own attempt: a worker whose lease
    lapsed, finishing late, then never overwrites nor deletes the result of the worker
    that took the job over."""
    return f"{image_id}-a{attempt}{extension}"


def body_digest(data: bytes, name: str | None) -> str:
    """What an `Idempotency-Key` is bound to: the SHA-256 of the uploaded bytes and the
    client's file name (length-prefixed, so no two pairs share a digest)."""
    hasher = body_hasher(name)
    hasher.update(data)
    return hasher.hexdigest()


def body_hasher(name: str | None) -> hashlib._Hash:
    """`body_digest` for bytes that come in pieces: `update` it with each."""
    label = (name or "").encode("utf-8", "surrogatepass")
    return hashlib.sha256(b"%d:" % len(label) + label)


def image_id_of_key(key: str) -> str | None:
    """The image id of a key made by `object_key`; None for anything else."""
    match = _KEY.fullmatch(key)
    return match.group(1) if match else None


class Status(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    # Processed, held for a person to review (IMAGEBLUR_REVIEW=required); the original
    # is kept, encrypted, for corrections.
    REVIEW = "review"
    # A correction waits for (or is in) its re-render. Its own status, not `pending`:
    # a worker or reconciler of an older release claims only `pending` and `processing`
    # rows, so it can never run detection over a re-render and drop the manual regions.
    # The API shows it as `pending`.
    RENDERING = "rendering"
    # A video's job, queued and running: statuses of their own (the job kinds rule,
    # `JOB_KINDS`), so that a pod of an older release never claims nor re-publishes it.
    # The API shows them as `pending` and `processing`.
    VIDEO_PENDING = "video_pending"
    VIDEO_PROCESSING = "video_processing"
    # A picture uploaded with options (`UploadOptions`), queued, running, and a
    # correction's re-render of one: statuses of their own (the job kinds rule), so that
    # a worker of an older release, which would ignore the options (a `hide` rectangle,
    # the mode, the metadata kept), never claims nor re-publishes it. Shown as `pending`,
    # `processing` and `pending`.
    OPTIONS_PENDING = "options_pending"
    OPTIONS_PROCESSING = "options_processing"
    OPTIONS_RENDERING = "options_rendering"
    # A video uploaded with options, queued and running (the job kind `video_options`):
    # a worker of an earlier release would run it as a plain video, hiding no `hide`
    # rectangle and keeping the server's metadata. Shown as `pending` and `processing`.
    VIDEO_OPTIONS_PENDING = "video_options_pending"
    VIDEO_OPTIONS_PROCESSING = "video_options_processing"

    @property
    def public(self) -> str:
        """The status the API shows."""
        return _PUBLIC_STATUS.get(self, self.value)


# The statuses only a video is in; a picture may be in any other.
VIDEO_STATUSES = frozenset(
    {
        Status.VIDEO_PENDING,
        Status.VIDEO_PROCESSING,
        Status.VIDEO_OPTIONS_PENDING,
        Status.VIDEO_OPTIONS_PROCESSING,
    }
)

_PUBLIC_STATUS = {
    Status.RENDERING: Status.PENDING.value,
    Status.VIDEO_PENDING: Status.PENDING.value,
    Status.VIDEO_PROCESSING: Status.PROCESSING.value,
    Status.OPTIONS_PENDING: Status.PENDING.value,
    Status.OPTIONS_PROCESSING: Status.PROCESSING.value,
    Status.OPTIONS_RENDERING: Status.PENDING.value,
    Status.VIDEO_OPTIONS_PENDING: Status.PENDING.value,
    Status.VIDEO_OPTIONS_PROCESSING: Status.PROCESSING.value,
}
# A correction's re-render waits for (or is in) its job: approval waits for it.
RENDERING_STATUSES = frozenset({Status.RENDERING, Status.OPTIONS_RENDERING})
# A first job (detection) waits for or is in its job: nothing to correct yet.
DETECTING_STATUSES = frozenset(
    {Status.PENDING, Status.PROCESSING, Status.OPTIONS_PENDING, Status.OPTIONS_PROCESSING}
)


class Review(StrEnum):
    """Where a picture's review hold stands (None on the record: never held)."""

    PENDING = "pending"
    APPROVED = "approved"
    EXPIRED = "expired"


class ErrorCode(StrEnum):
    """Why a picture failed, or why its job waits for a retry: the record's `error_code`,
    a closed set a client can act on. The record's `error` is a short public text; the
    details are in the worker's log lines, under the upload's request id."""

    INVALID_IMAGE = "invalid_image"  # the worker could not decode it
    INVALID_VIDEO = "invalid_video"  # corrupt or truncated, found while decoding
    AUDIO_FAILED = "audio_failed"  # a video's sound could not be written to its result
    ENCODE_FAILED = "encode_failed"  # a video's frames could not be encoded or written
    TOO_MANY_SCANS = "too_many_scans"  # a progressive JPEG past the scan limit
    ORIGINAL_MISSING = "original_missing"  # gone from the store
    ORIGINAL_UNREADABLE = "original_unreadable"  # no configured key opens it
    BACKEND_UNAVAILABLE = "backend_unavailable"  # the store, database or queue was down
    WORKER_STOPPED = "worker_stopped"  # the worker died during every attempt
    INTERNAL_ERROR = "internal_error"  # a bug; also every error of an older release

    @property
    def message(self) -> str:
        """The short public text that goes with the code."""
        return _ERROR_MESSAGES[self]

    @classmethod
    def read(cls, stored: str | None, *, error: str | None) -> ErrorCode | None:
        """The code of a stored record: a record of an older release has an error and
        no code, one of a newer release may have a code this one does not know; both
        read as `internal_error`."""
        if stored is None:
            return None if error is None else cls.INTERNAL_ERROR
        try:
            return cls(stored)
        except ValueError:
            return cls.INTERNAL_ERROR


_ERROR_MESSAGES = {
    ErrorCode.INVALID_IMAGE: "the image could not be decoded",
    ErrorCode.INVALID_VIDEO: "the video could not be decoded to its end",
    ErrorCode.AUDIO_FAILED: "the video's sound could not be written to the result",
    ErrorCode.ENCODE_FAILED: "the anonymized video could not be encoded or written",
    ErrorCode.TOO_MANY_SCANS: "the JPEG has more progressive scans than allowed",
    ErrorCode.ORIGINAL_MISSING: "the original is missing from the store",
    ErrorCode.ORIGINAL_UNREADABLE: "the original could not be opened with the configured keys",
    ErrorCode.BACKEND_UNAVAILABLE: "a back end (store, database or queue) was unavailable",
    ErrorCode.WORKER_STOPPED: "the worker stopped while processing it, every attempt",
    ErrorCode.INTERNAL_ERROR: "internal error; it has been logged",
}
MAX_ERROR_CHARS = 200  # of the public `error` text


# What a record holds: a picture, or a video (its own routes, `/video/...`).
MediaKind = Literal["picture", "video"]
# What became of a video's sound: copied as it was, re-encoded for the output
# container, or there was none.
AudioOutcome = Literal["kept", "reencoded", "none"]

# Region sources and kinds as the API spells them.
# `request`: a `hide` rectangle of the upload's options (never un-hidden by a reviewer).
RegionSource = Literal["detector", "manual", "request"]
MAX_REGIONS = 5_000  # kept per picture, highest scores first


BlurMode = Literal["blur", "pixelate", "solid"]


@dataclass(frozen=True, slots=True)
class Rect:
    """A rectangle in pixels of the upright image (a `hide` or `ignore` option, a
    reviewer's manual box)."""

    x: int
    y: int
    width: int
    height: int

    def to_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


@dataclass(frozen=True, slots=True)
class DetectionThresholds:
    """A detector's scores needed for one call: `threshold`, and those of small and large
    boxes (None: the threshold); the pyramid's `SizeThresholds` applies them."""

    threshold: float
    small: float | None = None
    large: float | None = None


@dataclass(frozen=True, slots=True)
class PresetChoice:
    """What an upload's `preset` changes in its job (`Settings.preset_choice`): the main
    detector's size thresholds and the mask's growth."""

    thresholds: DetectionThresholds
    mask_scale: float
    mask_margin_px: float


@dataclass(frozen=True, slots=True)
class UploadOptions:
    """What a client chose for one upload (`upload_options.parse` checks it); None or
    empty: the server's setting. Stored with the record, as canonical JSON."""

    mode: BlurMode | None = None
    preset: str | None = None
    keep_metadata: frozenset[str] | None = None
    hide: tuple[Rect, ...] = ()
    ignore: tuple[Rect, ...] = ()
    review: bool = False  # `review=required`: held for review whatever the server's setting
    # Who asked for `ignore` (a token's fingerprint, or "anonymous"): the audit trail's.
    asked_by: str | None = None
    # Where this upload's webhook events go instead of IMAGEBLUR_WEBHOOK_URL.
    callback_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The options set, as `GET /picture/{id}` shows them and the row stores them."""
        data: dict[str, Any] = {}
        if self.mode is not None:
            data["mode"] = self.mode
        if self.preset is not None:
            data["preset"] = self.preset
        if self.keep_metadata is not None:
            data["keep_metadata"] = sorted(self.keep_metadata)
        if self.hide:
            data["hide"] = [r.to_dict() for r in self.hide]
        if self.ignore:
            data["ignore"] = [r.to_dict() for r in self.ignore]
        if self.review:
            data["review"] = "required"
        if self.callback_url is not None:
            data["callback_url"] = self.callback_url
        return data

    def to_json(self) -> str:
        stored = self.to_dict()
        if self.asked_by is not None:
            stored["asked_by"] = self.asked_by
        return json.dumps(stored, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> UploadOptions:
        data = json.loads(text)
        keep = data.get("keep_metadata")
        return cls(
            mode=data.get("mode"),
            preset=data.get("preset"),
            keep_metadata=None if keep is None else frozenset(keep),
            hide=tuple(Rect(**r) for r in data.get("hide", ())),
            ignore=tuple(Rect(**r) for r in data.get("ignore", ())),
            review=data.get("review") == "required",
            asked_by=data.get("asked_by"),
            callback_url=data.get("callback_url"),
        )

    def digest(self) -> str:
        """What an `Idempotency-Key` is bound to beside the body: the options chosen
        (who asked is not a choice)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def bound_digest(body_sha256: str, options: UploadOptions | None) -> str:
    """The body's digest, bound to the options too when there are any (an upload with no
    options keeps the digest an older release stored)."""
    if options is None:
        return body_sha256
    return hashlib.sha256(f"{body_sha256}:{options.digest()}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One uploaded image. The repository row is the source of truth for its state."""

    id: str
    name: str
    status: Status
    content_type: str
    bytes: int
    width: int
    height: int
    input_key: str
    created_at: datetime
    updated_at: datetime
    output_key: str | None = None
    url: str | None = None
    faces: int | None = None
    plates: int | None = None  # licence plates hidden (plate detectors only)
    error: str | None = None  # a short public text; None when there is no error
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    idempotency_key: str | None = None
    request_id: str | None = None  # of the upload, to follow the picture through the logs
    review: Review | None = None  # None: never held for review
    revision: int = 0  # of the regions; every accepted correction adds one
    held_until: datetime | None = None  # an unreviewed hold ends (expires) then
    error_code: ErrorCode | None = None  # beside `error`, always both or neither
    body_sha256: str | None = None  # `body_digest` of the upload (idempotency key reuse)
    kind: MediaKind = "picture"
    # A video's facts, from its header at upload (`frames` counted again while decoding);
    # None for a picture. `width` and `height` above are its frames'.
    duration_s: float | None = None
    fps: float | None = None
    frames: int | None = None
    video_codec: str | None = None
    audio: AudioOutcome | None = None  # once done
    # A running video job's progress, written by its lease keeper about once a second
    # (`JobLeases.note_progress`), never per frame; cleared when the job ends.
    frames_done: int | None = None
    frames_total: int | None = None
    eta_s: float | None = None
    # A done video's face tracks (key boxes per track and the interpolation rule), one
    # compact JSON object in the results store (`tracks_key`); None: none kept.
    tracks_key: str | None = None
    # The client's choices for this upload; None: none (the server's settings). A record
    # with options runs as the job kinds `options` and `options_render`.
    options: UploadOptions | None = None

    def with_changes(self, **changes: Any) -> ImageRecord:
        return replace(self, **changes)


# A job message is about a hundred bytes; anything far larger is not one of ours.
MAX_JOB_BYTES = 4096
MAX_JOB_ATTEMPT = 10**9


class JobKind(StrEnum):
    DETECT = "detect"  # the first job: find the regions, hide them
    RENDER = "render"  # after a correction: hide exactly the recorded regions, no detection
    VIDEO = "video"  # a video: detect and track, hide every face in every frame
    # DETECT and RENDER of a picture uploaded with options: kinds of their own, which a
    # worker of an older release never receives nor claims (it would ignore the options).
    OPTIONS = "options"
    OPTIONS_RENDER = "options_render"
    # VIDEO of a video uploaded with options, likewise.
    VIDEO_OPTIONS = "video_options"
    # One source object of a bucket batch (issue 27): its message carries the item's id.
    BATCH = "batch"

    @property
    def detects(self) -> bool:
        """A picture's first job: find the regions, hide them."""
        return self in (JobKind.DETECT, JobKind.OPTIONS)

    @property
    def renders(self) -> bool:
        """A correction's job: hide exactly the recorded regions."""
        return self in (JobKind.RENDER, JobKind.OPTIONS_RENDER)

    @property
    def video(self) -> bool:
        """A video's job: detect and track, hide every face in every frame."""
        return self in (JobKind.VIDEO, JobKind.VIDEO_OPTIONS)


@dataclass(frozen=True, slots=True)
class KindRoute:
    """Where a job kind's work waits and runs, so that a pod of an older release, which
    does not know the kind, never takes it: the statuses of its record while queued and
    while leased (an older release claims only `pending`, `processing` and `rendering`
    rows) and whether its messages go to a queue of their own, `<queue>.<kind>` (an
    older release consumes only `<queue>`, so it never parses, and so never
    dead-letters, a message of a kind it does not know). docs/operations.md, "Job kinds
    and rolling upgrades", states the rule; tests/contract/test_job_kinds.py checks it
    against the previous release's claim conditions and message parser."""

    queued: str  # a `Status` value
    leased: str
    own_queue: bool = True
    # None: a picture's job (seconds). Else a long kind (video, ...): its jobs may run
    # this long, so it waits on a queue of its own that workers scaled apart take
    # (`IMAGEBLUR_WORKER_KINDS=long`), whose shutdown grace should cover it, and a
    # worker that takes it and pictures keeps a thread for pictures.
    longest_s: float | None = None

    @property
    def long(self) -> bool:
        return self.longest_s is not None


# The batch kind's item states, as its route names them (not `Status` values: a batch
# item is no image record).
BATCH_QUEUED = "batch_queued"
BATCH_PROCESSING = "batch_processing"

# Statuses a release before the kinds rule claims or re-publishes: a new kind never
# uses one of them, nor the main queue those releases consume.
LEGACY_STATUSES = frozenset({Status.PENDING.value, Status.PROCESSING.value, Status.RENDERING.value})
LEGACY_KINDS = frozenset({"detect", "render"})

# Every job kind, one row each. Detect and render predate the rule: they keep their
# statuses and the main queue, which every release consumes. A new kind (video, a
# bucket batch) adds a row with statuses of its own and `own_queue=True`.
JOB_KINDS: Mapping[str, KindRoute] = {
    "detect": KindRoute(Status.PENDING.value, Status.PROCESSING.value, own_queue=False),
    "render": KindRoute(Status.RENDERING.value, Status.RENDERING.value, own_queue=False),
    # Twice a 30-minute video (IMAGEBLUR_MAX_VIDEO_SECONDS' default), until the video
    # pipeline's speed is measured: the long workers' shutdown grace covers it.
    "video": KindRoute(Status.VIDEO_PENDING.value, Status.VIDEO_PROCESSING.value, longest_s=3600.0),
    # A picture uploaded with options, and its re-renders (`UploadOptions`).
    "options": KindRoute(Status.OPTIONS_PENDING.value, Status.OPTIONS_PROCESSING.value),
    "options_render": KindRoute(Status.OPTIONS_RENDERING.value, Status.OPTIONS_RENDERING.value),
    # A video uploaded with options: a long kind, as `video`.
    "video_options": KindRoute(
        Status.VIDEO_OPTIONS_PENDING.value,
        Status.VIDEO_OPTIONS_PROCESSING.value,
        longest_s=3600.0,
    ),
    # A bucket batch's item. Its records are rows of `batch_items` (states `queued` and
    # `processing`), a table no earlier release reads; these names stand for them. In
    # the long pool, not for one job's length but for their number: a batch may hold
    # every thread of a worker but the one kept for pictures, and the long workers
    # scale apart on its queue. Its longest job is a large picture's.
    "batch": KindRoute(BATCH_QUEUED, BATCH_PROCESSING, longest_s=300.0),
}


def kind_queue(base: str, kind: str, kinds: Mapping[str, KindRoute] = JOB_KINDS) -> str:
    """The queue a message of `kind` is published to and consumed from."""
    return f"{base}.{kind}" if kinds[kind].own_queue else base


# Words of IMAGEBLUR_WORKER_KINDS beside the kinds' own names: every picture kind, every
# long kind, as the registry holds them (a release that brings a long kind needs no
# change of a worker's setting).
KIND_POOLS = ("pictures", "long")


def select_kinds(text: str, kinds: Mapping[str, KindRoute] = JOB_KINDS) -> frozenset[str]:
    """The kinds a worker takes, from a comma-separated list of kind names and pools
    (`pictures`, `long`); empty: every kind. `ValueError` for a name this release does
    not know, or a selection that splits a queue (detect and render share `<queue>`: a
    worker taking one of them would receive the other's messages)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        return frozenset(kinds)
    chosen: set[str] = set()
    for name in names:
        if name in KIND_POOLS:
            chosen |= {k for k, r in kinds.items() if r.long == (name == "long")}
        elif name in kinds:
            chosen.add(name)
        else:
            known = ", ".join([*kinds, *KIND_POOLS])
            raise ValueError(f"unknown job kind {name!r}: one of {known}")
    for kind in sorted(chosen):
        mates = {k for k in kinds if kind_queue("q", k, kinds) == kind_queue("q", kind, kinds)}
        if not mates <= chosen:
            together = ", ".join(sorted(mates))
            raise ValueError(f"{together} share one queue: select them together")
    return frozenset(chosen)


def kind_of_status(status: str, kinds: Mapping[str, KindRoute] = JOB_KINDS) -> str | None:
    """The kind whose job a record in `status` waits for or runs (None: no job)."""
    return next((k for k, r in kinds.items() if status in (r.queued, r.leased)), None)


@dataclass(frozen=True, slots=True)
class Job:
    """The queue message: ids only, never image bytes or secrets."""

    image_id: str
    attempt: int = 0
    request_id: str | None = None  # the upload's, carried into the worker's logs
    kind: JobKind = JobKind.DETECT

    def to_json(self) -> bytes:
        data: dict[str, Any] = {
            "image_id": self.image_id,
            "attempt": self.attempt,
            "kind": self.kind.value,
        }
        if self.request_id is not None:
            data["request_id"] = self.request_id
        return json.dumps(data).encode()

    def next_attempt(self) -> Job:
        """The same job, to be tried again (a retry message)."""
        return replace(self, attempt=self.attempt + 1)

    @classmethod
    def from_json(cls, raw: bytes) -> Job:
        """The job in a queue message; `InvalidJob` (with the reason) for anything else,
        whatever the bytes: a message no worker can run must be parked, never raise
        out of the queue adapter into a worker's thread."""
        if len(raw) > MAX_JOB_BYTES:
            raise InvalidJob(f"malformed job message: {len(raw)} bytes, at most {MAX_JOB_BYTES}")
        try:
            data = json.loads(raw)
        # RecursionError: deep nesting ("[[[..."); ValueError also covers bytes that are
        # not UTF-8 and integers of more digits than Python converts.
        except (ValueError, TypeError, RecursionError) as exc:
            reason = f"{type(exc).__name__}: {exc}"[:200]
            raise InvalidJob(f"malformed job message: {reason}") from exc
        if not isinstance(data, dict):
            raise InvalidJob("malformed job message: not a JSON object")
        image_id = data.get("image_id")
        if not isinstance(image_id, str) or not is_image_id(image_id):
            raise InvalidJob("malformed job message: image_id is not an image id")
        attempt = data.get("attempt", 0)
        # bool is an int in Python; 1e999 parses as a float (inf).
        if type(attempt) is not int or not 0 <= attempt <= MAX_JOB_ATTEMPT:
            raise InvalidJob(
                f"malformed job message: attempt is not an integer 0..{MAX_JOB_ATTEMPT}"
            )
        kind = data.get("kind", JobKind.DETECT.value)
        # A message of a kind this release does not know is never run as another
        # (a newer release's): it is dead-lettered, and the record's own status
        # keeps the picture for a worker that knows it.
        if not isinstance(kind, str) or kind not in {k.value for k in JobKind}:
            raise InvalidJob("malformed job message: unknown kind")
        request_id = data.get("request_id")
        if request_id is not None and (
            not isinstance(request_id, str) or not is_request_id(request_id)
        ):
            raise InvalidJob("malformed job message: request_id is not a request id")
        return cls(image_id=image_id, attempt=attempt, request_id=request_id, kind=JobKind(kind))


@dataclass(frozen=True, slots=True)
class Delivery:
    """A job as handed out by a queue; `tag` is the adapter's own handle for ack/retry."""

    job: Job
    tag: Any = field(compare=False)
    redelivered: bool = False


RegionKind = Literal["face", "plate"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A parked job as read back from a queue's dead letters (for operators and tests):
    the job, or None if its message could not be parsed, the raw body, and why."""

    job: Job | None
    body: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Face:
    """A detected region to hide (a face, or a licence plate: `kind`), in pixel
    coordinates of the upright image. Both are hidden alike, strength by size."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    kind: RegionKind = "face"

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


MaskShape = Literal["ellipse", "box"]


@dataclass(frozen=True, slots=True)
class CloserLook:
    """How a detector looks again at one region (`ports.LooksCloser`): the region with
    `margin` box sizes of context on each side, scaled so the box is `face_px` tall
    (the scale kept within `min_scale` and `max_scale`), one pass of the network; a
    candidate counts when its IoU with the region is at least `iou`. The defaults: a
    128 px square, the smallest the OpenVINO runtime compiles (its shapes go in steps of
    128 px), with the most context the box leaves room for (bench/second_look.py: 40 px
    with a margin of 1 confirmed fewer true faint faces; docs/video.md)."""

    face_px: float = 48.0
    margin: float = 0.75
    min_scale: float = 0.5
    max_scale: float = 4.0
    iou: float = 0.3

    def __post_init__(self) -> None:
        if self.face_px < 8 or self.margin < 0 or not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"not a usable closer look: {self}")

    @property
    def side_px(self) -> int:
        """The side of the square the network sees (a multiple of 32, as the
        networks' inputs are)."""
        return -(-math.ceil(self.face_px * (1 + 2 * self.margin)) // 32) * 32


@dataclass(frozen=True, slots=True)
class MaskGeometry:
    """How a detector region was masked when it was found: its box grown `scale` times
    about its centre plus `margin_px` on each side, the inscribed ellipse or the whole
    box (a plate is always the box). Stored with the region, so that a re-render hides
    what the first render hid whatever the mask settings are by then."""

    scale: float
    margin_px: float
    shape: MaskShape

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "margin_px": self.margin_px, "shape": self.shape}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaskGeometry:
        shape = data.get("shape")
        return cls(
            scale=float(data["scale"]),
            margin_px=float(data["margin_px"]),
            # Fail closed on anything unknown: the box hides all the ellipse hides.
            shape="ellipse" if shape == "ellipse" else "box",
        )


@dataclass(frozen=True, slots=True)
class Region:
    """One region of a picture's record, as the API lists it: a box in pixels of the
    upright image. `uncertain`: a candidate scored below the detection threshold (above
    the floor), listed for a reviewer, whatever its `hidden` state. `score` is None for
    a manual region."""

    id: str
    x: int
    y: int
    width: int
    height: int
    score: float | None
    source: RegionSource
    kind: RegionKind
    uncertain: bool
    hidden: bool
    # A detector region's mask as first drawn; None for a manual region, and for one
    # stored by an older release (masked with the current settings).
    mask: MaskGeometry | None = None
    # A detection the upload's `ignore` option left unhidden (a reviewer may hide it).
    ignored: bool = False

    def to_dict(self) -> dict[str, Any]:
        mask: dict[str, Any] = {} if self.mask is None else {"mask": self.mask.to_dict()}
        mask |= {"ignored": True} if self.ignored else {}
        return {
            "id": self.id,
            "x": self.x,
            "y": self.y,
            "width": self.width,
            "height": self.height,
            "score": self.score,
            "source": self.source,
            "kind": self.kind,
            "uncertain": self.uncertain,
            "hidden": self.hidden,
            **mask,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Region:
        score = data.get("score")
        return cls(
            id=str(data["id"]),
            x=int(data["x"]),
            y=int(data["y"]),
            width=int(data["width"]),
            height=int(data["height"]),
            score=None if score is None else float(score),
            source=data["source"],
            kind=data.get("kind", "face"),
            uncertain=bool(data.get("uncertain", False)),
            hidden=bool(data["hidden"]),
            mask=MaskGeometry.from_dict(data["mask"]) if data.get("mask") else None,
            ignored=bool(data.get("ignored", False)),
        )


def drawn_region(
    region_id: str,
    rect: Rect,
    *,
    source: Literal["manual", "request"],
    hidden: bool,
    image_width: int,
    image_height: int,
) -> Region | None:
    """A box a person drew (an upload's `hide` rectangle, a reviewer's manual box) as
    the record lists it: clipped to the image, a face with no score; None when it lies
    wholly outside."""
    x0, y0 = max(rect.x, 0), max(rect.y, 0)
    x1, y1 = min(rect.x + rect.width, image_width), min(rect.y + rect.height, image_height)
    if x1 <= x0 or y1 <= y0:
        return None
    return Region(
        id=region_id,
        x=x0,
        y=y0,
        width=x1 - x0,
        height=y1 - y0,
        score=None,
        source=source,
        kind="face",
        uncertain=False,
        hidden=hidden,
    )


def regions_to_json(regions: Sequence[Region]) -> str:
    return json.dumps([r.to_dict() for r in regions], separators=(",", ":"))


def regions_from_json(text: str | None) -> list[Region]:
    return [Region.from_dict(item) for item in json.loads(text)] if text else []


EventRole = Literal["api", "reviewer", "worker", "system"]


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a picture's audit trail (GET /picture/{id}/history)."""

    at: datetime
    role: EventRole
    action: str  # uploaded, processed, failed, corrected, rendered, approved, expired, ...
    status: str  # the record's status after it, as the API shows it
    revision: int
    detail: str | None = None
    reviewer: str | None = None  # who corrected or approved (IMAGEBLUR_REVIEWER_TOKENS)
    reasons: Mapping[str, str] | None = None  # {region id: why a reviewer un-hid it}


WebhookOutcome = Literal["delivered", "given_up"]


@dataclass(frozen=True, slots=True)
class WebhookMessage:
    """A row of the webhook outbox: one event of one record, to one URL, sent until
    delivered or given up. `id` is the `webhook-id` header, the same on every retry."""

    id: str
    image_id: str
    event: str  # picture.done, picture.failed, picture.review, video.done, ...
    url: str
    created_at: datetime  # the transition's time: the event's
    attempts: int = 0  # claims so far (one per attempt, finished or not)
    next_attempt_at: datetime | None = None
    outcome: WebhookOutcome | None = None  # None: still to be delivered
    last_error: str | None = None
    # The operator's event (IMAGEBLUR_WEBHOOK_URL, not an upload's `callback_url`): sent
    # to the sender's current operator URL, whatever `url` was when it was written, and
    # exempt from the allowed hosts.
    to_operator: bool = False
    finished_at: datetime | None = None  # delivered or given up then


@dataclass(frozen=True, slots=True)
class PictureStats:
    """Pictures per status, and when the oldest pending one was uploaded (the gauges)."""

    counts: dict[str, int]
    oldest_pending_at: datetime | None


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    modified_at: datetime


@dataclass(frozen=True, slots=True)
class ObjectRange:
    """Bytes `[start, start + len(data))` of an object, and the whole object's size
    (what an HTTP `Content-Range` names, and what a reader needs to find the end)."""

    data: bytes
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class VideoFacts:
    """What a video's header says, once its probe accepted it: the container (`mp4`,
    `mov`, `webm`: from the bytes, never the name), the first video stream's codec, its
    frames' stored size, duration, frame rate and frame count (the header's, an
    estimate that decoding checks again), and its first audio stream's codec (None: no
    sound)."""

    container: str
    video_codec: str
    width: int
    height: int
    duration_s: float
    fps: float
    frames: int
    audio_codec: str | None = None

    @property
    def extension(self) -> str:
        """Of the original as stored (`<id>.mp4`)."""
        return f".{self.container}"


@dataclass(frozen=True, slots=True)
class AnonymizedVideo:
    """What a video job made: the frames decoded, the face tracks hidden (the record's
    `faces`), what became of the sound, and the result's extension and content type."""

    frames: int
    tracks: int
    audio: AudioOutcome
    extension: str
    content_type: str
    # The tracks as one compact JSON object (`video.track_plan`); None: none to keep
    # (tracking off: each frame hides its own detections).
    track_plan: bytes | None = None


# --- errors -----------------------------------------------------------------


class ImageblurError(Exception):
    """Base of every error the project raises on purpose."""


class InvalidImage(ImageblurError):  # noqa: N818 - a domain name, not a "...Error" suffix
    """The upload is not an image we accept. `http_status` says which 4xx fits."""

    def __init__(self, message: str, *, http_status: int = 400, code: str = "invalid_image"):
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code


class VideoRefused(ImageblurError):  # noqa: N818 - a domain name
    """The upload is not a video we accept (its probe says why): nothing is stored, and
    the API answers `http_status` with `code` (415 unsupported_media_type or
    unsupported_codec, 413 too_large, too_long or too_many_pixels, 400 invalid_video)."""

    def __init__(self, message: str, *, http_status: int = 400, code: str = "invalid_video"):
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code


class IdempotencyKeyReused(ImageblurError):  # noqa: N818
    """An `Idempotency-Key` sent again with another image or file name (409)."""


class Conflict(ImageblurError):  # noqa: N818
    """A record added with the id of one that exists: ids are random, so this is a bug
    (or a replayed insert), never a second picture under one id."""


class InvalidJob(ImageblurError):  # noqa: N818
    """A queue message we cannot parse; it is dead-lettered, never retried."""


class NotFound(ImageblurError):  # noqa: N818
    """No image with that id."""


class NotReady(ImageblurError):  # noqa: N818
    """The anonymized image is not available (yet, or any more)."""


class ObjectMissing(ImageblurError):  # noqa: N818
    """The object store has no object under that key."""


class BackendUnavailable(ImageblurError):  # noqa: N818
    """A back end (store, database, broker) cannot be reached; transient by assumption."""

    backend = "backend"


class StoreUnavailable(BackendUnavailable):
    backend = "object store"


class StoreRefused(StoreUnavailable):
    """The store is reachable but would not forget what we delete (a bucket with object
    lock, or versioned without `IMAGEBLUR_S3_DELETE_ALL_VERSIONS`): refused like a store
    that is down, so nothing is written to it, until it is fixed."""


class RepositoryUnavailable(BackendUnavailable):
    backend = "database"


class QueueUnavailable(BackendUnavailable):
    backend = "queue"


class Overloaded(ImageblurError):  # noqa: N818
    """This process has too much work in hand right now; retry shortly (503). Not a back
    end's outage: nothing is down, there is only more work than this process takes."""


class NotSupported(ImageblurError):  # noqa: N818
    """An action this kind of record does not have (yet): a video's correction (409)."""


class StaleRevision(ImageblurError):  # noqa: N818
    """A correction sent with an `If-Match` that is not the current revision (412)."""


class OriginalGone(ImageblurError):  # noqa: N818
    """A correction for a picture whose original is deleted: review off, approved or
    expired (409)."""


class NotInReview(ImageblurError):  # noqa: N818
    """Approval of a picture that is not held for review (409)."""


class Rendering(ImageblurError):  # noqa: N818
    """Approval (or a correction's preconditions) while a render is still running (409):
    approve what was seen, not what is still being drawn."""


class RenderFailed(ImageblurError):  # noqa: N818
    """Approval of a picture whose last correction could not be rendered (409): the
    result shown is older than its regions, so it may show what the reviewer hid."""


class ProcessingError(ImageblurError):
    """Processing failed for a reason that retrying will not fix (corrupt data, say)."""


class OriginalUnreadable(ProcessingError):  # noqa: N818 - a domain name
    """An original cannot be opened: it is sealed under a key this process does not hold
    (neither the current originals key nor an old one, or no key is set), it fails
    authentication (altered, or copied from another object), or it is stored without
    encryption while a key is set and plaintext is not allowed. The message names only
    key ids. Not the picture's fault: the worker waits for the keys to be fixed and never
    deletes the original for it. `keys_at_fault`: this process's keys (or release) are
    at fault, not the object (altered or truncated): the process is then not ready."""

    def __init__(self, message: str, *, keys_at_fault: bool = False) -> None:
        super().__init__(message)
        self.keys_at_fault = keys_at_fault


@dataclass(frozen=True, slots=True)
class KeyCheckReport:
    """One look at the key check objects of the originals' store (`_keycheck/<key id>`,
    each sealed under the key it names, written once): `written`, the current key id
    whose object this look wrote (None: it was there, no current key, or not ready);
    `unreadable`, the ids this process holds whose objects it cannot open; `foreign`,
    ids it does not hold; `newest_not_held`, those of them whose object is the newest
    (the key most recently brought in: others seal with it)."""

    written: str | None = None
    unreadable: tuple[str, ...] = ()
    foreign: tuple[str, ...] = ()
    newest_not_held: tuple[str, ...] = ()
