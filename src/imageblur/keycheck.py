"""Can this process open the originals? The readiness check `originals_key` (the API's
`/readyz`, the worker's `/readyz` and `imageblur_worker_ready`).

Two signals. The key check objects: a process with a current originals key writes
`_keycheck/<key id>`, sealed under it, if it is missing (and it is ready), and opens
every one whose key it holds; one it cannot open makes it not ready, and so does a
newest one (the key most recently brought in, which others seal with) whose key it
does not hold: a process started with the wrong key, or with none, is not ready before
its first job. They are looked at once per `recheck_s`, so probes and scrapes cost the
store nothing more. And the originals themselves: one that could not be opened for
want of a key (a wrong key, no key and a sealed original, a refused plaintext one)
makes the process not ready until an original opens again. Log lines name key ids only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from imageblur.domain import BackendUnavailable, KeyCheckReport
from imageblur.logs import get_logger

log = get_logger(__name__)

# Probes come every 5-10 s and scrapes every 15-30 s; the objects change only when a
# key does, so once a minute is soon enough.
RECHECK_S = 60.0
# A store that could not be reached is asked again sooner than that.
RETRY_S = 5.0


class KeyedStore(Protocol):
    """The originals' store as far as its keys go (`EncryptedStore`)."""

    @property
    def last_unreadable(self) -> str | None: ...

    def check_keys(self) -> KeyCheckReport: ...


class KeyCheck:
    """The readiness of the originals key, for probes and the gauge (thread-safe)."""

    def __init__(
        self,
        store: KeyedStore,
        *,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._recheck_s = recheck_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next_at = float("-inf")
        self._problem: str | None = None
        self._foreign_seen: set[str] = set()

    def problem(self) -> str | None:
        """None when this process can open the originals, else why (key ids and object
        keys, never key material)."""
        return self._objects_problem() or self._store.last_unreadable

    def _objects_problem(self) -> str | None:
        with self._lock:  # concurrent probes look once
            now = self._clock()
            if now < self._next_at:
                return self._problem
            try:
                report = self._store.check_keys()
            except BackendUnavailable as exc:
                # The store's own check says it is down; the key's verdict stands.
                log.warning("keycheck.store_unavailable", error=str(exc))
                self._next_at = now + min(RETRY_S, self._recheck_s)
                return self._problem
            self._next_at = now + self._recheck_s
            self._note(report)
            return self._problem

    def _note(self, report: KeyCheckReport) -> None:
        if report.written is not None:
            log.info("keycheck.written", key_id=report.written)
        for kid in sorted(set(report.foreign) - set(report.newest_not_held) - self._foreign_seen):
            # An older key's object: no reason to stop, after a rotation it stays.
            log.warning("keycheck.key_not_held", key_id=kid)
            self._foreign_seen.add(kid)
        problems = []
        if report.unreadable:
            problems.append(
                f"key check objects of key ids {', '.join(report.unreadable)} do not open"
            )
        if report.newest_not_held:
            problems.append(
                f"the newest key check object is key id {', '.join(report.newest_not_held)}'s, "
                "a key this process does not hold: originals sealed under it do not open here"
            )
        problem = "; ".join(problems) or None
        if problem != self._problem:
            if problem is None:
                log.info("keycheck.ok")
            if report.unreadable:
                log.error("keycheck.unreadable", key_ids=list(report.unreadable))
            if report.newest_not_held:
                log.error("keycheck.newest_key_not_held", key_ids=list(report.newest_not_held))
        self._problem = problem
