"""Objects in an S3-compatible store (AWS, MinIO, moto) through boto3.

One instance is one location: a bucket plus a key prefix. Bootstrap builds one for the
originals and one for the results, so the two can live in different buckets with
different retention and access rules. A boto3 client is thread-safe; the session that
makes it is not, so each instance makes its own session once.

A delete must forget. In a versioned bucket `DeleteObject` only adds a delete marker and
the object stays as an older version, and object lock can keep it for years. So the
bucket is inspected at first use and by every `check` (the readiness probe): object lock
is refused, and versioning unless `delete_all_versions`, with which a delete removes
every version of the object and its delete markers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import boto3
import botocore.config
import botocore.exceptions

from imageblur.adapters.streams import check_range, guarded_reader
from imageblur.domain import (
    ObjectMissing,
    ObjectRange,
    StoredObject,
    StoreRefused,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

# Error codes S3 (and compatible servers) use for "no such object".
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
# A bucket without object lock answers this; a server without the feature NotImplemented.
_NO_LOCK_CODES = frozenset({"ObjectLockConfigurationNotFoundError", "NotImplemented"})
_DENIED_CODES = frozenset({"AccessDenied", "403"})
# Versioning statuses that keep older versions: Suspended keeps those made while Enabled.
_VERSIONED = frozenset({"Enabled", "Suspended"})
# A streamed object goes up in parts of this size (S3 takes 5 MiB to 5 GiB, up to 10,000
# parts: 8 MiB parts reach 78 GiB), one part buffered at a time.
PART_BYTES = 8 << 20
COMPLETE_TIMEOUT_S = 600.0
log = logging.getLogger(__name__)


class S3ObjectStore:
    """`ObjectStore` on one S3 bucket and key prefix."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        addressing_style: Literal["auto", "path", "virtual"],
        create_bucket: bool,
        timeout_s: float,
        max_attempts: int = 3,
        delete_all_versions: bool = False,
        part_bytes: int = PART_BYTES,
    ) -> None:
        self._bucket = bucket
        self._part_bytes = part_bytes
        self._prefix = prefix
        self._region = region
        self._create_bucket = create_bucket  # once, on first use
        self._delete_all_versions = delete_all_versions
        # None until the bucket is made (if configured to) and inspected; then whether
        # it is versioned, so that deletes remove every version.
        self._versioned: bool | None = None
        self._bucket_lock = threading.Lock()
        config = botocore.config.Config(
            region_name=region,
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            # "standard" retries throttling and transient 5xx/connection errors with
            # jittered backoff; a longer outage surfaces as StoreUnavailable so that
            # the worker's own retry (with its growing delay) takes over.
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": addressing_style},
            signature_version="s3v4",
        )
        # Without static keys, boto3 uses the standard chain (env, profile, IMDS, IRSA).
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        # Making a client reads configuration but opens no connection.
        self._client: S3Client = session.client("s3", endpoint_url=endpoint_url, config=config)
        # Completing a multipart upload assembles the object before S3 answers: minutes
        # for a large one (AWS keeps the connection alive meanwhile), far over the
        # timeout of every other call. Retrying it on a timeout would only start over.
        slow = config.merge(
            botocore.config.Config(
                read_timeout=max(timeout_s, COMPLETE_TIMEOUT_S), retries={"max_attempts": 1}
            )
        )
        self._completer: S3Client = session.client("s3", endpoint_url=endpoint_url, config=slow)

    # --- ObjectStore -----------------------------------------------------------------

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        # A single PutObject is atomic in S3: readers see the old object or the new one.
        self._call(
            "put_object",
            Bucket=self._bucket,
            Key=self._full(key),
            Body=data,
            ContentType=content_type,
        )

    def get(self, key: str) -> bytes:
        response = self._call("get_object", Bucket=self._bucket, Key=self._full(key))
        try:
            body: bytes = response["Body"].read()
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise StoreUnavailable(f"S3 read of {key!r} failed: {exc}") from exc
        return body

    def put_stream(self, key: str, chunks: Iterable[bytes], *, content_type: str) -> None:
        parts = _parts(chunks, self._part_bytes)
        first = next(parts, b"")
        second = next(parts, None)
        if second is None:  # it fits in one part: one PutObject, as for a picture
            self.put(key, first, content_type=content_type)
            return
        full = self._full(key)
        created = self._call(
            "create_multipart_upload", Bucket=self._bucket, Key=full, ContentType=content_type
        )
        upload_id: str = created["UploadId"]
        try:
            done = [self._upload_part(full, upload_id, 1, first)]
            del first  # one part in hand at a time
            done.append(self._upload_part(full, upload_id, 2, second))
            del second
            for number, part in enumerate(parts, start=3):
                done.append(self._upload_part(full, upload_id, number, part))
            # Until this call nothing is visible: readers see the whole object or none.
            self._call(
                "complete_multipart_upload",
                client=self._completer,
                Bucket=self._bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
            )
        except BaseException:
            self._abort(full, upload_id)
            raise

    def _upload_part(self, full: str, upload_id: str, number: int, data: bytes) -> Any:
        answer = self._call(
            "upload_part",
            Bucket=self._bucket,
            Key=full,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _abort(self, full: str, upload_id: str) -> None:
        """Drop an upload that will not complete: its parts are stored (and billed, and
        may hold an original's bytes) until aborted. Best effort: the original error is
        the one to raise, and the bucket's lifecycle rule (`AbortIncompleteMultipartUpload`)
        takes what a dead process or a failed abort leaves."""
        try:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=full, UploadId=upload_id)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            log.warning("s3 multipart upload of %s not aborted: %s", full, _describe(exc))

    def open(self, key: str) -> BinaryIO:
        response = self._call("get_object", Bucket=self._bucket, Key=self._full(key))
        body = response["Body"]
        return guarded_reader(body.read, body.close, repr(key))

    def get_range(self, key: str, start: int, end: int) -> ObjectRange:
        check_range(start, end)
        full = self._full(key)
        if start == end:  # no Range header asks for nothing: ask for the size only
            return ObjectRange(data=b"", start=start, size=self._size(full))
        try:
            response = self._call(
                "get_object", Bucket=self._bucket, Key=full, Range=f"bytes={start}-{end - 1}"
            )
        except _RangeNotSatisfiableError:  # starts at or past the end
            return ObjectRange(data=b"", start=start, size=self._size(full))
        try:
            data: bytes = response["Body"].read()
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise StoreUnavailable(f"S3 read of {key!r} failed: {exc}") from exc
        # "bytes 0-9/1234"; a server that ignores Range sends the whole object (200).
        content_range = response.get("ContentRange")
        if not content_range:
            return ObjectRange(data=data[start:end], start=start, size=len(data))
        return ObjectRange(data=data, start=start, size=int(content_range.rpartition("/")[2]))

    def _size(self, full: str) -> int:
        return int(self._call("head_object", Bucket=self._bucket, Key=full)["ContentLength"])

    def delete(self, key: str) -> None:
        # DeleteObject succeeds for an absent key, which is the contract we want.
        full = self._full(key)
        if self._ensure_bucket():
            self._delete_versions(full)
        else:
            self._call("delete_object", Bucket=self._bucket, Key=full)

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", Bucket=self._bucket, Key=self._full(key))
        except ObjectMissing:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        self._ensure_bucket()
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self._bucket, Prefix=self._prefix + prefix)
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    yield StoredObject(
                        key=item["Key"][len(self._prefix) :],
                        size=int(item["Size"]),
                        modified_at=item["LastModified"].astimezone(UTC),
                    )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise StoreUnavailable(f"S3 list failed: {_describe(exc)}") from exc

    def url(self, key: str) -> str:
        return f"s3://{self._bucket}/{self._full(key)}"

    def presigned_url(self, key: str, *, expires_s: int) -> str | None:
        try:
            url: str = self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": self._full(key)},
                ExpiresIn=expires_s,
            )
        except botocore.exceptions.BotoCoreError as exc:  # e.g. no credentials
            raise StoreUnavailable(f"cannot presign: {_describe(exc)}") from exc
        return url

    def check(self) -> None:
        # Inspected again on every probe: a bucket whose versioning is switched on while
        # we run is refused from then on (or, allowed, its deletes remove every version).
        with self._bucket_lock:
            self._versioned = None
        self._call("head_bucket", Bucket=self._bucket)

    def close(self) -> None:
        self._client.close()
        self._completer.close()

    # --- helpers -----------------------------------------------------------------------

    def _full(self, key: str) -> str:
        # Keys are made by the server; an empty or absolute key is a programming error.
        if not key or key.startswith("/"):
            raise ValueError(f"invalid object key: {key!r}")
        return self._prefix + key

    def _ensure_bucket(self) -> bool:
        """On first use: create the bucket if configured to, and inspect it (refused:
        `StoreRefused`, and again on the next use); whether it is versioned. Not when the
        object is built, which would make start-up fail whenever S3 is briefly down."""
        versioned = self._versioned
        if versioned is not None:
            return versioned
        with self._bucket_lock:
            versioned = self._versioned
            if versioned is None:
                if self._create_bucket:
                    self._create()
                    self._create_bucket = False
                versioned = self._versioned = self._inspect()
            return versioned

    def _create(self) -> None:
        kwargs: dict[str, Any] = {"Bucket": self._bucket}
        if self._region != "us-east-1":  # us-east-1 rejects an explicit constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            self._client.create_bucket(**kwargs)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) not in _BUCKET_EXISTS_CODES:
                raise StoreUnavailable(f"cannot create bucket: {_describe(exc)}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise StoreUnavailable(f"cannot create bucket: {_describe(exc)}") from exc

    def _inspect(self) -> bool:
        """Whether the bucket is versioned, if it is acceptable; `StoreRefused` if a
        delete could not forget (object lock; versioning without `delete_all_versions`)
        or if we may not find out (a setting we may not read is not known to be off)."""
        bucket = self._bucket
        lock = self._bucket_setting(
            "get_object_lock_configuration", "s3:GetBucketObjectLockConfiguration", _NO_LOCK_CODES
        )
        if lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled":
            raise StoreRefused(
                f"bucket {bucket!r} has object lock: a deleted object can be kept until its "
                "retention ends; use a bucket without object lock"
            )
        versioning = self._bucket_setting(
            "get_bucket_versioning", "s3:GetBucketVersioning", frozenset({"NotImplemented"})
        )
        status = versioning.get("Status")  # absent: never versioned
        if status not in _VERSIONED:
            return False
        if not self._delete_all_versions:
            raise StoreRefused(
                f"bucket {bucket!r} has versioning {status}: a deleted object would stay as "
                "an older version. Set IMAGEBLUR_S3_DELETE_ALL_VERSIONS=true to delete every "
                "version (needs s3:ListBucketVersions and s3:DeleteObjectVersion), or use a "
                "bucket that was never versioned"
            )
        return True

    def _bucket_setting(
        self, operation: str, permission: str, absent_codes: frozenset[str]
    ) -> dict[str, Any]:
        """A bucket's configuration ({} when the server says there is none)."""
        try:
            answer: dict[str, Any] = getattr(self._client, operation)(Bucket=self._bucket)
        except botocore.exceptions.ClientError as exc:
            code = _code(exc)
            if code in absent_codes:
                return {}
            if code in _DENIED_CODES:
                raise StoreRefused(
                    f"cannot tell whether bucket {self._bucket!r} keeps deleted objects: "
                    f"{permission} is denied ({_describe(exc)})"
                ) from exc
            raise StoreUnavailable(f"S3 {operation} failed: {_describe(exc)}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise StoreUnavailable(f"S3 {operation} failed: {_describe(exc)}") from exc
        return answer

    def _delete_versions(self, full_key: str) -> None:
        """Delete every version of the object and every delete marker, by version id:
        nothing of it stays in the bucket. Listed in full first, then deleted: deleting
        while paging could move what the next page starts from."""
        paginator = self._client.get_paginator("list_object_versions")
        version_ids: list[str] = []
        try:
            for page in paginator.paginate(Bucket=self._bucket, Prefix=full_key):
                for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    # The prefix also matches longer keys: only this one's versions.
                    if item.get("Key") == full_key and "VersionId" in item:
                        version_ids.append(item["VersionId"])
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise StoreUnavailable(f"S3 list_object_versions failed: {_describe(exc)}") from exc
        for version_id in version_ids:
            self._call("delete_object", Bucket=self._bucket, Key=full_key, VersionId=version_id)

    def _call(self, operation: str, *, client: S3Client | None = None, **kwargs: Any) -> Any:
        self._ensure_bucket()
        try:
            return getattr(client or self._client, operation)(**kwargs)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _MISSING_CODES and "Key" in kwargs:
                raise ObjectMissing(f"no object {kwargs['Key']!r}") from exc
            if _code(exc) == "InvalidRange" and "Range" in kwargs:
                raise _RangeNotSatisfiableError from exc
            raise StoreUnavailable(f"S3 {operation} failed: {_describe(exc)}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise StoreUnavailable(f"S3 {operation} failed: {_describe(exc)}") from exc


class _RangeNotSatisfiableError(Exception):
    """416: the range starts at or past the object's end."""


def _parts(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The chunks regrouped into parts of exactly `size` bytes (the last one shorter),
    buffering one part: S3 wants every part but the last to be at least 5 MiB."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            # Through a view: `buffer[:size]` would copy the part once more.
            with memoryview(buffer) as view:
                part = bytes(view[:size])
            del buffer[:size]
            yield part
    if buffer:
        yield bytes(buffer)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
