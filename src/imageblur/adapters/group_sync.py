"""One sync shared by every writer waiting for it (a group commit), for the local adapters.

A durable write ends with a sync (an fsync of a folder, of SQLite's WAL) that makes
everything written before it durable, not only the caller's part. Writers that arrive
while a sync runs wait for the next one, which one of them runs for all: N writers in
flight cost about two syncs, not N. No thread of its own: the first waiter that finds
no sync running runs it.

A failed sync fails every writer it may have covered, never a silent success: Linux
reports a write-back error once and may drop the pages, so a later sync that succeeds
says nothing about them. Hence a writer takes a `ticket()` before writing, and any sync
that fails after it fails the writer's `wait()`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class GroupSync:
    def __init__(self, sync: Callable[[], None]) -> None:
        """`sync`: makes durable everything written before it was called; raises on
        failure (the exception reaches every writer it covered)."""
        self._sync = sync
        self._cond = threading.Condition()
        self._begun = 0  # syncs started, numbered from 1
        self._finished = 0  # syncs ended (they run one at a time, in order)
        self._running = False
        self._last_failure = 0  # the number of the last sync that raised, 0: none
        self._failure: BaseException | None = None
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Writers inside `wait` now, the one running a sync among them (for tests)."""
        with self._cond:
            return self._waiting

    def ticket(self) -> int:
        """Taken before writing: what `wait` needs to tell which syncs came after."""
        with self._cond:
            return self._finished

    def wait(self, ticket: int) -> None:
        """After writing: return once a sync that began after the writes has ended.
        Raises that sync's error, or any sync's that ended since `ticket` was taken."""
        with self._cond:
            target = self._begun + 1  # the running sync may have begun before our writes
            self._waiting += 1
            try:
                while self._finished < target:
                    if self._running:
                        self._cond.wait()
                    else:
                        self._run_one()
            finally:
                self._waiting -= 1
            if self._last_failure > ticket:
                raise self._failure_copy()

    def _run_one(self) -> None:
        """With the condition held: run the next sync, for every writer waiting."""
        self._running = True
        self._begun += 1
        number = self._begun
        failure: BaseException | None = None
        self._cond.release()
        try:
            self._sync()
        except BaseException as exc:  # noqa: BLE001 (handed to every waiter)
            failure = exc
        finally:
            self._cond.acquire()
            self._running = False
            self._finished = number
            if failure is not None:
                self._last_failure, self._failure = number, failure
            self._cond.notify_all()

    def _failure_copy(self) -> BaseException:
        # Each waiter raises its own exception object (a shared one would have its
        # traceback grown by every thread that raises it), chained to the sync's.
        failure = self._failure
        assert failure is not None
        try:
            copy = type(failure)(*failure.args)
        except Exception:  # noqa: BLE001 (an exception type with another signature)
            copy = RuntimeError(f"a shared sync failed: {failure!r}")
        copy.__cause__ = failure
        return copy
