"""A batch, its items and their locations: pure data and rules, no I/O.

A batch item's source is *borrowed*: the service reads it (as it was when listed, by
its tag) and never writes nor deletes it. Items live in their own table, never in the
pictures' `images`, so no path that deletes a picture's original can reach one, no
picture listing shows one and no picture gauge counts one."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any, Literal

from imageblur.domain import ImageblurError

StoreKind = Literal["s3", "file"]
BatchStatus = Literal["listing", "running", "done", "cancelled", "failed"]
ItemState = Literal["listed", "queued", "processing", "done", "failed", "skipped"]
# An item's state is open until it is done, failed or skipped.
OPEN_STATES: tuple[ItemState, ...] = ("listed", "queued", "processing")
ENDED_STATUSES: tuple[BatchStatus, ...] = ("done", "cancelled", "failed")

# Why an item was skipped (`skipped` by reason in a batch's counts).
CHANGED = "changed"  # the source's tag is not the one listed
NOT_AN_IMAGE = "not_an_image"  # its first bytes are no format we take
TARGET_EXISTS = "target_exists"  # a target object this batch did not write
ALREADY_DONE = "already_done"  # an earlier batch wrote it (same item key)
SOURCE_GONE = "source_gone"  # deleted between listing and reading
CANCELLED = "cancelled"

# The webhook event of a batch that ended, whether done, cancelled or failed (its data's
# `status` says which): one per batch.
BATCH_DONE = "batch.done"

# Throughput is measured over this many seconds before a read.
RECENT_S = 60


class BatchRefused(ImageblurError):  # noqa: N818 - a domain name
    """A batch the server will not run: `http_status` and `code` say why (403
    bucket_not_allowed, 422 overlapping_locations, invalid_location, source_not_found or
    target_not_found, 429 too_many_batches)."""

    def __init__(self, message: str, *, http_status: int, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code


class SourceChanged(ImageblurError):  # noqa: N818
    """A source object's tag is not the one recorded when it was listed (or it is gone)."""


class LocationRefused(ImageblurError):  # noqa: N818
    """A location that answers, but will not be read or written as asked (no such
    bucket, access denied): waiting will not fix it, so its batch fails."""


class TargetExists(ImageblurError):  # noqa: N818
    """A conditional write found an object under the target key already."""


@dataclass(frozen=True, slots=True)
class Location:
    """A place objects are read from or written to: an S3 bucket, or (`file`) a folder
    named by its path under one of `IMAGEBLUR_BATCH_ROOTS`; and a key prefix in it."""

    store: StoreKind
    bucket: str
    prefix: str = ""

    def overlaps(self, other: Location) -> bool:
        """Whether an object could lie under both (one prefix starts the other). A
        folder's objects are files: folder and prefix are one path there."""
        mine, theirs = self._space(), other._space()
        if mine[0] != theirs[0]:
            return False
        return mine[1].startswith(theirs[1]) or theirs[1].startswith(mine[1])

    def _space(self) -> tuple[str, str]:
        if self.store == "file":
            return "file", f"{self.bucket.rstrip('/')}/{self.prefix}"
        return f"s3:{self.bucket}", self.prefix

    def to_json(self) -> dict[str, str]:
        return {"store": self.store, "bucket": self.bucket, "prefix": self.prefix}


@dataclass(frozen=True, slots=True)
class SourceObject:
    """One listed source object. `tag`: its S3 ETag, or `<size>:<mtime ns>` for a file,
    so a change between listing and reading is seen."""

    key: str
    size: int
    tag: str


