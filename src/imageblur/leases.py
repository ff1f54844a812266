"""How long a job holds its lease, and how soon it learns that nobody wants its result.

A job's lease is renewed every third of its length while the job runs. For the first
`floor_s` (`MAX_LEASE_RENEWALS` lease lengths, the bound every job had before) it is
renewed whatever the job does, as before; past it, only while the job makes progress
(`cancel.Progress`: its checkpoints grow between two renewals), and only up to a ceiling
derived from the work's size and the rate measured over the floor. A job that stops
progressing, hung in native code say, stops renewing and loses its lease: the reconciler
and the crash guard can reach it again.

Between renewals the keeper reads the job's record at least every `check_s` (2 s by
default): once the record is gone (the picture was deleted) or its lease is another's (a
worker took an expired lease over, a newer correction superseded a render), the job is
cancelled and stops at its next checkpoint.

A job that neither returns nor passes a checkpoint for `stuck_s` after its lease was
given up or lost is stuck: hung in native code, it will never see its cancellation, and
a Python thread cannot be stopped from outside. The keeper then calls `on_stuck` (the
worker makes its process exit non-zero, for its orchestrator to start a fresh one:
replacing the thread would leave the hung one holding its memory, and the native
runtime it hung in, for the life of the process).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from imageblur.cancel import Progress
from imageblur.domain import BackendUnavailable
from imageblur.logs import get_logger
from imageblur.ports import JobLeases

log = get_logger(__name__)

# Past the floor, a job may hold its lease for this many times the time its whole work
# takes at the rate measured over the floor: room for a slower second half.
CEILING_MARGIN = 2.0


@dataclass
class RenewalPolicy:
    """Whether a job's lease is renewed once more; asked at every renewal, in order."""

    floor_s: float  # renewed whatever the progress for this long after the claim
    margin: float = CEILING_MARGIN
    _seen: int = 0  # the progress at the last renewal
    _rate: float | None = None  # units per second over the floor, measured once
    _refused: bool = field(default=False)

    def renew(self, elapsed_s: float, done: int, total: int) -> bool:
        """`elapsed_s` since the claim, `done` of `total` units of progress now. Once
        refused, always refused: the lease has been given up."""
        grew = done > self._seen
        self._seen = max(done, self._seen)
        if self._refused:
            return False
        if elapsed_s < self.floor_s:
            return True
        if self._rate is None:
            self._rate = done / elapsed_s if elapsed_s > 0 else 0.0
        self._refused = not grew or elapsed_s >= self.ceiling_s(total)
        return not self._refused

    def ceiling_s(self, total: int) -> float:
        """`margin` times the time `total` units take at the measured rate, never less
        than the floor (a job that did not say its size, or did nothing, gets the floor)."""
        if not self._rate or total <= 0:
            return self.floor_s
        return max(self.floor_s, self.margin * total / self._rate)


@dataclass(frozen=True, slots=True)
class LeaseTerms:
    """The lease's length, how often it is renewed, how often the record is read between
    renewals, and how long it is renewed whatever the progress."""

    lease_s: float
    renew_s: float
    check_s: float
    floor_s: float

    @property
    def tick_s(self) -> float:
        return min(self.check_s, self.renew_s)

    @property
    def ticks_per_renewal(self) -> int:
        return max(1, round(self.renew_s / self.tick_s))


