"""Closing a RabbitMQ connection of ours without pika's errors for what is expected.

A blocking connection sends no heartbeat while nobody uses it, so the broker drops one
that sat idle past two heartbeats (the API's publisher connection, between uploads) and
the client only learns it at its next I/O. When that I/O is our own close (a clean
SIGTERM, or dropping a connection to open a fresh one), pika logs the reset socket at
level `error` ("Connection reset by peer", "connection_lost", "Unexpected connection
close detected") though nothing is lost. So while a thread closes a connection, pika's
warnings and errors from that thread are held back and the close says what happened in
one line of ours, at info. pika's lines from any other moment (a connection lost while
in use, from any thread) go through as they are.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import pika
import pika.exceptions

log = logging.getLogger(__name__)


class _HeldWhileClosing(logging.Filter):
    """Drops pika's records of level warning and above from a thread inside `closing`."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        held: list[str] | None = getattr(self._local, "held", None)
        if held is None or record.levelno < logging.WARNING:
            return True
        held.append(record.getMessage().split("\n", 1)[0])
        return False

    @contextlib.contextmanager
    def closing(self) -> Iterator[list[str]]:
        """The first lines of the records held back, while the block runs."""
        held: list[str] = []
        self._local.held = held
        try:
            yield held
        finally:
            self._local.held = None


_FILTER = _HeldWhileClosing()


def hold_pika_errors_while_closing() -> None:
    """Put the filter on each of pika's loggers (a logger's filters see only the records
    logged on it, not its children's); idempotent."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.partition(".")[0] == "pika" and isinstance(logger, logging.Logger):
            logger.addFilter(_FILTER)  # once: `addFilter` skips one it has


def close_quietly(connection: pika.BlockingConnection, name: str) -> None:
    """Close `connection` (the `name` link's); one that the broker already dropped is
    only noted, at info: whatever used it has reported its own failure."""
    failure = None
    with _FILTER.closing() as held:
        try:
            connection.close()
        except (pika.exceptions.AMQPError, OSError) as exc:
            failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if failure or held:
        why = failure or held[0]
        log.info("rabbitmq %s connection was already lost when closed (%s)", name, why)
