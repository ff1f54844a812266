"""A batch's locations (`batches.ports.ObjectLocation`) on a `file:` folder and on S3
(the moto server): listed in key order page by page from a stored position, a source read
only as listed, a target written only where nothing is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import servers
from imageblur.adapters.batch_locations import BatchLocations
from imageblur.batches.model import Location, SourceChanged, TargetExists
from imageblur.batches.ports import ObjectLocation

KEYS = ["a.jpg", "a/b.jpg", "a/c/d.png", "a0.jpg", "b/e.jpg", "b/f.txt"]


def s3_locations(moto: servers.MotoServer) -> BatchLocations:
    return BatchLocations(
        endpoint_url=moto.endpoint_url,
        access_key_id="testing",
        secret_access_key="testing",
        addressing_style="path",
        timeout_s=5,
    )


def make_bucket(moto: servers.MotoServer) -> str:
    import boto3

    name = servers.unique("batch").replace("_", "-")
    client = boto3.client(
        "s3",
        endpoint_url=moto.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["file", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectLocation]:
    if request.param == "file":
        opened = BatchLocations().open(Location("file", str(tmp_path / "in")))
    else:
        moto = request.getfixturevalue("moto_server")
        opened = s3_locations(moto).open(Location("s3", make_bucket(moto)))
    for key in KEYS:
        opened.write_new(key, key.encode(), content_type="application/octet-stream")
    yield opened
    opened.close()


def test_listing_goes_page_by_page_in_key_order(location: ObjectLocation) -> None:
    seen: list[str] = []
    after: str | None = None
    ends: list[bool] = []
    while True:
        page, end = location.list_page("", after=after, limit=2)
        seen += [o.key for o in page]
        ends.append(end)
        if end:
            break
        after = page[-1].key
    assert seen == sorted(KEYS)
    assert ends[-1] and not any(ends[:-1])


def test_listing_resumes_after_a_position_and_under_a_prefix(location: ObjectLocation) -> None:
    page, end = location.list_page("", after="a/b.jpg", limit=100)
    assert [o.key for o in page] == ["a/c/d.png", "a0.jpg", "b/e.jpg", "b/f.txt"] and end
    page, _ = location.list_page("a/", after=None, limit=100)
    assert [o.key for o in page] == ["a/b.jpg", "a/c/d.png"]
    page, _ = location.list_page("b/", after="b/e.jpg", limit=100)
    assert [o.key for o in page] == ["b/f.txt"]
    assert location.list_page("nothing/", after=None, limit=10) == ([], True)


def test_a_source_is_read_only_as_listed(location: ObjectLocation) -> None:
    (first, *_), _ = location.list_page("", after=None, limit=10)
    assert (first.key, first.size) == ("a.jpg", 5)
    assert location.read("a.jpg", tag=first.tag, max_bytes=100) == b"a.jpg"
    assert location.read("a.jpg", tag=first.tag, max_bytes=2) == b"a.j"  # one byte over
    location.delete("a.jpg")
    location.write_new("a.jpg", b"changed!", content_type="image/jpeg")
    with pytest.raises(SourceChanged):
        location.read("a.jpg", tag=first.tag, max_bytes=100)
    location.delete("a.jpg")
    with pytest.raises(SourceChanged):
        location.read("a.jpg", tag=first.tag, max_bytes=100)


def test_a_target_is_never_overwritten(location: ObjectLocation) -> None:
    with pytest.raises(TargetExists):
        location.write_new("a/b.jpg", b"other", content_type="image/jpeg")
    (found, *_), _ = location.list_page("a/", after=None, limit=1)
    assert location.read("a/b.jpg", tag=found.tag, max_bytes=100) == b"a/b.jpg"
    location.delete("a/b.jpg")
    location.delete("a/b.jpg")  # gone already: fine
    location.write_new("a/b.jpg", b"new", content_type="image/jpeg")


def test_a_written_object_carries_the_mark_given_before_it_appeared(
    location: ObjectLocation,
) -> None:
    marks: list[str] = []

    def before(mark: str) -> None:
        assert location.mark_of("new/x.jpg") is None  # not there yet
        marks.append(mark)

    location.write_new("new/x.jpg", b"x", content_type="image/jpeg", before=before)
    assert location.mark_of("new/x.jpg") == marks[0]
    with pytest.raises(TargetExists):
        location.write_new("new/x.jpg", b"y", content_type="image/jpeg", before=marks.append)
    assert location.mark_of("new/x.jpg") == marks[0] != marks[1]
    # Another object (a file's identity, or an S3 object written without one) never
    # carries a mark a write was given.
    assert location.mark_of("a/b.jpg") not in marks
    assert location.mark_of("nothing.jpg") is None

    def refuse(mark: str) -> None:
        raise RuntimeError("lease lost")

    with pytest.raises(RuntimeError):
        location.write_new("new/y.jpg", b"y", content_type="image/jpeg", before=refuse)
    assert location.mark_of("new/y.jpg") is None
    assert [o.key for o in location.list_page("new/", after=None, limit=10)[0]] == ["new/x.jpg"]
    assert location.exists()
