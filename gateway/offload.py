"""Keep the event loop free of work on large messages (architecture invariant 4).

Parsing, annotating, hashing, checking and dot-stuffing a message cost time in
proportion to its size; for a 30 MB bounce that would stall every other session
on the worker's event loop. Above :data:`INLINE_LIMIT` such work runs in a
worker thread; below it, the thread hop would cost more than the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: Messages larger than this are processed in a worker thread.
INLINE_LIMIT = 256 * 1024


async def by_size(size: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)``: inline for a small message, in a worker thread for a large one."""
    if size > INLINE_LIMIT:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)
