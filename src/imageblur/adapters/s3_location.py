"""A batch's S3 location: one bucket, listed page by page from a stored position
(`StartAfter`), a source read only as it was listed (`IfMatch` its ETag), a target
written only where nothing is (`IfNoneMatch: *`), so no object the batch did not write
is ever replaced."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from imageblur.batches.model import LocationRefused, SourceChanged, SourceObject, TargetExists
from imageblur.domain import StoreUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

_MARK = "imageblur-mark"  # x-amz-meta-imageblur-mark
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_PRECONDITION = frozenset({"PreconditionFailed", "412"})
# The bucket is not there or not ours to use: no retry fixes it.
_REFUSED = frozenset({"NoSuchBucket", "AccessDenied", "AllAccessDisabled", "403"})


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Location:
    """`ObjectLocation` on one bucket, through a client the wiring made."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    def _call(self, operation: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        """The client's answer; None for a missing object or bucket if `missing_ok`."""
        try:
            return getattr(self._client, operation)(Bucket=self._bucket, **kwargs)
        except botocore.exceptions.ClientError as exc:
            if missing_ok and _code(exc) in _MISSING | {"NoSuchBucket"}:
                return None
            if _code(exc) in _PRECONDITION and "IfNoneMatch" in kwargs:
                raise TargetExists(f"{kwargs['Key']!r} exists") from exc
            if _code(exc) in _PRECONDITION | _MISSING and "IfMatch" in kwargs:
                raise SourceChanged(f"{kwargs['Key']!r} changed or is gone") from exc
            if _code(exc) in _REFUSED:
                raise LocationRefused(f"S3 {operation} on {self._bucket}: {_code(exc)}") from exc
            raise StoreUnavailable(f"S3 {operation} on {self._bucket} failed: {exc}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise StoreUnavailable(f"S3 {operation} on {self._bucket} failed: {exc}") from exc

    def list_page(
        self, prefix: str, *, after: str | None, limit: int
    ) -> tuple[Sequence[SourceObject], bool]:
        page = self._call("list_objects_v2", Prefix=prefix, StartAfter=after or "", MaxKeys=limit)
        found = [
            SourceObject(key=o["Key"], size=int(o["Size"]), tag=str(o["ETag"]))
            for o in page.get("Contents", [])
            if not o["Key"].endswith("/")  # a folder marker, not a picture
        ]
        return found, not page.get("IsTruncated", False)

    def read(self, key: str, *, tag: str, max_bytes: int) -> bytes:
        answer = self._call("get_object", Key=key, IfMatch=tag)
        try:
            # One byte more than allowed tells the caller it is too large.
            data: bytes = answer["Body"].read(max_bytes + 1)
            answer["Body"].close()
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise StoreUnavailable(f"S3 read of {key!r} failed: {exc}") from exc
        return data

    def write_new(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        before: Callable[[str], None] | None = None,
    ) -> None:
        mark = secrets.token_hex(16)  # in the object's metadata: which write put it there
        if before is not None:
            before(mark)
        self._call(
            "put_object",
            Key=key,
            Body=data,
            ContentType=content_type,
            IfNoneMatch="*",
            Metadata={_MARK: mark},
        )

    def mark_of(self, key: str) -> str | None:
        head = self._call("head_object", missing_ok=True, Key=key)
        found = head.get("Metadata", {}).get(_MARK) if head is not None else None
        return str(found) if found is not None else None

    def exists(self) -> bool:
        return self._call("head_bucket", missing_ok=True) is not None

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=key)

    def close(self) -> None:
        pass
