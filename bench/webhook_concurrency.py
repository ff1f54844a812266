#!/usr/bin/env python3
"""How fast one worker's webhook sender drains its outbox, by how many deliveries it
keeps in flight (IMAGEBLUR_WEBHOOK_CONCURRENCY).

A loopback receiver that takes `--answer-ms` to answer each POST (a receiver doing its
work before it answers, or one far away); N events written to a fresh SQLite outbox (the
embedded default) by pictures reaching `done`; then the sender's `run` loop, timed until
every event is delivered. Generated events, the real sender, repository and sockets.
Asserts nothing.

    .venv/bin/python bench/webhook_concurrency.py [--events 100] [--answer-ms 100]
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from provenance import measured_commit

from imageblur.adapters.sqlite_repo import SqliteImageRepository
from imageblur.logs import configure_logging
from imageblur.webhooks.addresses import HostPolicy
from imageblur.webhooks.sender import SenderTerms, WebhookSender
from imageblur.webhooks.signing import parse_secrets
from records import pending_picture
from webhook_receiver import webhook_receiver

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def _outbox(folder: Path, url: str, events: int) -> SqliteImageRepository:
    repo = SqliteImageRepository(folder / "bench.sqlite3", webhook_url=url)
    repo.migrate()
    for _ in range(events):
        image_id = repo.add(pending_picture(at=NOW)).id
        assert repo.claim(image_id, owner="w", lease_s=60, now=NOW)
        assert repo.complete(image_id, owner="w", output_key="o", url="u", faces=0, now=NOW)
    return repo


def drain_s(events: int, answer_ms: float, concurrency: int) -> float:
    """Seconds from the sender's start until the receiver answered every event."""
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with tempfile.TemporaryDirectory() as made, webhook_receiver() as receiver:
        answer = receiver.released

        # Each request waits `answer_ms` before its answer: the receiver's own work.
        class Slow(threading.Event):
            def wait(self, timeout: float | None = None) -> bool:
                time.sleep(answer_ms / 1000)
                return answer.is_set()

        receiver.released = Slow()
        repo = _outbox(Path(made), receiver.url, events)
        terms = SenderTerms(
            keys=parse_secrets(secret),
            operator_url=receiver.url,
            allowed=HostPolicy.parse("*"),
            patience_s=3600,
            lease_s=60,
            concurrency=concurrency,
        )
        sender = WebhookSender(
            repository=repo, render=lambda r: {"id": r.id}, terms=terms, owner="bench"
        )
        stop = threading.Event()
        started = time.perf_counter()
        thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
        thread.start()
        while len(receiver.answered) < events:
            if time.perf_counter() - started > 600:
                raise SystemExit("not drained in 10 minutes")
            time.sleep(0.01)
        took = time.perf_counter() - started
        stop.set()
        thread.join(timeout=30)
        repo.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--answer-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    configure_logging(fmt="console", level="warning")  # not a line per delivery
    print(f"commit {measured_commit()}, load {os.getloadavg()[0]:.2f}")
    print(f"{args.events} events, the receiver answers after {args.answer_ms:.0f} ms")
    print("concurrency  seconds  events/s")
    for n in args.concurrency:
        took = drain_s(args.events, args.answer_ms, n)
        print(f"{n:>11}  {took:7.2f}  {args.events / took:8.1f}")


if __name__ == "__main__":
    main()
