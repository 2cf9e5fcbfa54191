"""Keep the event loop free of work that can take long (ARCHITECTURE.md, invariant 4).

Parsing, annotating, hashing, checking and dot-stuffing a message cost time in
proportion to its size; for a 30 MB bounce that would stall every other session
on the worker's event loop. Size is not the only measure, though: a 50 KB bounce
can list a thousand recipients, or nest parts thousands deep, and cost more than
an ordinary 30 MB message. So:

- :func:`by_size` / :func:`by_count` (hashing, dot-stuffing, the prefilter, building incident
  records: work that grows with the octets or with a count the caller knows)
  runs in a worker thread above :data:`INLINE_LIMIT` octets or
  :data:`INLINE_ITEMS` items, inline below, where the thread hop would cost
  more than the work;
- :func:`off_loop` (parsing and annotating a message the prefilter says may be
  a family bounce) always runs in a worker thread: what such a message costs is
  known only once it is parsed. The hop costs about 40 us of CPU, against about
  4 ms for the smallest family bounce (``make bench``), and ordinary mail never
  gets here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: Messages larger than this are processed in a worker thread.
INLINE_LIMIT = 256 * 1024
#: Work over more items than this (recipients of one bounce) goes to a worker thread.
INLINE_ITEMS = 100


async def by_size(size: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)``: inline for a small message, in a worker thread for a large one."""
    return await by_count(size, 0, fn, *args, **kwargs)


async def by_count(size: int, items: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """As :func:`by_size`, and in a worker thread too when there are many ``items``."""
    if size > INLINE_LIMIT or items > INLINE_ITEMS:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


async def off_loop(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in a worker thread, whatever the size of its input."""
    return await asyncio.to_thread(fn, *args, **kwargs)
