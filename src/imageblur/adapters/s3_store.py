"""Objects in an S3-compatible store (AWS, MinIO, moto) through boto3.

One instance is one location: a bucket plus a key prefix. Bootstrap builds one for the
originals and one for the results, so the two can live in different buckets with
different retention and access rules. A boto3 client is thread-safe; the session that
makes it is not, so each instance makes its own session once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC
from typing import TYPE_CHECKING, Any, Literal

import boto3
import botocore.config
import botocore.exceptions

from imageblur.domain import ObjectMissing, StoredObject, StoreUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

# Error codes S3 (and compatible servers) use for "no such object".
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


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
    ) -> None:
        self._bucket = bucket
        self._prefix = prefix
        self._region = region
        self._create_bucket = create_bucket
        self._bucket_ready = not create_bucket
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

    @property
    def bucket(self) -> str:
        return self._bucket

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

    def delete(self, key: str) -> None:
        # DeleteObject succeeds for an absent key, which is the contract we want.
        self._call("delete_object", Bucket=self._bucket, Key=self._full(key))

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
        self._call("head_bucket", Bucket=self._bucket)

    def close(self) -> None:
        self._client.close()

    # --- helpers -----------------------------------------------------------------------

    def _full(self, key: str) -> str:
        # Keys are made by the server; an empty or absolute key is a programming error.
        if not key or key.startswith("/"):
            raise ValueError(f"invalid object key: {key!r}")
        return self._prefix + key

    def _ensure_bucket(self) -> None:
        """Create the bucket once, on first use, if configured to: creating it when the
        object is built would make start-up fail whenever S3 is briefly down."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
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
            self._bucket_ready = True

    def _call(self, operation: str, **kwargs: Any) -> Any:
        self._ensure_bucket()
        try:
            return getattr(self._client, operation)(**kwargs)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _MISSING_CODES and "Key" in kwargs:
                raise ObjectMissing(f"no object {kwargs['Key']!r}") from exc
            raise StoreUnavailable(f"S3 {operation} failed: {_describe(exc)}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise StoreUnavailable(f"S3 {operation} failed: {_describe(exc)}") from exc


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
