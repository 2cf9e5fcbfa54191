"""Give the memory of a large message back to the system once the message is gone.

glibc's malloc serves large blocks with mmap() and returns them to the system on free(),
but its threshold for doing so is dynamic: after a large block is freed, the threshold
rises to that block's size (up to 32 MB on 64-bit), and from then on blocks of a message's
size come from the heap, which keeps the memory after free() (``mallopt(3)``, M_MMAP_THRESHOLD).
A gateway that relayed one 16 MB bounce would keep tens of megabytes for good. Setting the
threshold explicitly turns the dynamic adjustment off: every block of :data:`MMAP_THRESHOLD`
or more is mapped on its own and unmapped when freed. Smaller blocks (ordinary mail, the
reader's chunks) are unaffected.

Elsewhere (musl, macOS) this does nothing; their allocators make their own choices.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

#: mallopt() parameter number of M_MMAP_THRESHOLD in glibc's malloc.h.
M_MMAP_THRESHOLD = -3
#: Blocks from this size up are mapped on their own (glibc's default starts at 128 KiB).
MMAP_THRESHOLD = 1024 * 1024


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold (call once per process, before serving); True if it was set."""
    try:
        # The symbols the process already has (dlopen(NULL)): libc's, without the subprocess
        # that ctypes.util.find_library() would start.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no libc with mallopt (not Linux/glibc)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD) was refused; large blocks stay with malloc's defaults")
    return done
