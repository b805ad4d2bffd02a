"""Giving freed memory back to the operating system (glibc's allocator; elsewhere these do nothing).

The worker frees a batch's transient objects (records, events, Arrow columns) after every batch. glibc keeps
freed memory in its arenas, one per thread that allocated, so without this the resident set grows by the
largest batches' transients times the number of threads, on top of the long-lived state.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time

_M_ARENA_MAX = -8  # mallopt parameter (malloc.h)

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _mallopt = _libc.mallopt
    _malloc_trim = _libc.malloc_trim
except (OSError, AttributeError):  # not glibc
    _mallopt = _malloc_trim = None

_trimmed_at = 0.0


def limit_arenas(arenas: int = 2) -> None:
    """At most ``arenas`` malloc arenas (glibc's default is 8 per core): call before threads start."""
    if _mallopt is not None:
        _mallopt(_M_ARENA_MAX, arenas)


def give_back(every_s: float = 2.0) -> None:
    """Return the allocator's free memory to the OS, at most once per ``every_s`` (a few ms when there is some)."""
    global _trimmed_at
    now = time.monotonic()
    if _malloc_trim is not None and now - _trimmed_at >= every_s:
        _trimmed_at = now
        _malloc_trim(0)
