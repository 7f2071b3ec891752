"""How the process's memory is handed back: freed big buffers go back to the system at once.

glibc's malloc serves a buffer of 128 KiB or more with mmap, but raises that threshold to the size of each such
buffer freed (up to 32 MiB), after which the 1 MiB chunks export passes between its threads come from the heap
and, freed, mostly stay in the process (measured: ~30 MB of a cold run's peak). A fixed threshold keeps them
mapped and unmapped, and turns the dynamic raising off.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt's parameter (malloc.h)
THRESHOLD = 1 << 20
_done = False


def return_freed_buffers() -> bool:
    """Fix glibc's mmap threshold at 1 MiB, once per process; False where there is no glibc (nothing changes)."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))
    except (OSError, AttributeError):
        return False
    return _done
