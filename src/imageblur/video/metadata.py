"""Which container metadata reaches a video's result: a whitelist, as for pictures.

The result's container metadata is rebuilt from nothing: only the location (the
`gps` group of IMAGEBLUR_KEEP_METADATA) and the creation time (`datetime`), under the
keys FFmpeg's muxers write. Every stream-level entry (handler names, languages, vendor
and encoder strings, rotation in old files) and every other container entry (QuickTime
`mdta` keys such as make, model, software and serial numbers, titles, comments) is left
behind, whatever the policy; so are chapters, subtitle, data and timecode streams
(action cameras and drones write GPS tracks there) and attached pictures, which are never
mapped to the output at all.
"""

from __future__ import annotations

from collections.abc import Mapping

# Where FFmpeg's demuxers put each kept group, in the order we look.
_LOCATION_KEYS = ("location", "com.apple.quicktime.location.ISO6709", "location-eng")
_CREATION_KEYS = ("creation_time", "com.apple.quicktime.creationdate", "date")


def kept_metadata(source: Mapping[str, str], keep: frozenset[str]) -> dict[str, str]:
    """The container metadata to write: `location` when `gps` is kept and the input has
    one, `creation_time` when `datetime` is; nothing else, ever."""
    out: dict[str, str] = {}
    if "gps" in keep and (location := _first(source, _LOCATION_KEYS)):
        out["location"] = location
    if "datetime" in keep and (created := _first(source, _CREATION_KEYS)):
        out["creation_time"] = created
    return out


def _first(source: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = source.get(key)
        if value:
            return value
    return None
