"""Opens a batch's locations: a `file:` folder, or an S3 bucket through one client made
from the service's S3 settings (its endpoint and credentials). Which locations a batch
may name is the batch service's rule (`batches.rules`), checked before one is opened."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from imageblur.adapters.file_location import FileLocation
from imageblur.adapters.s3_location import S3Location
from imageblur.batches.model import Location

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client


class BatchLocations:
    """`Locations`: S3 settings as the service's own stores take them."""

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        addressing_style: Literal["auto", "path", "virtual"] = "auto",
        timeout_s: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        self._s3: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region": region,
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
            "addressing_style": addressing_style,
            "timeout_s": timeout_s,
            "max_attempts": max_attempts,
        }
        self._client: S3Client | None = None
        self._lock = threading.Lock()

    def open(self, location: Location) -> FileLocation | S3Location:
        if location.store == "file":
            return FileLocation(Path(location.bucket))
        return S3Location(self._s3_client(), location.bucket)

    def _s3_client(self) -> S3Client:
        with self._lock:
            if self._client is None:
                import boto3
                import botocore.config

                s = self._s3
                config = botocore.config.Config(
                    region_name=s["region"],
                    connect_timeout=s["timeout_s"],
                    read_timeout=s["timeout_s"],
                    retries={"max_attempts": s["max_attempts"], "mode": "standard"},
                    s3={"addressing_style": s["addressing_style"]},
                    signature_version="s3v4",
                )
                session = boto3.session.Session(
                    aws_access_key_id=s["access_key_id"],
                    aws_secret_access_key=s["secret_access_key"],
                    region_name=s["region"],
                )
                self._client = session.client("s3", endpoint_url=s["endpoint_url"], config=config)
            return self._client
