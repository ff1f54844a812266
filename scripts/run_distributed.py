"""Supervise the local distributed set-up (`make run-distributed`), as Kubernetes would.

Starts a loopback S3 server (moto, in memory) unless IMAGEBLUR_S3_ENDPOINT_URL is set,
runs `imageblur migrate`, then one `imageblur api` and N `imageblur worker`s, and watches
them:

- a worker that exits is restarted after a short back-off (1 s, then 2 s), the API and
  the other workers untouched;
- a worker that exits RESTARTS_PER_MINUTE + 1 times within a minute (a crash at start)
  stops everything, with its last output;
- if the API or the S3 server exits, everything stops, saying which;
- Ctrl-C or SIGTERM stops everything (workers first, so that they can finish their job,
  the S3 server last) and exits 0;
- every child runs in one process group of its own, whose leader kills the whole group
  as soon as this script is gone, however it went (even `kill -9`): no server is left
  holding a port. A Ctrl-C at the terminal reaches this script only, which stops the
  children in order.

The processes' own output (JSON log lines) passes through unchanged; this script's
messages start with "run-distributed:". PostgreSQL and RabbitMQ are the Makefile's job.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

BIN = Path(sys.executable).parent
RESTARTS_PER_MINUTE = 2  # the next exit within the minute stops the set-up
BACKOFF_S = (1.0, 2.0)
TAIL_LINES = 15  # of a process's output, shown when it stops the set-up


def say(message: str) -> None:
    print(f"run-distributed: {message}", file=sys.stderr, flush=True)


# The group's leader: it waits for the end of a pipe that only this script holds open
# (the kernel closes it when this script dies, however it dies), then kills the group.
_REAPER = "import os, signal, sys; sys.stdin.buffer.read(); os.killpg(0, signal.SIGKILL)"


class ProcessGroup:
    """The process group every child joins, killed (what is left of it) when this script
    ends, or dies."""

    def __init__(self) -> None:
        read_end, self._write_end = os.pipe()  # not inherited by the children (PEP 446)
        self._leader = subprocess.Popen(
            [sys.executable, "-c", _REAPER], stdin=read_end, process_group=0
        )
        os.close(read_end)
        self.pgid = self._leader.pid

    def close(self) -> None:
        """Kill whatever is left in the group (after the orderly stop: nothing, usually)."""
        os.close(self._write_end)
        self._leader.wait()


@dataclass
class Child:
    """One supervised process; its output is passed on (or not) and its tail kept.
    `ready_line`: a text the process prints once it serves (`ready` is set then)."""

    name: str
    argv: Sequence[str]
    echo: bool = True
    env: dict[str, str] = field(default_factory=dict)  # on top of this process's environment
    ready_line: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=50))
    exits: list[float] = field(default_factory=list)  # monotonic times of unplanned exits
    restart_at: float | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    def start(self, group: ProcessGroup) -> None:
        self.ready.clear()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            process_group=group.pgid,
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        self.restart_at = None
        say(f"{self.name} started (pid {self.proc.pid})")

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.tail.append(line)
            if self.ready_line is not None and self.ready_line in line:
                self.ready.set()
            if self.echo:
                print(line, flush=True)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def last_output(self) -> str:
        lines = list(self.tail)[-TAIL_LINES:]
        return "\n".join(f"    {line}" for line in lines) or "    (no output)"


class Supervisor:
    def __init__(self, workers: int, s3_port: int, metrics_port: int | None = None) -> None:
        self.stopping = threading.Event()
        self.group: ProcessGroup  # made by `run`
        self.s3: Child | None = None
        if not os.environ.get("IMAGEBLUR_S3_ENDPOINT_URL"):
            self.s3 = Child(
                "the S3 server (moto)",
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                echo=False,  # one line per request
                env={"PYTHONUNBUFFERED": "1"},
                # Its own word, printed once it listens. A port probe would take another
                # server that holds the port (one moto failed to bind) for this one.
                ready_line=f"Running on http://127.0.0.1:{s3_port}",
            )
            os.environ["IMAGEBLUR_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{s3_port}"
            for name, value in (
                ("ACCESS_KEY_ID", "testing"),
                ("SECRET_ACCESS_KEY", "testing"),
                ("ADDRESSING_STYLE", "path"),
                ("CREATE_BUCKETS", "true"),
            ):
                os.environ.setdefault(f"IMAGEBLUR_S3_{name}", value)
        imageblur = str(BIN / "imageblur")
        self.api = Child("the API", [imageblur, "api"])
        # Worker n (from 0) serves its Prometheus metrics on metrics_port + n.
        self.workers = [
            Child(
                f"worker-{n + 1}",
                [imageblur, "worker"],
                env={}
                if metrics_port is None
                else {"IMAGEBLUR_METRICS_PORT": str(metrics_port + n)},
            )
            for n in range(workers)
        ]
        self.s3_port = s3_port

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        self.group = ProcessGroup()
        try:
            failure = self._start() or self._watch()
        finally:
            self._stop_all()
            self.group.close()
        if failure:
            say(failure)
            return 1
        say("stopped")
        return 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping.is_set():
            say(f"{signal.Signals(signum).name}: stopping")
        self.stopping.set()

    def _start(self) -> str | None:
        if self.s3 is not None:
            self.s3.start(self.group)
            deadline = time.monotonic() + 60
            while not self.s3.ready.wait(0.2):
                if self.s3.exited() is not None or time.monotonic() > deadline:
                    return f"the S3 server did not start:\n{self.s3.last_output()}"
                if self.stopping.is_set():
                    return None
            say(f"S3 (moto, in memory) on {os.environ['IMAGEBLUR_S3_ENDPOINT_URL']}")
        migrate = subprocess.run(
            [str(BIN / "imageblur"), "migrate"], check=False, process_group=self.group.pgid
        )
        if self.stopping.is_set():
            return None
        if migrate.returncode != 0:
            return f"`imageblur migrate` failed (exit {migrate.returncode}); nothing started"
        for child in (self.api, *self.workers):
            child.start(self.group)
        port = os.environ.get("IMAGEBLUR_PORT", "8080")
        say(f"imageblur API on http://127.0.0.1:{port} with {len(self.workers)} workers")
        return None

    def _watch(self) -> str | None:
        """Until a signal (None) or a failure that stops the set-up (its message)."""
        while not self.stopping.wait(0.2):
            for essential in (self.s3, self.api):
                if essential is not None and (code := essential.exited()) is not None:
                    return (
                        f"{essential.name} exited (code {code}); stopping everything. "
                        f"Its last output:\n{essential.last_output()}"
                    )
            for worker in self.workers:
                failure = self._tend(worker)
                if failure:
                    return failure
        return None

    def _tend(self, worker: Child) -> str | None:
        """Restart a worker that exited, after a back-off; give up on a crash loop."""
        now = time.monotonic()
        if worker.restart_at is not None:
            if now >= worker.restart_at:
                worker.start(self.group)
            return None
        code = worker.exited()
        if code is None:
            return None
        worker.exits = [t for t in worker.exits if now - t < 60] + [now]
        if len(worker.exits) > RESTARTS_PER_MINUTE:
            return (
                f"{worker.name} exited {len(worker.exits)} times within a minute (last exit "
                f"code {code}); stopping everything. Its last output:\n{worker.last_output()}"
            )
        delay_s = BACKOFF_S[min(len(worker.exits), len(BACKOFF_S)) - 1]
        say(f"{worker.name} (pid {worker.proc.pid if worker.proc else '?'}) exited "
            f"(code {code}); restarting it in {delay_s:.0f} s")  # fmt: skip
        worker.restart_at = now + delay_s
        return None

    def _stop_all(self) -> None:
        """Workers and API first (a worker finishes its job, which needs the store), the
        S3 server last; each gets the shutdown grace, then is killed."""
        grace_s = float(os.environ.get("IMAGEBLUR_SHUTDOWN_GRACE_S", "60")) + 10
        for group in ([self.api, *self.workers], [self.s3]):
            running = [c for c in group if c is not None and c.exited() is None and c.proc]
            for child in running:
                assert child.proc is not None
                child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for child in running:
                assert child.proc is not None
                try:
                    child.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    say(f"{child.name} did not stop within {grace_s:.0f} s; killing it")
                    child.proc.kill()
                    child.proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--s3-port", type=int, default=9000)
    parser.add_argument("--metrics-port", type=int, default=None, help="worker n gets PORT + n")
    args = parser.parse_args(argv)
    return Supervisor(args.workers, args.s3_port, args.metrics_port).run()


if __name__ == "__main__":
    raise SystemExit(main())