@dataclass(frozen=True, slots=True)
class BatchCounts:
    """Progress, counted from the items."""

    listed: int = 0
    queued: int = 0  # queued or processing
    done: int = 0
    failed: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)
    faces: int = 0
    # Items ended (done, failed, skipped but not dropped) in the last RECENT_S seconds.
    ended_recently: int = 0

    @property
    def ended(self) -> int:
        return self.done + self.failed + sum(self.skipped.values())


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    key: str  # what makes two posts the same batch (`batch_key`)
    source: Location
    target: Location
    options: Mapping[str, Any]
    dry_run: bool
    status: BatchStatus
    created_at: datetime
    updated_at: datetime
    listing_after: str | None = None  # the last key listed: where listing resumes
    listed_all: bool = False
    finished_at: datetime | None = None
    error: str | None = None
    counts: BatchCounts = field(default_factory=BatchCounts)
    # Where its `batch.done` goes instead of IMAGEBLUR_WEBHOOK_URL, as an upload's own
    # `callback_url` (given among the options, kept apart from them: not part of the
    # batch's key nor of its items', since it changes no result).
    callback_url: str | None = None

    @property
    def total(self) -> int | None:
        """Known once the source is listed to its end."""
        return self.counts.listed if self.listed_all else None


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One source object of a batch. `borrowed` is always true: the source is never
    the service's to delete; the column exists so the rule is stated in the data too."""

    id: str  # an image-id-shaped id, carried by the job message
    batch_id: str
    item_key: str
    source_store: StoreKind
    source_bucket: str
    source_key: str
    source_tag: str
    source_size: int
    state: ItemState
    created_at: datetime
    updated_at: datetime
    borrowed: bool = True
    target_key: str | None = None
    wrote_target: bool = False  # this batch wrote `target_key` (purge deletes only those)
    # The marks its attempts gave the object they were about to write (`record_mark`,
    # before the write): an attempt that finds the target taken by one of them finds
    # its own item's result, written by an attempt that lost its lease.
    target_marks: tuple[str, ...] = ()
    reason: str | None = None  # why skipped or failed
    faces: int | None = None
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast a batch goes: items ended per second over the last minute (or since it
    started, if younger), and the seconds left at that pace (None: no total yet, or no
    pace to go by)."""

    per_s: float
    eta_s: float | None


def pace(batch: Batch, now: datetime) -> Pace:
    if batch.status in ENDED_STATUSES:
        return Pace(0.0, 0.0)
    age_s = (now - batch.created_at).total_seconds()
    window_s = min(float(RECENT_S), max(age_s, 1.0))
    per_s = batch.counts.ended_recently / window_s
    total = batch.total
    if total is None or per_s <= 0:
        return Pace(per_s, None)
    return Pace(per_s, max(total - batch.counts.ended, 0) / per_s)


def pace_minute(at: datetime) -> int:
    """The minute `at` falls in: a batch keeps its ended items per minute (the current
    one and the one before), so its pace costs the same to read at any size."""
    return int(at.timestamp() // RECENT_S)


def ended_recently(minute: int, current: int, before: int, now: datetime) -> int:
    """Items ended in the last minute, from the counts of two whole minutes (`minute`
    and the one before it): all of the current one and the share of the one before that
    the last 60 s still cover."""
    elapsed = (now.timestamp() % RECENT_S) / RECENT_S
    if minute == pace_minute(now):
        return round(current + before * (1 - elapsed))
    if minute == pace_minute(now) - 1:
        return round(current * (1 - elapsed))
    return 0


def new_batch_id() -> str:
    return f"bat_{uuid.uuid4().hex}"


def is_batch_id(text: str) -> bool:
    rest = text.removeprefix("bat_")
    return len(text) == 36 and len(rest) == 32 and all(c in "0123456789abcdef" for c in rest)


def _digest(*parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def destination(batch_callback: str | None, server_url: str | None) -> tuple[str, bool] | None:
    """Where a batch's `batch.done` goes, and whether that is the operator's: its own
    `callback_url`, else IMAGEBLUR_WEBHOOK_URL (None: nowhere, no outbox row), as a
    picture's events (`adapters.outbox.destination`)."""
    if batch_callback is not None:
        return batch_callback, False
    return None if server_url is None else (server_url, True)


def batch_key(
    source: Location, target: Location, options: Mapping[str, Any], *, dry_run: bool
) -> str:
    """Posting the same locations and options again is the same batch."""
    return _digest(source.to_json(), target.to_json(), dict(options), dry_run)


def item_key(
    source: Location, obj: SourceObject, target: Location, options: Mapping[str, Any]
) -> str:
    """The same source object (as tagged), into the same target with the same options, is
    the same work whatever batch lists it: a later batch skips it once it is written."""
    return _digest(source.store, source.bucket, obj.key, obj.tag, target.to_json(), dict(options))


def result_key(source: Location, target: Location, key: str, extension: str) -> str:
    """The source key under the target prefix, its extension replaced as `imageblur
    blur` replaces it (`Path.with_suffix`)."""
    relative = key.removeprefix(source.prefix)
    folder, _, name = relative.rpartition("/")
    stem = name.removesuffix(PurePosixPath(name).suffix)
    return target.prefix + (f"{folder}/" if folder else "") + stem + extension
