"""A client's options for one upload, as sent (multipart fields before the file part, or
query parameters of a raw upload): checked against what the operator allows
(IMAGEBLUR_ALLOWED_OPTIONS) and turned into `domain.UploadOptions`.

A value is text; a list (`hide`, `ignore`) is JSON. Every refusal names its field:
`InvalidOption` (422 invalid_option) for a value this server cannot take,
`OptionNotAllowed` (403 option_not_allowed) for an option the operator forbids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, get_args

from imageblur.domain import BlurMode, ImageblurError, Rect, UploadOptions
from imageblur.metadata import parse_policy
from imageblur.webhooks.addresses import HostPolicy, RefusedAddressError, parse_url

OPTION_NAMES = ("mode", "preset", "keep_metadata", "hide", "ignore", "review", "callback_url")
# `ignore` shows faces a detector found: the operator opts in to it.
DEFAULT_ALLOWED = tuple(name for name in OPTION_NAMES if name != "ignore")
PRESETS = ("privacy", "tidy", "thorough")
MAX_RECTANGLES = 100  # of `hide`, and of `ignore`
MAX_OPTION_CHARS = 16 * 1024  # one value's text (100 rectangles of JSON fit)


class InvalidOption(ImageblurError):  # noqa: N818 - a domain name
    """An option's value this server cannot take (422 invalid_option)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.field = option


class OptionNotAllowed(ImageblurError):  # noqa: N818 - a domain name
    """An option the operator does not allow (403 option_not_allowed)."""

    def __init__(self, option: str) -> None:
        super().__init__(
            f"the option {option!r} is not allowed on this server (IMAGEBLUR_ALLOWED_OPTIONS)"
        )
        self.field = option


class ReviewUnavailable(InvalidOption):
    """`review=required` on a server that cannot hold a picture for review: no
    originals key, or no reviewers (422 review_unavailable)."""

    def __init__(self) -> None:
        super().__init__(
            "review",
            "review=required needs a server with an originals key (IMAGEBLUR_ORIGINALS_KEY) "
            "and reviewers (IMAGEBLUR_REVIEWER_TOKENS): this one has not both",
        )


def check_review(options: UploadOptions | None, *, available: bool) -> None:
    """Refuse `review=required` where nobody could review (`ReviewUnavailable`)."""
    if options is not None and options.review and not available:
        raise ReviewUnavailable()


# The metadata groups a video's container can keep (`video.metadata`).
VIDEO_METADATA = frozenset({"gps", "datetime"})


def check_video(options: UploadOptions | None) -> None:
    """Refuse what a video cannot take (422 invalid_option): metadata groups beyond its
    container's location and creation time."""
    if options is None or options.keep_metadata is None:
        return
    extra = sorted(options.keep_metadata - VIDEO_METADATA)
    if extra:
        raise InvalidOption(
            "keep_metadata",
            f"keep_metadata: a video keeps only {', '.join(sorted(VIDEO_METADATA))}, "
            f"not {', '.join(extra)}",
        )


def parse_allowed(text: str) -> frozenset[str]:
    """IMAGEBLUR_ALLOWED_OPTIONS: comma-separated option names; `ValueError` for others."""
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"unknown options {', '.join(unknown)}: of {', '.join(OPTION_NAMES)}")
    return names


def parse(
    fields: Mapping[str, str], *, allowed: frozenset[str], asked_by: str | None = None
) -> UploadOptions | None:
    """The options among `fields` (other names are left to the caller: `filename`, ...);
    None when there are none. `asked_by` is recorded with an `ignore` (the token)."""
    given = {name: fields[name] for name in OPTION_NAMES if name in fields}
    if not given:
        return None
    for name, value in given.items():
        if name not in allowed:
            raise OptionNotAllowed(name)
        if len(value) > MAX_OPTION_CHARS:
            raise InvalidOption(name, f"{name}: at most {MAX_OPTION_CHARS} characters")
    mode = given.get("mode")
    if mode is not None and mode not in get_args(BlurMode):
        raise InvalidOption("mode", f"mode: one of {', '.join(get_args(BlurMode))}")
    preset = given.get("preset")
    if preset is not None and preset not in PRESETS:
        raise InvalidOption("preset", f"preset: one of {', '.join(PRESETS)}")
    review = given.get("review")
    if review is not None and review != "required":
        raise InvalidOption("review", "review: `required` (a client cannot switch review off)")
    ignore = _rectangles("ignore", given.get("ignore"))
    return UploadOptions(
        mode=mode,  # type: ignore[arg-type]  # checked above
        preset=preset,
        keep_metadata=_metadata(given.get("keep_metadata")),
        hide=_rectangles("hide", given.get("hide")),
        ignore=ignore,
        review=review is not None,
        asked_by=asked_by if ignore else None,
        callback_url=_callback(given.get("callback_url")),
    )


