"""Stopping a job's long work between its steps, once nobody wants its result.

A worker whose lease is lost (the picture was deleted, or the lease lapsed and another
worker took the job over) would otherwise run detection to the end, holding a decode
slot and CPU for a result that is thrown away. The job's thread marks its work
cancellable; the detectors call `checkpoint()` between their passes. Per thread (a
context variable): the detectors are shared by every job thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from imageblur.domain import ImageblurError

_cancelled: ContextVar[threading.Event | None] = ContextVar("imageblur_cancelled", default=None)


class Cancelled(ImageblurError):  # noqa: N818 - a domain name
    """The work was stopped at a checkpoint: its result is no longer wanted."""


@contextmanager
def cancellable(cancelled: threading.Event) -> Iterator[None]:
    """Within this block, `checkpoint()` raises `Cancelled` once `cancelled` is set."""
    token = _cancelled.set(cancelled)
    try:
        yield
    finally:
        _cancelled.reset(token)


def checkpoint() -> None:
    """Raise `Cancelled` if the work in hand was cancelled; outside a job, never."""
    cancelled = _cancelled.get()
    if cancelled is not None and cancelled.is_set():
        raise Cancelled("the job's lease was lost")
