"""A batch's locations (`batches.ports.ObjectLocation`) on a `file:` folder and on S3
(the moto server): listed in key order page by page from a stored position, a source read
only as listed, a target written only where nothing is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import servers
from imageblur.adapters.batch_locations import BatchLocations
from imageblur.batches.model import Location, LocationRefused, SourceChanged, TargetExists
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
    name = servers.unique("batch").replace("_", "-")
    moto.client().create_bucket(Bucket=name)
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


def test_a_folder_write_never_follows_a_link(tmp_path: Path) -> None:
    """Links planted in a target folder while a batch runs: at a key's folder, at its
    name, or for the folder itself. Nothing is written outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept.jpg").write_bytes(b"outside")
    folder = tmp_path / "out"
    target = BatchLocations().open(Location("file", str(folder)))
    target.write_new("q/first.jpg", b"1", content_type="image/jpeg")
    (folder / "q/people").symlink_to(outside)
    with pytest.raises(LocationRefused):
        target.write_new("q/people/a.jpg", b"2", content_type="image/jpeg")
    (folder / "q/kept.jpg").symlink_to(outside / "kept.jpg")
    with pytest.raises(TargetExists):
        target.write_new("q/kept.jpg", b"3", content_type="image/jpeg")
    (folder / "q/dangling.jpg").symlink_to(outside / "new.jpg")
    with pytest.raises(TargetExists):
        target.write_new("q/dangling.jpg", b"4", content_type="image/jpeg")
    target.delete("q/kept.jpg")  # the link goes, not what it names
    folder.rename(tmp_path / "moved")
    folder.symlink_to(outside)
    with pytest.raises(LocationRefused):
        target.write_new("q/b.jpg", b"5", content_type="image/jpeg")
    assert sorted(p.name for p in outside.iterdir()) == ["kept.jpg"]
    assert (outside / "kept.jpg").read_bytes() == b"outside"
    assert not (tmp_path / "moved/q/kept.jpg").exists()


def test_a_folder_source_never_leads_out_through_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "p").mkdir(parents=True)
    (outside / "p/secret.jpg").write_bytes(b"secret")
    folder = tmp_path / "in"
    source = BatchLocations().open(Location("file", str(folder)))
    source.write_new("p/a.jpg", b"a", content_type="image/jpeg")
    source.write_new("q/b.jpg", b"b", content_type="image/jpeg")
    (folder / "p/linked").symlink_to(outside / "p")
    (folder / "p/linked.jpg").symlink_to(outside / "p/secret.jpg")
    (folder / "r").symlink_to(outside / "p")
    page, end = source.list_page("", after=None, limit=100)
    assert [o.key for o in page] == ["p/a.jpg", "q/b.jpg"] and end
    assert source.list_page("r/", after=None, limit=10) == ([], True)
    secret = (outside / "p/secret.jpg").stat()
    tag = f"{secret.st_size}:{secret.st_mtime_ns}"
    for key in ("p/linked/secret.jpg", "p/linked.jpg", "r/secret.jpg"):
        with pytest.raises(SourceChanged):
            source.read(key, tag=tag, max_bytes=100)
    # A listed folder swapped for a link before its file is read.
    (listed, *_), _ = source.list_page("q/", after=None, limit=10)
    (folder / "q").rename(tmp_path / "q-moved")
    (folder / "q").symlink_to(tmp_path / "q-moved")
    with pytest.raises(SourceChanged):
        source.read("q/b.jpg", tag=listed.tag, max_bytes=100)
    # The folder itself made a link: refused as a whole (its batch fails).
    folder.rename(tmp_path / "in-moved")
    folder.symlink_to(tmp_path / "in-moved")
    with pytest.raises(LocationRefused):
        source.list_page("", after=None, limit=10)
    assert not source.exists()
