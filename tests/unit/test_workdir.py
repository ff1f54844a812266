"""Work folders (`imageblur.workdir`, IMAGEBLUR_WORK_DIR): a job's folder is removed on
every path, its free space is checked before it starts (a job that does not fit waits,
as for an outage), and a worker at start removes what dead workers left and never a
live worker's folder, nor anything outside its own `imageblur-work/`."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageblur import sandbox
from imageblur.bootstrap import open_work_dir
from imageblur.config import Settings, SettingsError, load_settings
from imageblur.domain import ErrorCode, JobKind, Status
from imageblur.jobs import Outcome
from imageblur.metrics import Metrics
from imageblur.workdir import NAMESPACE, WorkDir, WorkSpaceShort, job_folder
from support import jpeg_bytes
from unit.world import World

MB = 1 << 20


@pytest.fixture
def work(tmp_path: Path) -> Iterator[WorkDir]:
    opened = WorkDir(tmp_path / "work", owner="me")
    opened.open()
    yield opened
    opened.close()


def _leftovers(work: WorkDir) -> list[Path]:
    return sorted(work.folder.iterdir())


# --- one job's folder ----------------------------------------------------------------


def test_a_job_folder_is_the_jobs_own_and_goes_when_it_ends(work: WorkDir) -> None:
    with work.job("img-1") as folder:
        assert folder.parent == work.folder and job_folder() == folder
        assert sandbox.temp_dir.get() == folder  # a sandboxed decoder's TMPDIR
        (folder / "spool").write_bytes(b"x" * 1000)
        (folder / "deeper").mkdir()
        (folder / "deeper" / "part").write_bytes(b"y")
    assert _leftovers(work) == [] and job_folder() is None and sandbox.temp_dir.get() is None


def test_a_job_folder_goes_when_the_job_raises(work: WorkDir) -> None:
    with pytest.raises(RuntimeError), work.job("img-1") as folder:
        (folder / "spool").write_bytes(b"x")
        raise RuntimeError("the decoder crashed")
    assert _leftovers(work) == []


def test_no_job_folder_before_the_work_dir_is_open(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"), WorkDir(tmp_path).job("img"):
        pass


def test_close_removes_the_workers_folder_and_lock(tmp_path: Path) -> None:
    work = WorkDir(tmp_path, owner="me")
    work.open()
    with work.job("img") as folder:
        (folder / "spool").write_bytes(b"x")
        work.close()  # a stop that did not wait for the job
    assert list(work.space.iterdir()) == []


def test_a_folder_a_temp_cleaner_removed_is_made_again(work: WorkDir) -> None:
    shutil.rmtree(work.folder)  # systemd-tmpfiles ages idle folders of /tmp out
    with work.job("img") as folder:
        assert folder.is_dir()


def test_a_full_disk_when_a_job_starts_makes_it_wait(
    work: WorkDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(**_: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    with pytest.raises(WorkSpaceShort), work.job("picture"):
        pass


def test_a_work_dir_that_is_a_link_is_refused(tmp_path: Path) -> None:
    # A shared /tmp: someone else may have made imageblur-work first, as a link.
    (tmp_path / "theirs").mkdir()
    (tmp_path / NAMESPACE).symlink_to(tmp_path / "theirs")
    with pytest.raises(PermissionError, match="symbolic link"):
        WorkDir(tmp_path).open()
    with pytest.raises(SettingsError, match="IMAGEBLUR_WORK_DIR"):
        open_work_dir(Settings(data_dir=tmp_path / "data", work_dir=tmp_path))
    assert list((tmp_path / "theirs").iterdir()) == []


# --- free space ------------------------------------------------------------------------


def test_a_job_that_needs_no_space_runs_on_a_full_disk(tmp_path: Path) -> None:
    work = WorkDir(tmp_path, free=lambda _: 0, max_bytes=MB)
    work.open()
    with work.job("picture", 0) as folder:
        assert folder.is_dir()


def test_the_space_running_jobs_stated_counts_as_taken(tmp_path: Path) -> None:
    asked: list[Path] = []

    def free(path: Path) -> int:
        asked.append(path)
        return 100 * MB

    work = WorkDir(tmp_path, free=free)
    work.open()
    with work.job("video-1", 60 * MB):
        with pytest.raises(WorkSpaceShort) as short, work.job("video-2", 50 * MB):
            pass
        assert (short.value.need, short.value.available) == (50 * MB, 40 * MB)
        with work.job("video-3", 40 * MB):  # exactly what is left
            pass
    with work.job("video-2", 50 * MB):  # the first ended: it fits now
        pass
    assert set(asked) == {work.folder}  # the file system of the work dir, not another
    assert _leftovers(work) == []


def test_the_budget_bounds_what_the_free_space_does_not_show(tmp_path: Path) -> None:
    # An emptyDir's sizeLimit: the node's disk has room, the pod's limit has not.
    work = WorkDir(tmp_path, free=lambda _: 500 * MB, max_bytes=64 * MB)
    work.open()
    with pytest.raises(WorkSpaceShort) as short, work.job("video", 65 * MB):
        pass
    assert short.value.available == 64 * MB
    with work.job("video", 30 * MB), pytest.raises(WorkSpaceShort), work.job("v2", 35 * MB):
        pass


# --- a job's folder in the worker's use case -----------------------------------------


def _worker_on(world: World, work: WorkDir, **options: object):  # type: ignore[no-untyped-def]
    return world.processor(work_dir=work, **options)


def test_a_done_job_leaves_no_folder(world: World, work: WorkDir) -> None:
    seen: list[Path | None] = []
    world.detector.during = lambda: seen.append(job_folder())
    world.images.submit(jpeg_bytes())
    assert _worker_on(world, work).handle(world.next_delivery()) is Outcome.DONE
    assert seen[0] is not None and seen[0].parent == work.folder
    assert _leftovers(work) == []


def test_a_failed_job_leaves_no_folder(world: World, work: WorkDir) -> None:
    record = world.images.submit(jpeg_bytes())
    world.originals.objects[record.input_key] = (b"not an image", "image/jpeg")
    assert _worker_on(world, work).handle(world.next_delivery()) is Outcome.FAILED
    assert _leftovers(work) == []


def test_a_cancelled_job_leaves_no_folder(world: World, work: WorkDir) -> None:
    record = world.images.submit(jpeg_bytes())
    world.detector.during = lambda: world.images.delete(record.id)
    assert _worker_on(world, work).handle(world.next_delivery()) is Outcome.SKIPPED
    assert _leftovers(work) == []


def test_a_job_whose_code_crashes_leaves_no_folder(world: World, work: WorkDir) -> None:
    def crash() -> None:
        (job_folder() or Path("/nonexistent")).joinpath("half-written").write_bytes(b"x")
        raise MemoryError("the detector ran out")

    world.images.submit(jpeg_bytes())
    world.detector.during = crash
    assert _worker_on(world, work).handle(world.next_delivery()) is Outcome.RETRY
    assert _leftovers(work) == []


def test_a_job_without_the_space_it_needs_waits_and_is_not_failed(
    world: World, tmp_path: Path
) -> None:
    work = WorkDir(tmp_path, free=lambda _: 10 * MB)
    work.open()
    metrics = Metrics()
    worker = _worker_on(world, work, metrics=metrics, work_need=lambda kind, record: 20 * MB)
    record = world.images.submit(jpeg_bytes())
    outcomes = [worker.handle(world.next_delivery()) for _ in range(5)]  # max_attempts 3
    assert outcomes == [Outcome.RETRY] * 5 and world.detector.calls == 0
    waiting = world.repo.get(record.id)
    # Given back each time without using an attempt; the original kept for later.
    assert waiting is not None and waiting.status is Status.PENDING and waiting.attempts == 0
    assert waiting.error_code is ErrorCode.BACKEND_UNAVAILABLE
    assert world.queue.take_dead_letters() == [] and record.input_key in world.originals.objects
    assert metrics.registry.get_sample_value("imageblur_work_space_short_total") == 5
    # Space freed (the other jobs ended): the job runs.
    roomy = _worker_on(world, work, work_need=lambda kind, record: 5 * MB)
    assert roomy.handle(world.next_delivery()) is Outcome.DONE
    assert _leftovers(work) == []


def test_a_job_states_its_need_by_kind_and_record(world: World, work: WorkDir) -> None:
    asked: list[tuple[JobKind, str]] = []

    def need(kind: JobKind, record: object) -> int:
        asked.append((kind, getattr(record, "id", "")))
        return 0

    record = world.images.submit(jpeg_bytes())
    assert _worker_on(world, work, work_need=need).handle(world.next_delivery()) is Outcome.DONE
    assert asked == [(JobKind.DETECT, record.id)]


# --- what a crashed worker left ------------------------------------------------------

_CHILD = """
import sys
from pathlib import Path
from imageblur.workdir import WorkDir
work = WorkDir(Path(sys.argv[1]), owner=sys.argv[2])
work.open()
with work.job("img") as folder:
    (folder / "spool").write_bytes(b"x" * 1000)
    print("ready", flush=True)
    sys.stdin.read()  # holds its job until the test closes stdin or kills it
