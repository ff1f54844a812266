"""Run a decoder in a child process that the kernel stops past a CPU and memory limit.

For decoders whose cost no check of ours can bound before decoding: a HEIF container
(HEIC, AVIF) may describe its primary image as derived from other images (a grid of
tiles, an overlay of images, each of which may be referenced many times), and the
libraries decode all of them. The child sets its own `RLIMIT_CPU` (the kernel sends
SIGXCPU, then SIGKILL) and `RLIMIT_AS` (an allocation past it fails), and the caller
kills it after a wall-clock bound too, in case it is starved rather than busy.

The child is a fresh interpreter (`python -m imageblur.sandbox`), never a fork of the
caller: the API's other threads may hold locks that a forked child would wait on
forever. Its start-up (imports) costs about 0.2 s of CPU per call; only the formats that
need it come here. The image goes in on stdin, a JSON answer comes back on stdout.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import subprocess
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Any

# What of the caller's environment a child sees: enough to start Python and find the
# package, never the tokens, keys and passwords the API holds (a decoder exploited by an
# upload would find none of them).
_ENVIRONMENT = (
    "PATH",
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "MALLOC_ARENA_MAX",
)
# The folder a child's temporary files go to (its TMPDIR), when the caller runs a job
# that has one (`workdir.WorkDir.job` sets it): removed with the job, so nothing a
# decoder leaves outlives it. Unset: the caller's TMPDIR, if any.
temp_dir: ContextVar[Path | None] = ContextVar("imageblur_sandbox_temp_dir", default=None)
# What a child may run: module -> functions, fixed here (never from configuration).
_TARGETS = {"imageblur.imaging": {"decode_check"}, "imageblur.sandbox": {"own_limits"}}


class LimitExceededError(Exception):
    """The child passed its CPU, memory or wall-clock limit, or died; the message says
    which."""


def run(target: str, data: bytes, *args: str, cpu_s: int, memory_bytes: int, wall_s: float) -> Any:
    """`module:function(data, *args)` in a child limited to `cpu_s` CPU seconds and
    `memory_bytes` of address space above what its imports take; its JSON return value.
    Raises `LimitExceededError` past a limit."""
    module, _, function = target.partition(":")
    if function not in _TARGETS.get(module, ()):
        raise ValueError(f"not a sandbox target: {target}")
    cmd = [sys.executable, "-m", "imageblur.sandbox", target, str(cpu_s), str(memory_bytes), *args]
    env = {name: os.environ[name] for name in _ENVIRONMENT if name in os.environ}
    folder = temp_dir.get()
    if folder is not None:
        env["TMPDIR"] = str(folder)
    child = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        out, err = child.communicate(data, timeout=wall_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise LimitExceededError(f"it took longer than {wall_s:.0f} s") from None
    if child.returncode != 0:
        raise LimitExceededError(_death(child.returncode, cpu_s, memory_bytes, err))
    answer = json.loads(out)
    return answer["result"]


def _death(code: int, cpu_s: int, memory_bytes: int, err: bytes) -> str:
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        return f"it took more than {cpu_s} s of CPU"
    if code == _OUT_OF_MEMORY:
        return f"it needed more than {memory_bytes >> 20} MB"
    tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
    return f"the decoder failed (exit code {code}: {tail[0][:200]})"


_OUT_OF_MEMORY = 3


def _main(argv: list[str]) -> int:
    target, cpu_s, memory_bytes, *args = argv
    resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_s), int(cpu_s) + 1))
    module, _, function = target.partition(":")
    if function not in _TARGETS.get(module, ()):
        return 2
    call = getattr(importlib.import_module(module), function)
    # After the imports, whose libraries map much address space they never touch.
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = _address_space() + int(memory_bytes)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    data = sys.stdin.buffer.read()
    try:
        result = call(data, *args)
    except MemoryError:
        return _OUT_OF_MEMORY
    sys.stdout.write(json.dumps({"result": result}))
    return 0


def own_limits(data: bytes) -> dict[str, Any]:
    """A child's limits as it sees them, the bytes it was given and the names of its
    environment (for the tests)."""
    return {
        "environment": sorted(os.environ),
        "cpu_s": resource.getrlimit(resource.RLIMIT_CPU)[0],
        "address_space": resource.getrlimit(resource.RLIMIT_AS)[0],
        "address_space_used": _address_space(),
        "bytes": len(data),
    }


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
