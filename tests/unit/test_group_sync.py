"""`GroupSync`, the sync shared by writers in flight (the local store's folder fsync,
SQLite's WAL fsync): a writer returns only once a sync that began after its write has
ended, writers that wait together share one sync, and a failed sync fails every writer
it may have covered, never a silent success."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imageblur.adapters import local_store
from imageblur.adapters.group_sync import GroupSync
from imageblur.adapters.local_store import LocalObjectStore
from imageblur.adapters.sqlite_repo import SqliteImageRepository
from imageblur.domain import ImageRecord, RepositoryUnavailable, StoreUnavailable
from records import pending_picture
from support import wait_until

BOUND_S = 30.0  # every wait below is for a condition, bounded by this


class Disk:
    """What was written, and what each sync made durable (a snapshot of the writes)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.written: list[str] = []
        self.synced: list[set[str]] = []
        self.hold_first = threading.Event()  # set: the first sync may end
        self.fail: set[int] = set()  # numbers (from 1) of the syncs that raise

    def write(self, name: str) -> None:
        with self.lock:
            self.written.append(name)

    def sync(self) -> None:
        with self.lock:
            self.synced.append(set(self.written))
            number = len(self.synced)
        if number == 1:
            assert self.hold_first.wait(BOUND_S)
        if number in self.fail:
            raise OSError(errno.EIO, "Input/output error")


def writer(group: GroupSync, disk: Disk, name: str, outcome: dict[str, object]) -> None:
    ticket = group.ticket()
    disk.write(name)
    try:
        group.wait(ticket)
    except OSError as exc:
        outcome[name] = exc
    else:
        with disk.lock:  # durable when told so: some ended sync saw the write
            outcome[name] = any(name in seen for seen in disk.synced)


def start(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def disk() -> Iterator[Disk]:
    disk = Disk()
    yield disk
    disk.hold_first.set()  # never leave a thread blocked


def run_behind_a_running_sync(disk: Disk, writers: int) -> dict[str, object]:
    """A writer's sync runs (held); `writers` more write and wait meanwhile; then it ends."""
    group, outcome = GroupSync(disk.sync), dict[str, object]()
    first = start(lambda: writer(group, disk, "first", outcome))
    wait_until(lambda: group.waiting == 1 and disk.synced, timeout_s=BOUND_S, what="sync 1")
    names = [f"w{i}" for i in range(writers)]
    threads = [start(lambda n=n: writer(group, disk, n, outcome)) for n in names]
    wait_until(lambda: group.waiting == writers + 1, timeout_s=BOUND_S, what="all waiting")
    disk.hold_first.set()
    for thread in [first, *threads]:
        thread.join(BOUND_S)
        assert not thread.is_alive()
    return outcome


def test_writers_waiting_together_share_one_sync_and_each_is_durable(disk: Disk) -> None:
    outcome = run_behind_a_running_sync(disk, writers=20)
    assert outcome == dict.fromkeys(outcome, True)
    assert len(outcome) == 21
    assert len(disk.synced) == 2  # the held one, then one for the 20 behind it


def test_a_failed_sync_fails_every_writer_it_covered(disk: Disk) -> None:
    disk.fail = {2}
    outcome = run_behind_a_running_sync(disk, writers=8)
    assert outcome.pop("first") is True
    assert len(outcome) == 8
    for name, result in outcome.items():
        assert isinstance(result, OSError), name
        assert result.errno == errno.EIO


def test_a_failure_after_the_ticket_fails_a_writer_even_if_a_later_sync_succeeds(
    disk: Disk,
) -> None:
    """The failed sync may have dropped pages written before it: a later sync's success
    says nothing about them (Linux reports a write-back error once)."""
    disk.fail = {1}
    disk.hold_first.set()
    group = GroupSync(disk.sync)
    ticket = group.ticket()
    disk.write("early")
    with pytest.raises(OSError):
        group.wait(group.ticket())  # sync 1 runs, and fails
    with pytest.raises(OSError):
        group.wait(ticket)  # sync 2 succeeds, but 1 failed after this ticket
    later = group.ticket()
    disk.write("late")
    group.wait(later)  # written after the failure was reported: sync 3 covers it
    assert len(disk.synced) == 3


def test_concurrent_local_puts_are_all_stored_and_share_folder_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[Path] = []
    real = local_store._fsync_dir

    def counted(folder: Path) -> None:
        syncs.append(folder)
        real(folder)

    monkeypatch.setattr(local_store, "_fsync_dir", counted)
    store = LocalObjectStore(tmp_path)
    keys = [f"k{i}.jpg" for i in range(64)]
    threads = [
        start(lambda k=k: store.put(k, k.encode() * 100, content_type="image/jpeg")) for k in keys
    ]
    for thread in threads:
        thread.join(BOUND_S)
        assert not thread.is_alive()
    assert {key: store.get(key) for key in keys} == {k: k.encode() * 100 for k in keys}
    assert 1 <= len(syncs) <= len(keys)
    assert set(syncs) == {tmp_path.resolve()}


def test_a_failed_folder_sync_fails_the_put(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(folder: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(local_store, "_fsync_dir", broken)
    with pytest.raises(StoreUnavailable, match="Input/output error"):
        LocalObjectStore(tmp_path).put("a.jpg", b"x", content_type="image/jpeg")


def new_record() -> ImageRecord:
    return pending_picture(at=datetime(2030, 1, 1, tzinfo=UTC))


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[SqliteImageRepository]:
    repo = SqliteImageRepository(tmp_path / "db.sqlite")
    repo.migrate()
    yield repo
    repo.close()


def test_concurrent_sqlite_adds_are_all_kept_and_share_wal_syncs(
    repo: SqliteImageRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    real = os.fsync

    def counted(fd: int) -> None:
        syncs.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counted)
    records = [new_record() for _ in range(64)]
    threads = [start(lambda r=r: repo.add(r) and None) for r in records]
    for thread in threads:
        thread.join(BOUND_S)
        assert not thread.is_alive()
    assert set(repo.get_many([r.id for r in records])) == {r.id for r in records}
    assert 1 <= len(syncs) <= len(records)


def test_a_failed_wal_sync_fails_the_durable_write(
    repo: SqliteImageRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(RepositoryUnavailable, match="cannot sync the SQLite WAL"):
        repo.add(new_record())
