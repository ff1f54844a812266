"""The API's batch use cases: post (checked, idempotent), read, list, stop (with an
optional purge of what the batch wrote), its failures, a retry of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from imageblur import upload_options
from imageblur.batches.model import (
    Batch,
    BatchItem,
    BatchRefused,
    Location,
    batch_key,
    new_batch_id,
)
from imageblur.batches.ports import BatchRecords, Locations
from imageblur.batches.rules import BatchRules
from imageblur.domain import NotFound, UploadOptions, utcnow
from imageblur.logs import get_logger
from imageblur.upload_options import InvalidOption

log = get_logger(__name__)

# The options that make sense for a whole batch: those of every picture alike.
BATCH_OPTIONS = frozenset({"mode", "keep_metadata", "preset"})
_PURGE_PAGE = 1000
# Given among the options as an upload's is, and checked as that one is; kept apart from
# them (`Batch.callback_url`): it changes no result, so it is in no key.
CALLBACK = "callback_url"
# Checks a `callback_url` as an upload's is (signing on, the allowed hosts):
# `upload_options.check_callback` with this server's terms, raising `InvalidOption`.
CheckCallback = Callable[[UploadOptions], None]


def _no_callbacks(options: UploadOptions) -> None:
    raise upload_options.InvalidOption(CALLBACK, "callback_url is not taken here")


class BatchService:
    def __init__(
        self,
        repository: BatchRecords,
        locations: Locations,
        rules: BatchRules,
        *,
        max_batches: int,
        allowed_options: frozenset[str],
        check_callback: CheckCallback = _no_callbacks,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._repo = repository
        self._locations = locations
        self._rules = rules
        self._max_batches = max_batches
        self._allowed = allowed_options & (BATCH_OPTIONS | {CALLBACK})
        self._check_callback = check_callback
        self._clock = clock

    def submit(self, body: Mapping[str, Any]) -> tuple[Batch, bool]:
        """The batch `body` names, added (True) or the open one with the same key."""
        source = self._rules.location(body.get("source"), name="source")
        target = self._rules.location(body.get("target"), name="target")
        self._rules.check_pair(source, target)
        options, callback_url = self._options(body.get("options"))
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise BatchRefused(
                "dry_run must be true or false", http_status=422, code="invalid_batch"
            )
        self._check_there(source, name="source")  # the checks without I/O first
        if target.store == "s3":  # a target folder is made as its keys need it
            self._check_there(target, name="target")
        now = self._clock()
        batch = Batch(
            id=new_batch_id(),
            key=batch_key(source, target, options, dry_run=dry_run),
            source=source,
            target=target,
            options=options,
            dry_run=dry_run,
            status="listing",
            created_at=now,
            updated_at=now,
            callback_url=callback_url,
        )
        added, created = self._repo.add_batch(batch, max_running=self._max_batches)
        if created:
            log.info(
                "batch.posted", batch_id=added.id, source=source.to_json(), target=target.to_json()
            )
        return added, created

    def _check_there(self, location: Location, *, name: str) -> None:
        """A bucket or folder that is not there would list as empty (a batch done with
        nothing in it) or fail every write: refused now, by name."""
        opened = self._locations.open(location)
        try:
            there = opened.exists()
        finally:
            opened.close()
        if not there:
            raise BatchRefused(
                f"{name}.bucket {location.bucket!r} is not there",
                http_status=422,
                code=f"{name}_not_found",
            )

    def _options(self, given: Any) -> tuple[dict[str, str], str | None]:
        """The options that make the work, and the `callback_url` (or None). Names a
        batch takes first (`hide`, `ignore` and `review` are one picture's, refused
        whatever their value, before it is read), then their values as an upload's are
        checked; every refusal names its `field`."""
        if given is None:
            return {}, None
        if not isinstance(given, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in given.items()
        ):
            raise InvalidOption("options", "options must be an object of strings")
        unknown = sorted(set(given) - BATCH_OPTIONS - {CALLBACK})
        if unknown:
            raise InvalidOption(
                unknown[0],
                f"not a batch option: {', '.join(unknown)} (a batch takes "
                f"{', '.join(sorted(BATCH_OPTIONS | {CALLBACK}))})",
            )
        parsed = upload_options.parse(given, allowed=self._allowed)  # raises for a refused one
        if parsed is not None and parsed.callback_url is not None:
            self._check_callback(parsed)
        work = {name: value for name, value in given.items() if name != CALLBACK}
        return work, parsed.callback_url if parsed is not None else None

    def get(self, batch_id: str) -> Batch:
        found = self._repo.get_batch(batch_id)
        if found is None:
            raise NotFound(f"no batch {batch_id}")
        return found

    def list(
        self, *, limit: int, offset: int, ended_within_s: int | None = None
    ) -> Sequence[Batch]:
        """Newest first; with `ended_within_s`, only the open batches and those that
        ended in the last that many seconds (what the page shows)."""
        since = None
        if ended_within_s is not None:
            since = self._clock() - timedelta(seconds=ended_within_s)
        return self._repo.list_batches(limit=limit, offset=offset, ended_since=since)

    def cancel(self, batch_id: str, *, purge: bool) -> Batch:
        """Stop it; with `purge`, delete the target objects this batch wrote (and only
        those: its items record which)."""
        stopped = self._repo.cancel_batch(batch_id, now=self._clock())
        if stopped is None:
            raise NotFound(f"no batch {batch_id}")
        if purge:
            target = self._locations.open(stopped.target)
            try:
                after: str | None = None
                while keys := self._repo.written_keys(batch_id, limit=_PURGE_PAGE, after=after):
                    for key in keys:
                        target.delete(key)
                    after = keys[-1]
            finally:
                target.close()
            log.info("batch.purged", batch_id=batch_id)
        return stopped

    def failures(self, batch_id: str, *, limit: int, after: str | None) -> Sequence[BatchItem]:
        self.get(batch_id)
        return self._repo.item_failures(batch_id, limit=limit, after=after)

    def retry(self, batch_id: str) -> int:
        self.get(batch_id)
        return self._repo.retry_failed(batch_id, now=self._clock())
