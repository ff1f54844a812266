"""Which locations a batch may name, read from a request's body: pure checks, run before
anything is listed or written. S3 buckets must be allowed by name
(`IMAGEBLUR_BATCH_BUCKETS`), folders must lie under an allowed root
(`IMAGEBLUR_BATCH_ROOTS`); source and target may not overlap each other nor the
service's own originals and results."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imageblur.batches.model import BatchRefused, Location

FILE_SCHEME = "file:"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_PREFIX_CHARS = 1024


def _invalid(message: str) -> BatchRefused:
    return BatchRefused(message, http_status=422, code="invalid_location")


@dataclass(frozen=True, slots=True)
class BatchRules:
    """`buckets`: the S3 buckets batches may read and write; `roots`: the folders
    (resolved) under which `file:` locations may lie; `own`: the service's own input
    and output locations, which a batch may never overlap."""

    buckets: frozenset[str]
    roots: tuple[Path, ...]
    own: tuple[Location, ...]

    def location(self, body: Any, *, name: str) -> Location:
        """A location as a request names it: `{"bucket": ..., "prefix": ...}`, the bucket
        an S3 bucket's name or `file:<absolute folder>`."""
        if not isinstance(body, Mapping):
            raise _invalid(f"{name} must be an object with bucket and prefix")
        bucket, prefix = body.get("bucket"), body.get("prefix", "")
        if not isinstance(bucket, str) or not isinstance(prefix, str):
            raise _invalid(f"{name}.bucket and {name}.prefix must be strings")
        if len(prefix) > MAX_PREFIX_CHARS or prefix.startswith("/") or ".." in prefix.split("/"):
            raise _invalid(f"{name}.prefix is not a key prefix")
        if bucket.startswith(FILE_SCHEME):
            return self._folder(bucket.removeprefix(FILE_SCHEME), prefix, name=name)
        if not _BUCKET.fullmatch(bucket):
            raise _invalid(f"{name}.bucket is not a bucket name")
        if bucket not in self.buckets:
            raise BatchRefused(
                f"{name}.bucket {bucket!r} is not in IMAGEBLUR_BATCH_BUCKETS",
                http_status=403,
                code="bucket_not_allowed",
            )
        return Location("s3", bucket, prefix)

    def _folder(self, path: str, prefix: str, *, name: str) -> Location:
        folder = Path(path)
        if not folder.is_absolute():
            raise _invalid(f"{name}.bucket: file: takes an absolute folder")
        resolved = folder.resolve()  # a symbolic link may not lead out of the roots
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise BatchRefused(
                f"{name}.bucket is not under IMAGEBLUR_BATCH_ROOTS",
                http_status=403,
                code="bucket_not_allowed",
            )
        return Location("file", str(resolved), prefix)

    def check_pair(self, source: Location, target: Location) -> None:
        """Refuse a batch whose target could hold its sources (or the reverse), or that
        reaches the service's own objects."""
        if source.overlaps(target):
            raise BatchRefused(
                "source and target overlap: a result could be taken for a source",
                http_status=422,
                code="overlapping_locations",
            )
        for location in (source, target):
            if any(location.overlaps(own) for own in self.own):
                raise BatchRefused(
                    "a batch may not read or write the service's own originals or results",
                    http_status=422,
                    code="overlapping_locations",
                )


def parse_list(text: str) -> list[str]:
    """A comma-separated setting."""
    return [part.strip() for part in text.split(",") if part.strip()]


def rules_from(
    buckets: Collection[str], roots: Sequence[str], own: Sequence[Location]
) -> BatchRules:
    return BatchRules(
        buckets=frozenset(buckets),
        roots=tuple(Path(r).resolve() for r in roots),
        own=tuple(own),
    )
