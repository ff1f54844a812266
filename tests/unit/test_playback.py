"""Signed playback URLs (`imageblur.playback`): one file, until its expiry, unaltered."""

from __future__ import annotations

import pytest

from imageblur import playback
from imageblur.config import SettingsError, load_settings

ID = "0123456789abcdef0123456789abcdef"
KEY = b"k" * 32


def test_a_signed_url_opens_its_file_until_it_expires() -> None:
    query = playback.signed_query(KEY, ID, expires=1000)
    assert playback.verify(KEY, f"/video/{ID}/file", query, now=999.5)
    assert playback.verify(KEY, f"/prefix/video/{ID}/file", query, now=1000)  # root path
    assert not playback.verify(KEY, f"/video/{ID}/file", query, now=1000.5)  # expired


def test_anything_else_is_refused() -> None:
    query = playback.signed_query(KEY, ID, expires=1000)
    other = "f" * 32
    assert not playback.verify(KEY, f"/video/{other}/file", query, now=0)  # another video
    assert not playback.verify(KEY, f"/video/{ID}", query, now=0)  # another route
    assert not playback.verify(b"x" * 32, f"/video/{ID}/file", query, now=0)  # another key
    later = query.replace("expires=1000", "expires=9000")
    assert not playback.verify(KEY, f"/video/{ID}/file", later, now=0)  # extended
    for broken in ("", "expires=1000", f"{query}&sig=again", "expires=x&sig=y", query[:-1]):
        assert not playback.verify(KEY, f"/video/{ID}/file", broken, now=0), broken


def test_the_key_is_the_setting_or_derived_from_the_api_tokens() -> None:
    given = load_settings(playback_key="p" * 32)
    assert given.playback_secret() == b"p" * 32
    one = load_settings(api_token="a" * 20).playback_secret()
    assert one == load_settings(api_token="a" * 20).playback_secret()  # every API process
    assert one != load_settings(api_token="b" * 20).playback_secret()
    assert len(one) == 32


def test_a_short_playback_key_is_refused_at_load() -> None:
    with pytest.raises(SettingsError, match=r"IMAGEBLUR_PLAYBACK_KEY.*at least 32"):
        load_settings(playback_key="short")