def check_callback(options: UploadOptions | None, *, policy: HostPolicy, signing: bool) -> None:
    """Refuse a `callback_url` this server would never deliver to: no signing secret
    (IMAGEBLUR_WEBHOOK_SECRET), or a literal address (or a name) the allowed-hosts list
    refuses. A name's addresses are checked again at each delivery."""
    if options is None or options.callback_url is None:
        return
    if not signing:
        raise InvalidOption(
            "callback_url",
            "callback_url needs a server that signs webhooks (IMAGEBLUR_WEBHOOK_SECRET)",
        )
    try:
        policy.check_host(parse_url(options.callback_url).host)
    except RefusedAddressError as exc:
        raise InvalidOption("callback_url", f"callback_url: {exc}") from None


def check_fits(options: UploadOptions | None, *, width: int, height: int) -> None:
    """Refuse a `hide` or `ignore` rectangle wholly outside the upright picture (it
    would hide, or spare, nothing: a client's mistake, such as a rotated coordinate)."""
    for name, index in _outside(options, width, height):
        raise InvalidOption(
            name,
            f"{name}[{index}] lies outside the {width}x{height} picture "
            "(pixels of the upright picture)",
        )


def check_fits_video(options: UploadOptions | None, *, width: int, height: int) -> None:
    """`check_fits` for a video's frames as stored: its turn (a display matrix) is read
    while decoding, so a rectangle is refused only if it lies outside the frame both
    ways up."""
    for name, index in _outside(options, width, height):
        if (name, index) in _outside(options, height, width):
            raise InvalidOption(
                name,
                f"{name}[{index}] lies outside the {width}x{height} frames "
                "(pixels of the upright frame)",
            )


def _outside(options: UploadOptions | None, width: int, height: int) -> list[tuple[str, int]]:
    if options is None:
        return []
    return [
        (name, index)
        for name, rects in (("hide", options.hide), ("ignore", options.ignore))
        for index, r in enumerate(rects)
        if r.x >= width or r.y >= height
    ]


def _callback(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_url(value)
    except RefusedAddressError as exc:
        raise InvalidOption("callback_url", f"callback_url: {exc}") from None
    return value


def _metadata(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    try:
        return parse_policy(value)
    except ValueError as exc:
        raise InvalidOption("keep_metadata", f"keep_metadata: {exc}") from None


def _rectangles(name: str, value: str | None) -> tuple[Rect, ...]:
    """A JSON list of {"x", "y", "width", "height"} (whole pixels, width and height at
    least 1), at most MAX_RECTANGLES."""
    if value is None:
        return ()
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        raise InvalidOption(name, f"{name}: not JSON") from None
    if not isinstance(data, list) or len(data) > MAX_RECTANGLES:
        raise InvalidOption(name, f"{name}: a JSON list of at most {MAX_RECTANGLES} rectangles")
    return tuple(_rectangle(name, item) for item in data)


def _rectangle(name: str, item: Any) -> Rect:
    keys = ("x", "y", "width", "height")
    if not isinstance(item, dict) or set(item) != set(keys):
        raise InvalidOption(name, f'{name}: each rectangle is {{"x", "y", "width", "height"}}')
    values = [item[k] for k in keys]
    # bool is an int in Python; a float is not a whole pixel.
    if any(type(v) is not int or not 0 <= v <= 2**31 for v in values) or min(values[2:]) < 1:
        raise InvalidOption(
            name, f"{name}: whole pixels, x and y 0 or more, width and height 1 or more"
        )
    return Rect(*values)
