"""A worker's work folder (`IMAGEBLUR_WORK_DIR`): where a job's temporary files live.

Layout, under the configured root:

    <root>/imageblur-work/<owner>.lock   held (flock) by the live worker <owner>
    <root>/imageblur-work/<owner>/       that worker's folder
    <root>/imageblur-work/<owner>/<job>.<random>/   one job's folder

Each job gets a folder of its own (`WorkDir.job`), removed when the job ends whatever
the way (done, failed, cancelled, an exception out of the job's code). A process that
dies hard (killed, out of memory, a crash in native code) cannot remove anything: the
next worker that opens the same root removes the folders of every owner whose lock is
free (the kernel drops a flock with the process that held it) and never those of a live
worker, whose lock it cannot take. Nothing outside `imageblur-work/` is ever touched:
the root may be the system temp dir, shared with others.

The free space is checked before a job that states a need starts: the file system's
free space, and the worker's own budget (`max_bytes`: an `emptyDir`'s `sizeLimit` is
not seen by `statvfs`, which reports the node's disk, and going over it gets the pod
evicted). What running jobs stated counts as taken until they end, whatever they have
written so far: conservative, so two jobs never count on the same bytes.

flock works on local file systems; the root must not be on NFS.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

from imageblur import sandbox
from imageblur.domain import BackendUnavailable
from imageblur.logs import get_logger

log = get_logger(__name__)

NAMESPACE = "imageblur-work"
_LOCK = ".lock"
# A lock file is made under a hidden name, locked, then renamed: a sweeper never sees a
# lock file that is not held yet. A hidden one this old was left by a crash in between.
_PENDING = ".pending-"
_PENDING_STALE_S = 60.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

FreeBytes = Callable[[Path], int]


def free_bytes(path: Path) -> int:
    """Bytes free to an unprivileged writer on the file system holding `path`."""
    return shutil.disk_usage(path).free


class WorkSpaceShort(BackendUnavailable):
    """Not enough work space for a job now: it waits, as for a back end's outage
    (released without using an attempt, retried later), until running jobs end."""

    backend = "work dir"

    def __init__(self, need: int, available: int) -> None:
        super().__init__(f"a job needs {need} bytes of work space, {available} available")
        self.need = need
        self.available = available


_job_folder: ContextVar[Path | None] = ContextVar("imageblur_job_folder", default=None)


def job_folder() -> Path | None:
    """The folder of the job this thread runs (None outside a job): a job's temporary
    files go there, a sandboxed decoder's `TMPDIR` too."""
    return _job_folder.get()


def owner_name() -> str:
    """Unique per process, safe as a file name."""
    return _UNSAFE.sub("_", f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


class WorkDir:
    """One worker's folder under `root`; `open` before the first job, `close` at exit."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int | None = None,
        free: FreeBytes = free_bytes,
        owner: str | None = None,
    ) -> None:
        self.space = root / NAMESPACE
        self.owner = owner or owner_name()
        self.folder = self.space / self.owner
        self._max_bytes = max_bytes
        self._free = free
        self._promised: dict[Path, int] = {}
        self._mutex = threading.Lock()
        self._lock_fd: int | None = None

    def open(self) -> list[str]:
        """Take this worker's folder (its lock held until `close` or the process ends),
        then remove what dead workers left; the owners removed."""
        self.space.mkdir(parents=True, exist_ok=True, mode=0o700)
        _check_own(self.space)
        pending = self.space / f"{_PENDING}{self.owner}"
        fd = os.open(pending, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody holds it
        pending.rename(self.space / f"{self.owner}{_LOCK}")
        self._lock_fd = fd
        self.folder.mkdir(mode=0o700)  # after the lock: a folder without one is dead
        removed = self.sweep()
        if removed:
            log.info("work_dir.swept", owners=removed, space=str(self.space))
        return removed

    def sweep(self) -> list[str]:
        """Remove the folders of owners that are not alive (their lock is free or gone);
        never a live worker's, never anything outside `imageblur-work/`."""
        removed = []
        for entry in sorted(self.space.iterdir()):
            name = entry.name
            if name.startswith(_PENDING):
                _remove_stale_pending(entry)
            elif name.endswith(_LOCK) and name != f"{self.owner}{_LOCK}":
                if _remove_if_dead(entry, self.space / name.removesuffix(_LOCK)):
                    removed.append(name.removesuffix(_LOCK))
            elif entry.is_dir() and name != self.owner and not _lock_of(entry).exists():
                # Its owner's lock is gone, so is its owner (live workers make the lock
                # first): a sweep or a close that stopped midway.
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(name)
        return removed

    @contextlib.contextmanager
    def job(self, name: str, need_bytes: int = 0) -> Iterator[Path]:
        """A folder for one job, removed when the block ends whatever the way; raises
        `WorkSpaceShort` first when `need_bytes` do not fit now."""
        if self._lock_fd is None:
            raise RuntimeError("the work dir is not open")
        with self._mutex:
            if need_bytes > 0:
                self._check_space(need_bytes)
            folder = self._new_folder(name, need_bytes)
            self._promised[folder] = need_bytes
        token, child_token = _job_folder.set(folder), sandbox.temp_dir.set(folder)
        try:
            yield folder
        finally:
            sandbox.temp_dir.reset(child_token)
            _job_folder.reset(token)
            with self._mutex:
                self._promised.pop(folder, None)
            _remove(folder)

    def _new_folder(self, name: str, need: int) -> Path:
        # Made again if gone: a cleaner of /tmp (systemd-tmpfiles) ages idle folders out.
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=f"{_UNSAFE.sub('_', name)}.", dir=self.folder))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # full: wait, as for want of space
                raise WorkSpaceShort(need, 0) from exc
            raise

    def _check_space(self, need: int) -> None:
        promised = sum(self._promised.values())
        available = self._free(self.folder) - promised
        if self._max_bytes is not None:
            available = min(available, self._max_bytes - promised)
        if need > available:
            raise WorkSpaceShort(need, max(available, 0))

    def close(self) -> None:
        """Remove this worker's folder, then its lock (the order a sweeper relies on)."""
        if self._lock_fd is None:
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            _lock_of(self.folder).unlink()
        os.close(self._lock_fd)
        self._lock_fd = None


def _check_own(space: Path) -> None:
    """The root may be a shared /tmp: `imageblur-work` must be our own folder, not a
    symbolic link or another user's, before anything is written or removed in it."""
    found = os.lstat(space)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
        raise PermissionError(
            errno.EPERM, "a symbolic link, not a folder, or another user's", str(space)
        )


def _lock_of(folder: Path) -> Path:
    return folder.with_name(f"{folder.name}{_LOCK}")


def _remove_if_dead(lock: Path, folder: Path) -> bool:
    """Remove `folder` and its `lock` when nobody holds the lock; False when its owner
    lives (or another sweeper got there first)."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # alive
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        return True
    finally:
        os.close(fd)


def _remove_stale_pending(entry: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if time.time() - entry.stat().st_mtime > _PENDING_STALE_S:
            entry.unlink()


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():  # a file we may not delete: it stays until the next start's sweep
        log.warning("work_dir.not_removed", folder=str(folder))
