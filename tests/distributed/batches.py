"""Batches uploaded in the background while a fault test breaks something, and the
checks that the fault hit mid-batch."""

from __future__ import annotations

import threading

from imageblur.domain import Status
from support import wait_until

from .harness import Backends, Deployment, generated_jpeg


def batch(n: int, *, size: tuple[int, int] = (320, 240), seed: int = 0) -> list[tuple[str, bytes]]:
    return [(f"img-{seed + i}.jpg", generated_jpeg(seed + i, *size)) for i in range(n)]


class Uploader(threading.Thread):
    """Submits a batch in the background (retrying 503s like a real client)."""

    def __init__(self, app: Deployment, images: list[tuple[str, bytes]]) -> None:
        super().__init__(daemon=True)
        self.app, self.images = app, images
        self.ids: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.ids = self.app.submit_many(self.images, clients=2)
        except BaseException as exc:
            self.error = exc

    def result(self, timeout_s: float = 180) -> list[str]:
        self.join(timeout_s)
        assert not self.is_alive(), "uploads did not finish"
        if self.error is not None:
            raise self.error
        return self.ids


def wait_under_way(backends: Backends, uploads: Uploader, *, accepted: int = 5) -> None:
    """Wait (bounded) until the batch is under way (`accepted` uploads stored), then check
    that it is not over yet."""
    repo = backends.repository()
    try:
        wait_until(
            lambda: repo.count() >= accepted, timeout_s=60, what=f"{accepted} uploads accepted"
        )
    finally:
        repo.close()
    assert_mid_batch(backends, uploads)


def assert_mid_batch(backends: Backends, uploads: Uploader) -> None:
    """The fault must hit while uploads or processing are still going on."""
    if uploads.is_alive():
        return
    repo = backends.repository()
    try:
        unfinished = [r for r in repo.list(limit=1000) if r.status is not Status.DONE]
    finally:
        repo.close()
    assert unfinished, "the batch was over before the fault"
