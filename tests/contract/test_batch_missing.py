"""Where a batch's locations are not (or no longer) there, on every repository and both
location kinds: a source that is not there is refused when posted (`source_not_found`,
as an S3 target is: `target_not_found`); a source that goes away before it is listed
fails its batch with the reason, rather than ending `done` with a total of 0; one that
goes once listed fails its items (`location_refused`), not `skipped: changed`."""

from __future__ import annotations

import shutil
from dataclasses import replace
from typing import Any

import pytest

import servers
from imageblur.batches.model import BatchRefused, Location

from .test_batch_takeover import Setup, _bucket, setup

__all__ = ["setup"]  # the fixture, shared


def _body(s: Setup, *, source: Location | None = None, target: Location | None = None) -> Any:
    source, target = source or s.source, target or s.target
    return {
        "source": {"bucket": _bucket(source), "prefix": source.prefix},
        "target": {"bucket": _bucket(target), "prefix": target.prefix},
    }


def _missing(location: Location) -> Location:
    return replace(location, bucket=location.bucket + "-gone")


def test_a_location_that_is_not_there_is_refused(setup: Setup) -> None:
    """(The setup allows the `-gone` buckets by name, and never makes them.)"""
    s = setup
    with pytest.raises(BatchRefused) as refused:
        s.service.submit(_body(s, source=_missing(s.source)))
    assert (refused.value.http_status, refused.value.code) == (422, "source_not_found")
    if s.target.store == "s3":
        with pytest.raises(BatchRefused) as refused:
            s.service.submit(_body(s, target=_missing(s.target)))
        assert refused.value.code == "target_not_found"
    else:  # a target folder is made as its keys need it
        assert s.service.submit(_body(s, target=_missing(s.target)))[1]
    assert len(s.repo.list_batches(limit=10)) == (0 if s.target.store == "s3" else 1)


def test_a_source_that_goes_away_fails_its_batch(
    setup: Setup, request: pytest.FixtureRequest
) -> None:
    s = setup
    batch, _ = s.service.submit(_body(s))
    _remove_source(s, request)
    s.pump.run_once()
    got = s.service.get(batch.id)
    assert got.status == "failed" and got.error, got
    assert got.counts.listed == 0


def test_a_source_that_goes_once_listed_fails_its_items(
    setup: Setup, request: pytest.FixtureRequest
) -> None:
    s = setup
    batch, _ = s.service.submit(_body(s))
    s.pump.run_once()
    _remove_source(s, request)
    assert s.runner("w").handle(s.delivery()) == "failed"
    (failure,) = s.repo.item_failures(batch.id, limit=10, after=None)
    assert (failure.source_key, failure.reason) == ("p/a.jpg", "location_refused")


def _remove_source(s: Setup, request: pytest.FixtureRequest) -> None:
    if s.source.store == "file":
        shutil.rmtree(s.source.bucket)
    else:
        moto: servers.MotoServer = request.getfixturevalue("moto_server")
        client = moto.client()
        client.delete_object(Bucket=s.source.bucket, Key="p/a.jpg")
        client.delete_bucket(Bucket=s.source.bucket)