"""


def _worker_process(root: Path, owner: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root), owner],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    while (line := child.stdout.readline()) not in ("ready\n", ""):
        pass  # its log lines
    assert line == "ready\n"
    return child


def test_start_removes_a_crashed_workers_leftovers_and_not_a_live_ones(tmp_path: Path) -> None:
    live = _worker_process(tmp_path, "live")
    try:
        crashed = _worker_process(tmp_path, "crashed")
        os.kill(crashed.pid, signal.SIGKILL)  # no finally, no close: as out of memory
        crashed.wait()
        (tmp_path / "someone-elses").mkdir()  # the root may be /tmp: not ours
        (tmp_path / "heartbeat").touch()
        space = tmp_path / NAMESPACE
        assert [f.name for f in (space / "crashed").iterdir()] != []
        work = WorkDir(tmp_path, owner="next")
        assert work.open() == ["crashed"]
        assert not (space / "crashed").exists() and not (space / "crashed.lock").exists()
        [live_job] = (space / "live").iterdir()
        assert (live_job / "spool").stat().st_size == 1000
        assert (tmp_path / "someone-elses").is_dir() and (tmp_path / "heartbeat").is_file()
        work.close()
    finally:
        live.kill()
        live.wait()
    assert WorkDir(tmp_path, owner="after").open() == ["live"]


def test_start_removes_a_folder_whose_lock_is_gone_and_a_stale_pending_lock(
    tmp_path: Path,
) -> None:
    space = tmp_path / NAMESPACE
    (space / "half-swept" / "job.1").mkdir(parents=True)  # a sweep that stopped midway
    pending, fresh = space / ".pending-old", space / ".pending-new"
    pending.touch()
    fresh.touch()  # a worker starting right now: locked and renamed in a moment
    old = time.time() - 3600
    os.utime(pending, (old, old))
    work = WorkDir(tmp_path, owner="me")
    assert work.open() == ["half-swept"]
    assert sorted(p.name for p in space.iterdir()) == [".pending-new", "me", "me.lock"]


def test_two_workers_on_one_root_keep_each_others_folders(tmp_path: Path) -> None:
    first, second = WorkDir(tmp_path, owner="a"), WorkDir(tmp_path, owner="b")
    first.open()
    with first.job("img") as folder:
        assert second.open() == []  # the first is alive: its lock is held
        assert folder.is_dir()
    assert first.sweep() == [] and second.sweep() == []


# --- settings and start ----------------------------------------------------------------


def test_the_work_dir_defaults_to_the_data_dir_with_the_local_store(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).work_root == tmp_path
    s3 = Settings(store="s3", data_dir=tmp_path)
    assert s3.work_root != tmp_path and s3.work_root.is_dir()  # the system temp dir
    assert Settings(store="s3", work_dir=tmp_path / "w").work_root == tmp_path / "w"


@pytest.mark.parametrize("inside", ["originals", "results", "results/deeper"])
def test_a_work_dir_inside_the_local_store_is_refused(tmp_path: Path, inside: str) -> None:
    with pytest.raises(SettingsError, match="IMAGEBLUR_WORK_DIR"):
        load_settings(data_dir=tmp_path, work_dir=tmp_path / inside)


def test_the_budget_is_at_least_a_megabyte(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBLUR_WORK_DIR_MAX_BYTES", "1000")
    with pytest.raises(SettingsError, match="work_dir_max_bytes"):
        load_settings()
    monkeypatch.setenv("IMAGEBLUR_WORK_DIR_MAX_BYTES", str(256 * MB))
    assert load_settings().work_dir_max_bytes == 256 * MB


def test_a_work_dir_that_cannot_be_made_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    settings = Settings(data_dir=tmp_path, work_dir=tmp_path / "a-file" / "work")
    with pytest.raises(SettingsError, match="IMAGEBLUR_WORK_DIR"):
        open_work_dir(settings)
    opened = open_work_dir(Settings(data_dir=tmp_path))
    assert opened.folder.parent == tmp_path / NAMESPACE
    opened.close()
