"""Progress of a video, in frames, reported about once a second (never per frame)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Stage = Literal["detect", "render"]
REPORT_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Progress:
    """`frames_done` of `frames_total` in `stage`; each frame is decoded twice (pass 1
    detects, pass 2 renders), so the work is done when the render stage is."""

    stage: Stage
    frames_done: int
    frames_total: int

    @property
    def fraction(self) -> float:
        """Of the whole job, the two passes weighted alike (0-1)."""
        part = min(1.0, self.frames_done / self.frames_total) if self.frames_total else 0.0
        return (part + (1.0 if self.stage == "render" else 0.0)) / 2


ProgressCallback = Callable[[Progress], None]


class Throttled:
    """Calls `callback` at most once per `interval_s` (and always for the last frame,
    `finish`)."""

    def __init__(
        self,
        callback: ProgressCallback | None,
        stage: Stage,
        frames_total: int,
        *,
        interval_s: float = REPORT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._callback = callback
        self._stage: Stage = stage
        self.frames_total = frames_total
        self._interval_s = interval_s
        self._clock = clock
        self._next = clock() + interval_s
        self._done = 0

    def __call__(self, frames_done: int) -> None:
        self._done = frames_done
        if self._callback is None or self._clock() < self._next:
            return
        self._next = self._clock() + self._interval_s
        self._report()

    def finish(self) -> None:
        """The stage is over: the frames done are all there were (the header's count
        was an estimate)."""
        self.frames_total = self._done
        if self._callback is not None:
            self._report()

    def _report(self) -> None:
        assert self._callback is not None
        total = max(self.frames_total, self._done)
        self._callback(Progress(self._stage, self._done, total))