class LeaseKeeper:
    """The thread beside one job: renews its lease (`RenewalPolicy`), calls
    `on_renewed` after each renewal that succeeded (the worker's heartbeat: a job that
    renews is alive), watches its record, and sets `progress.cancelled` once the lease is
    lost. Named `lease-<id>` while it renews, `watch-<id>` once it only watches."""

    def __init__(
        self,
        repo: JobLeases,
        image_id: str,
        owner: str,
        terms: LeaseTerms,
        *,
        clock: Callable[[], datetime],
        on_renewed: Callable[[], None] | None = None,
        notes_progress: bool = False,
        stuck_s: float | None = None,
        on_stuck: Callable[[], None] | None = None,
    ) -> None:
        self._repo, self._id, self._owner, self._terms = repo, image_id, owner, terms
        self._clock, self._on_renewed = clock, on_renewed
        # A video's keeper writes the job's progress at every check (`note_progress`,
        # which is also the check): the record shows it, never written per frame.
        self._notes_progress = notes_progress
        self.progress = Progress()
        self._policy = RenewalPolicy(floor_s=terms.floor_s)
        self._renewing = True
        self._stall = _Stall(self.progress, stuck_s) if on_stuck and stuck_s else None
        self._on_stuck = on_stuck
        self._stop = threading.Event()
        self._started = clock()
        # In the job's log context (its request id), which a new thread does not inherit.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name=f"lease-{image_id[:8]}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No renewal (nor heartbeat) outlives its job; bounded, as a renewal in flight
        may be waiting for a slow database."""
        self._stop.set()
        self._thread.join(timeout=self._terms.tick_s)

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(self._terms.tick_s):
            ticks += 1
            try:
                if self._renewing and ticks % self._terms.ticks_per_renewal == 0:
                    held = self._renew()
                else:
                    held = self._still_ours()
            except BackendUnavailable:
                # Unknown, not lost: the next tick asks again (and the lease runs on).
                log.warning("job.lease_not_checked", image_id=self._id)
                held = True
            if not self._renewing and self._stall is not None:
                self._stall.start()  # given up: from here the job must move or end
            if not held:  # deleted, or taken over: `complete` would say so too
                log.info("job.cancelled", image_id=self._id)
                self.progress.cancelled.set()
                self._watch_for_a_hang()
                return
            if self._stall is not None and self._stall.stuck():
                self._stuck()
                return

    def _watch_for_a_hang(self) -> None:
        """After the cancellation, until the job ends: a job that moves stops at its
        next checkpoint; one that does not for `stuck_s` is stuck."""
        if self._stall is None:
            return
        threading.current_thread().name = f"hang-{self._id[:8]}"  # no longer keeps a lease
        self._stall.start()
        while not self._stop.wait(self._terms.tick_s):
            if self._stall.stuck():
                self._stuck()
                return

    def _stuck(self) -> None:
        assert self._on_stuck is not None and self._stall is not None
        log.error(
            "job.stuck",
            image_id=self._id,
            still_s=round(self._stall.still_s(), 1),
            done=self.progress.done,
        )
        self._on_stuck()

    def _renew(self) -> bool:
        """Renew if the policy agrees; False if the lease was lost."""
        now = self._clock()
        elapsed_s = (now - self._started).total_seconds()
        progress = self.progress
        if not self._policy.renew(elapsed_s, progress.done, progress.total):
            log.warning(
                "job.lease_given_up",
                image_id=self._id,
                elapsed_s=round(elapsed_s, 1),
                done=progress.done,
                total=progress.total,
            )
            self._renewing = False
            threading.current_thread().name = f"watch-{self._id[:8]}"
            return self._still_ours()
        if not self._repo.extend_lease(
            self._id, owner=self._owner, lease_s=self._terms.lease_s, now=now
        ):
            return False
        if self._on_renewed is not None:
            self._on_renewed()
        return True

    def _still_ours(self) -> bool:
        """The record exists and its lease is ours (even expired, until someone takes
        it): a read, cheaper than a renewal; for a job that notes its progress, the
        progress note, refused the same way."""
        done, total = self.progress.done, self.progress.total
        if self._notes_progress and total > 0:
            now = self._clock()
            return self._repo.note_progress(
                self._id,
                owner=self._owner,
                frames_done=done,
                frames_total=total,
                eta_s=self._eta_s(done, total, now),
                now=now,
            )
        record = self._repo.get(self._id)
        return record is not None and record.lease_owner == self._owner

    def _eta_s(self, done: int, total: int, now: datetime) -> float | None:
        """What is left at the rate since the claim; None before any progress."""
        elapsed_s = (now - self._started).total_seconds()
        if done <= 0 or elapsed_s <= 0:
            return None
        return round(max(total - done, 0) * elapsed_s / done, 1)


class _Stall:
    """How long the job's progress has stood still, on the process's own clock (a hang
    is the process's, whatever clock leases are measured on), counted once `start`ed."""

    def __init__(self, progress: Progress, stuck_s: float) -> None:
        self._progress = progress
        self._stuck_s = stuck_s
        self._seen = -1
        self._since: float | None = None

    def start(self) -> None:
        if self._since is None:
            self._seen, self._since = self._progress.done, time.monotonic()

    def still_s(self) -> float:
        if self._since is None:
            return 0.0
        if self._progress.done != self._seen:  # it moved: count again from now
            self._seen, self._since = self._progress.done, time.monotonic()
        return time.monotonic() - self._since

    def stuck(self) -> bool:
        return self._since is not None and self.still_s() >= self._stuck_s
