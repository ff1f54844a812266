"""glibc's allocator, told to keep few arenas in the long-running processes.

glibc gives a thread that allocates while another holds an arena an arena of its own (up
to 8 per core), and memory freed inside an arena mostly stays there. A decode allocates
hundreds of MB (a 50 MP progressive 4:4:4 JPEG: about 480 MB), and the API's decodes run
on whichever of its pool threads is free, so each arena ends up holding a decode's worth.
Measured with 16 uploads of 50 MP JPEGs in hand (bench/decode_limits.py, 2026-12-07): the
API's peak RSS was 3,075 MB with glibc's default and 994 MB with 2 arenas. The same as
MALLOC_ARENA_MAX=2, also where nobody sets the variable; a MALLOC_ARENA_MAX that is set
wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ARENAS = 2
_M_ARENA_MAX = -8  # from glibc's malloc.h


def limit_arenas(count: int = ARENAS) -> bool:
    """Cap glibc's arenas at `count`; False where that is not possible (another C
    library) or MALLOC_ARENA_MAX decides. Call before the process starts threads."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, count))
