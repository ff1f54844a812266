"""The image record as a SQL row, shared by both SQL adapters and derived from
`ImageRecord` itself: its column list, record to row, row to record. A new field then
needs only its migration in each adapter. Each adapter says how it stores a timestamp
(SQLite: fixed-width UTC text; PostgreSQL: timestamptz)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, get_args, get_type_hints

from imageblur.domain import ErrorCode, ImageRecord, UploadOptions


class Row(Protocol):
    """A fetched row, by column name (a dict, or a `sqlite3.Row`)."""

    def __getitem__(self, key: str, /) -> Any: ...


_HINTS = get_type_hints(ImageRecord)
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ImageRecord))
COLUMN_LIST = ", ".join(COLUMNS)
_TIMESTAMPS = frozenset(
    name for name in COLUMNS if _HINTS[name] is datetime or datetime in get_args(_HINTS[name])
)


def _enum_of(hint: Any) -> type[StrEnum] | None:
    for option in (hint, *get_args(hint)):
        if isinstance(option, type) and issubclass(option, StrEnum):
            return option
    return None


# Enum fields (status, review, error_code) are stored as their text value; the error
# code is read by its own rule (`ErrorCode.read`).
_ENUMS = {
    name: enum
    for name in COLUMNS
    if (enum := _enum_of(_HINTS[name])) is not None and enum is not ErrorCode
}


def placeholders(style: Callable[[str], str]) -> str:
    """The VALUES list of an INSERT of every column, in the driver's named style."""
    return ", ".join(style(name) for name in COLUMNS)


def to_row(record: ImageRecord, *, timestamp: Callable[[datetime], Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name in COLUMNS:
        value = getattr(record, name)
        if isinstance(value, StrEnum):
            value = value.value
        elif value is not None and name in _TIMESTAMPS:
            value = timestamp(value)
        elif isinstance(value, UploadOptions):
            value = value.to_json()
        row[name] = value
    return row


def to_record(row: Row, *, timestamp: Callable[[Any], datetime]) -> ImageRecord:
    values: dict[str, Any] = {}
    for name in COLUMNS:
        value = row[name]
        if value is not None and name in _ENUMS:
            value = _ENUMS[name](value)
        elif value is not None and name in _TIMESTAMPS:
            value = timestamp(value)
        values[name] = value
    if values["options"] is not None:
        values["options"] = UploadOptions.from_json(values["options"])
    values["error_code"] = ErrorCode.read(values["error_code"], error=values["error"])
    return ImageRecord(**values)
