"""A job's long work, as its lease keeper sees it: how far it got, and whether to stop.

The work calls `checkpoint()` between its steps (the anonymizer between its stages, the
detection pyramid between its tiles): each call counts one unit of progress and raises
`Cancelled` once nobody wants the result (the picture was deleted, or the lease was
lost and another worker took the job over), so the job stops instead of holding a decode
slot and CPU for a result that is thrown away. `expect(units)` says how many more
checkpoints the work will pass, once it knows (its size): the lease keeper derives how
long it may keep renewing from it and the rate it measured (`leases`). Per thread (a
context variable): the detectors are shared by every job thread. Outside a job both do
nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from imageblur.domain import ImageblurError


class Cancelled(ImageblurError):  # noqa: N818 - a domain name
    """The work was stopped at a checkpoint: its result is no longer wanted."""


class Progress:
    """Written by the job's thread only (`checkpoint`, `expect`), read by its lease
    keeper: a stale read of a counter costs one renewal's delay, never a wrong lease."""

    def __init__(self, cancelled: threading.Event | None = None) -> None:
        self.done = 0  # checkpoints passed
        self.total = 0  # checkpoints expected in all, as far as the work said
        self.cancelled = cancelled or threading.Event()


_current: ContextVar[Progress | None] = ContextVar("imageblur_progress", default=None)


@contextmanager
def watched(progress: Progress) -> Iterator[Progress]:
    """Within this block, `checkpoint()` and `expect()` report to `progress`."""
    token = _current.set(progress)
    try:
        yield progress
    finally:
        _current.reset(token)


@contextmanager
def cancellable(cancelled: threading.Event) -> Iterator[None]:
    """Within this block, `checkpoint()` raises `Cancelled` once `cancelled` is set."""
    with watched(Progress(cancelled)):
        yield


def checkpoint() -> None:
    """One step of the work in hand done; raise `Cancelled` if it was cancelled."""
    progress = _current.get()
    if progress is None:
        return
    if progress.cancelled.is_set():
        raise Cancelled("the job's lease was lost")
    progress.done += 1


def expect(units: int) -> None:
    """The work in hand will pass `units` more checkpoints (the size of its next part)."""
    progress = _current.get()
    if progress is not None:
        progress.total += units
