"""In-memory fakes for unit tests of the core (never used against real back ends)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from imageblur.domain import Face, ObjectMissing, StoredObject, StoreUnavailable
from imageblur.ports import RGBImage


class FakeStore:
    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.objects: dict[str, tuple[bytes, datetime]] = {}
        self.down = False
        self.puts = 0

    def _guard(self) -> None:
        if self.down:
            raise StoreUnavailable(f"{self.name} is down")

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        self._guard()
        self.puts += 1
        self.objects[key] = (data, datetime.now(UTC))

    def get(self, key: str) -> bytes:
        self._guard()
        if key not in self.objects:
            raise ObjectMissing(key)
        return self.objects[key][0]

    def delete(self, key: str) -> None:
        self._guard()
        self.objects.pop(key, None)

    def exists(self, key: str) -> bool:
        return key in self.objects

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        for key, (data, at) in list(self.objects.items()):
            if key.startswith(prefix):
                yield StoredObject(key=key, size=len(data), modified_at=at)

    def age(self, key: str, seconds: float) -> None:
        data, at = self.objects[key]
        self.objects[key] = (data, at - timedelta(seconds=seconds))

    def url(self, key: str) -> str:
        return f"fake://{self.name}/{key}"

    def presigned_url(self, key: str, *, expires_s: int) -> str | None:
        return None

    def check(self) -> None:
        self._guard()

    def close(self) -> None:
        pass


class FakeDetector:
    def __init__(self, faces: list[Face] | None = None) -> None:
        self.faces = faces or []
        self.calls = 0

    def detect(self, image: RGBImage) -> list[Face]:
        self.calls += 1
        return list(self.faces)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
