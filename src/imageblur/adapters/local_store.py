"""Object store in a local folder: the embedded default.

Keys are made by the server, but the store still guards paths (no absolute paths, no
`..`, no escaping the root through symlinks) and writes atomically (temp file in the
same folder, fsync, rename), so a crash never leaves a half-written object. Writes in
flight share their folder's sync (`GroupSync`): one folder fsync makes every rename
before it durable.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from imageblur.adapters.group_sync import GroupSync
from imageblur.adapters.streams import check_range, guarded_reader
from imageblur.domain import ObjectMissing, ObjectRange, StoredObject, StoreUnavailable

# A segment may start with "_" (the key check objects, `_keycheck/<key id>`), never with
# "." (no hidden files, no "..", and our temp files start with one).
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")
_TMP_SUFFIX = ".partial"
# A write takes seconds; a temp file this old was left by a crash mid-write.
_ABANDONED_AFTER_S = 3600.0


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        self._folder_syncs: dict[Path, GroupSync] = {}  # a few: keys make few folders
        self._folder_syncs_lock = threading.Lock()

    def _folder_sync(self, folder: Path) -> GroupSync:
        with self._folder_syncs_lock:
            sync = self._folder_syncs.get(folder)
            if sync is None:
                sync = self._folder_syncs[folder] = GroupSync(lambda: _fsync_dir(folder))
            return sync

    def _path(self, key: str) -> Path:
        if not _KEY.fullmatch(key) or ".." in key.split("/") or key.endswith(_TMP_SUFFIX):
            raise ValueError(f"invalid object key: {key!r}")
        path = (self._root / key).resolve()
        if not path.is_relative_to(self._root):
            raise ValueError(f"object key escapes the store: {key!r}")
        return path

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        self.put_stream(key, (data,), content_type=content_type)

    def put_stream(self, key: str, chunks: Iterable[bytes], *, content_type: str) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=_TMP_SUFFIX)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {key}: {exc.strerror}") from exc
        folder_sync = self._folder_sync(path.parent)
        ticket = folder_sync.ticket()  # before the rename the folder's sync must cover
        try:
            with os.fdopen(fd, "wb") as fh:
                _write_all(key, fh, chunks)
            _io(key, lambda: Path(tmp).replace(path))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # The rename is durable only once the folder is synced: without it, a power
        # cut after our 202 could keep the record (SQLite syncs) and lose the file.
        # Concurrent puts share one folder sync; a failed one fails each of them.
        _io(key, lambda: folder_sync.wait(ticket))

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {key}: {exc.strerror}") from exc

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            fh = path.open("rb", buffering=0)
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {key}: {exc.strerror}") from exc
        return guarded_reader(fh.read, fh.close, key)

    def get_range(self, key: str, start: int, end: int) -> ObjectRange:
        check_range(start, end)
        path = self._path(key)
        try:
            with path.open("rb", buffering=0) as fh:
                size = os.fstat(fh.fileno()).st_size
                data = os.pread(fh.fileno(), max(0, min(end, size) - start), start)
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {key}: {exc.strerror}") from exc
        return ObjectRange(data=data, start=start, size=size)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot delete {key}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        # A prefix naming a folder walks that folder only: the key check objects
        # (`_keycheck/`, looked at every minute) without every original.
        folder = prefix.rpartition("/")[0]
        try:
            top = self._path(folder) if folder else self._root
        except ValueError:
            return  # no key we accept lies under it
        if not top.is_dir():
            return
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                path = Path(dirpath) / name
                if name.endswith(_TMP_SUFFIX):
                    self._drop_if_abandoned(path)
                    continue
                key = path.relative_to(self._root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:  # deleted while we walked
                    continue
                yield StoredObject(
                    key=key,
                    size=stat.st_size,
                    modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                )

    @staticmethod
    def _drop_if_abandoned(path: Path) -> None:
        """Remove a temp file a crash left mid-write: it may hold an original's bytes,
        and no key names it, so nothing else would ever delete it."""
        try:
            if time.time() - path.stat().st_mtime > _ABANDONED_AFTER_S:
                path.unlink()
        except OSError:
            pass  # gone already, or a concurrent sweep took it

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def presigned_url(self, key: str, *, expires_s: int) -> str | None:
        return None  # a local folder has no way to grant time-limited direct access

    def check(self) -> None:
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._root, prefix=".check", suffix=_TMP_SUFFIX)
            os.close(fd)
            Path(tmp).unlink()
        except OSError as exc:
            raise StoreUnavailable(f"store folder {self._root} not writable: {exc}") from exc

    def close(self) -> None:
        pass


def _write_all(key: str, fh: BinaryIO, chunks: Iterable[bytes]) -> None:
    # The chunks' own errors (a client that went away) propagate as they are; only the
    # disk's become StoreUnavailable.
    for chunk in chunks:
        try:
            fh.write(chunk)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {key}: {exc.strerror}") from exc
    _io(key, fh.flush)
    _io(key, lambda: os.fsync(fh.fileno()))


def _io(key: str, action: Callable[[], object]) -> None:
    try:
        action()
    except OSError as exc:
        raise StoreUnavailable(f"cannot write {key}: {exc.strerror}") from exc


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
