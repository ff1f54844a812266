"""A clean stop is quiet: SIGTERM to the API and a worker on RabbitMQ logs no error,
pika's lines included, even when the broker has dropped an idle connection of theirs.

The drop is real: the deployment asks for 2 s heartbeats, and a blocking connection
sends none while idle, so the broker closes the API's publisher connection a few
seconds after the last upload (what happens between uploads at the default 60 s). Its
close at SIGTERM then finds the socket reset, which pika logged as three errors."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

from support import wait_until

from .conftest import DeploymentFactory
from .harness import Backends, generated_jpeg

AMQP_PORT = 5672
ESTABLISHED = "01"  # /proc/net/tcp's state code


def broker_sockets(pid: int) -> list[str]:
    """The TCP states of process `pid`'s sockets to the broker (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == AMQP_PORT and fields[9] in inodes:
                states.append(fields[3])
    return states


def _errors(log: str) -> list[str]:
    found = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            found.append(line)  # not one of our JSON lines: a traceback, a library's print
            continue
        if entry.get("level") in ("error", "critical"):
            found.append(line)
    return found


def test_sigterm_after_the_broker_dropped_an_idle_connection_logs_no_error(
    backends: Backends, deploy: DeploymentFactory
) -> None:
    quick = replace(backends, rabbitmq_url=f"{backends.rabbitmq_url}?heartbeat=2")
    app = deploy(quick, workers=1)
    assert app.api is not None
    api = app.api.pid
    ids = [app.submit(generated_jpeg(n), name=f"{n}.jpg") for n in range(3)]
    assert ESTABLISHED in broker_sockets(api)  # its publisher connection, for the uploads
    app.wait_final(ids)
    app.assert_done_exactly_once(ids)

    def dropped() -> bool:  # reset by the broker: the socket is no longer established
        return ESTABLISHED not in broker_sockets(api)

    wait_until(dropped, timeout_s=60, interval_s=0.5, what="the broker to drop the API's link")
    procs = [app.api, *app.workers]
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    logs = {path.name: path.read_text(errors="replace") for path in app.log_paths()}
    for name, log in logs.items():
        assert _errors(log) == [], (name, log[-4000:])
    api_log = next(log for name, log in logs.items() if name.startswith("api-"))
    assert "publisher connection was already lost when closed" in api_log
