"""A batch's `file:` location: a folder (under one of `IMAGEBLUR_BATCH_ROOTS`, which the
wiring checks) whose files are objects keyed by their relative POSIX path. Listed in key
order, page by page, pruning folders that lie wholly before the position; a file's tag is
`<size>:<mtime ns>`; a target is written under a temporary name and linked into place,
so an existing file is never overwritten.

No symbolic link is followed below the folder, whoever plants one and whenever: every
folder on a key's way is opened relative to its parent with `O_NOFOLLOW` (a link there
fails the open), files are opened and linked by name in their folder, and the folder
itself must still resolve to where it was named (a link swapped in for it, or for one
of its parents, is refused). So neither a read nor a write leaves the folder."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from imageblur.batches.model import LocationRefused, SourceChanged, SourceObject, TargetExists
from imageblur.domain import StoreUnavailable

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP = ".imageblur-"  # a temporary file's name starts so (never listed)


def _tag(stat: os.stat_result) -> str:
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _mark(stat: os.stat_result) -> str:
    """Which file this is: the same inode, written at the same time."""
    return f"{stat.st_dev}:{stat.st_ino}:{stat.st_mtime_ns}"


class _LinkOnTheWayError(OSError):
    """A symbolic link (or a file) where a key's folder should be."""


class FileLocation:
    """`ObjectLocation` on one folder (an absolute path, resolved when it was named)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def _parts(self, key: str) -> list[str]:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"not an object key: {key!r}")
        return parts

    def exists(self) -> bool:
        return self._folder.is_dir() and self._folder.resolve() == self._folder

    @contextlib.contextmanager
    def _dir(self, parts: Sequence[str], *, create: bool = False) -> Iterator[int]:
        """An fd on the folder `parts` below ours, every step opened without following a
        link (`_LinkOnTheWayError` if one is there; `FileNotFoundError` if a step is missing
        and not `create`d)."""
        if create:
            self._folder.mkdir(parents=True, exist_ok=True)
        if self._folder.resolve() != self._folder:
            raise _LinkOnTheWayError(errno.ELOOP, f"{self._folder} is no longer where it was named")
        fd = os.open(self._folder, _DIR_FLAGS)
        try:
            for part in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=fd)
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise _LinkOnTheWayError(exc.errno, f"{part!r} is not a folder") from exc
                    raise
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def list_page(
        self, prefix: str, *, after: str | None, limit: int
    ) -> tuple[Sequence[SourceObject], bool]:
        found: list[SourceObject] = []
        if not self.exists():
            raise LocationRefused(f"the folder {self._folder} is gone (or a link now)")
        # Only the prefix's own folder is walked.
        base = prefix.rpartition("/")[0]
        try:
            with self._dir(self._parts(base) if base else []) as fd:
                for key, stat in self._walk(fd, f"{base}/" if base else "", after or ""):
                    if not key.startswith(prefix):
                        continue
                    if len(found) == limit:
                        return found, False
                    found.append(SourceObject(key=key, size=stat.st_size, tag=_tag(stat)))
        except (FileNotFoundError, _LinkOnTheWayError):
            return found, True  # no such folder below ours (a link is none): nothing there
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {self._folder}: {exc}") from exc
        return found, True

    def _walk(self, fd: int, base: str, after: str) -> Iterator[tuple[str, os.stat_result]]:
        """Regular files (symbolic links are neither listed nor followed) in key order,
        after `after`. A folder `d` holds keys `d/...`, so it sorts as `d/`: it is
        skipped whole when every key in it sorts before `after`."""
        with os.scandir(fd) as scan:
            entries = [
                (f"{base}{e.name}/" if e.is_dir(follow_symlinks=False) else f"{base}{e.name}", e)
                for e in scan
            ]
        for key, entry in sorted(entries, key=lambda pair: pair[0]):
            if key.endswith("/"):
                if key < after and not after.startswith(key):
                    continue
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:  # swapped for a link since it was scanned: skip it
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                        continue
                    raise
                try:
                    yield from self._walk(child, key, after)
                finally:
                    os.close(child)
            elif entry.is_file(follow_symlinks=False) and key > after and _TEMP not in key:
                yield key, entry.stat(follow_symlinks=False)

    def read(self, key: str, *, tag: str, max_bytes: int) -> bytes:
        *folders, name = self._parts(key)
        try:
            with self._dir(folders) as parent:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except (FileNotFoundError, _LinkOnTheWayError) as exc:
            if not self.exists():  # not this file: the whole folder (as its S3 bucket)
                raise LocationRefused(f"the folder {self._folder} is gone (or a link now)") from exc
            raise SourceChanged(f"{key!r} is gone (or a link now)") from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the file itself is a link now
                raise SourceChanged(f"{key!r} is a link now") from exc
            raise StoreUnavailable(f"cannot open {key!r}: {exc}") from exc
        with os.fdopen(fd, "rb") as file:
            if _tag(os.fstat(file.fileno())) != tag:
                raise SourceChanged(f"{key!r} changed since it was listed")
            data = file.read(max_bytes + 1)
            # Written to while read: what was read may be neither version.
            if _tag(os.fstat(file.fileno())) != tag:
                raise SourceChanged(f"{key!r} changed while it was read")
            return data

    def write_new(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        before: Callable[[str], None] | None = None,
    ) -> None:
        *folders, name = self._parts(key)
        try:
            with self._dir(folders, create=True) as parent:
                self._link_new(parent, name, data, before)
        except FileExistsError as exc:
            raise TargetExists(f"{key!r} exists") from exc
        except _LinkOnTheWayError as exc:
            raise LocationRefused(f"cannot write {key!r}: {exc.strerror}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {key!r}: {exc}") from exc

    def _link_new(
        self, parent: int, name: str, data: bytes, before: Callable[[str], None] | None
    ) -> None:
        temp = f"{_TEMP}{secrets.token_hex(8)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o644, dir_fd=parent)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
                mark = _mark(os.fstat(file.fileno()))
            if before is not None:
                before(mark)
            # linkat never follows a link at the new name, and fails if anything (a
            # file, a link) is there: never an overwrite.
            os.link(temp, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=parent)

    def mark_of(self, key: str) -> str | None:
        *folders, name = self._parts(key)
        try:
            with self._dir(folders) as parent:
                return _mark(os.stat(name, dir_fd=parent, follow_symlinks=False))
        except (FileNotFoundError, _LinkOnTheWayError):
            return None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {key!r}: {exc}") from exc

    def delete(self, key: str) -> None:
        *folders, name = self._parts(key)
        try:
            with self._dir(folders) as parent:
                os.unlink(name, dir_fd=parent)  # a link is removed, never what it names
        except (FileNotFoundError, _LinkOnTheWayError):
            return
        except OSError as exc:
            raise StoreUnavailable(f"cannot delete {key!r}: {exc}") from exc

    def close(self) -> None:
        pass
