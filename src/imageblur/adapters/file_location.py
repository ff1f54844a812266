"""A batch's `file:` location: a folder (under one of `IMAGEBLUR_BATCH_ROOTS`, which the
wiring checks) whose files are objects keyed by their relative POSIX path. Listed in key
order, page by page, pruning folders that lie wholly before the position; a file's tag is
`<size>:<mtime ns>`; a target is written under a temporary name and linked into place,
so an existing file is never overwritten."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from imageblur.batches.model import SourceChanged, SourceObject, TargetExists
from imageblur.domain import StoreUnavailable


def _tag(stat: os.stat_result) -> str:
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class FileLocation:
    """`ObjectLocation` on one folder."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"not an object key: {key!r}")
        return self._folder.joinpath(*parts)

    def list_page(
        self, prefix: str, *, after: str | None, limit: int
    ) -> tuple[Sequence[SourceObject], bool]:
        found: list[SourceObject] = []
        # Only the prefix's own folder is walked.
        base = prefix.rpartition("/")[0]
        start = self._path(base) if base else self._folder
        if not start.is_dir():
            return found, True
        try:
            for key, stat in self._walk(start, f"{base}/" if base else "", after or ""):
                if not key.startswith(prefix):
                    continue
                if len(found) == limit:
                    return found, False
                found.append(SourceObject(key=key, size=stat.st_size, tag=_tag(stat)))
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {self._folder}: {exc}") from exc
        return found, True

    def _walk(self, folder: Path, base: str, after: str) -> Iterator[tuple[str, os.stat_result]]:
        """Regular files (symbolic links are not followed) in key order, after `after`.
        A folder `d` holds keys `d/...`, so it sorts as `d/`: it is skipped whole when
        every key in it sorts before `after`."""
        with os.scandir(folder) as scan:
            entries = [
                (f"{base}{e.name}/" if e.is_dir(follow_symlinks=False) else f"{base}{e.name}", e)
                for e in scan
            ]
        for key, entry in sorted(entries, key=lambda pair: pair[0]):
            if key.endswith("/"):
                if key < after and not after.startswith(key):
                    continue
                yield from self._walk(Path(entry.path), key, after)
            elif entry.is_file(follow_symlinks=False) and key > after and ".imageblur-" not in key:
                yield key, entry.stat(follow_symlinks=False)

    def read(self, key: str, *, tag: str, max_bytes: int) -> bytes:
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError as exc:
            raise SourceChanged(f"{key!r} is gone") from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot open {key!r}: {exc}") from exc
        with os.fdopen(fd, "rb") as file:
            if _tag(os.fstat(file.fileno())) != tag:
                raise SourceChanged(f"{key!r} changed since it was listed")
            data = file.read(max_bytes + 1)
            # Written to while read: what was read may be neither version.
            if _tag(os.fstat(file.fileno())) != tag:
                raise SourceChanged(f"{key!r} changed while it was read")
            return data

    def write_new(self, key: str, data: bytes, *, content_type: str) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".imageblur-")
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.link(temp, path)  # fails if anything is there: never an overwrite
            finally:
                Path(temp).unlink(missing_ok=True)
        except FileExistsError as exc:
            raise TargetExists(f"{key!r} exists") from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {key!r}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot delete {key!r}: {exc}") from exc

    def close(self) -> None:
        pass
