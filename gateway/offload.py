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
- :func:`for_parsing` and :func:`for_annotating` (a message the prefilter says
  may be a family bounce) run inline only for a small bounce, in a worker thread
  otherwise. What parsing costs is known only once it is done, but it is bounded
  by the size: the worst kind measured (a text bounce listing a recipient per
  line) parses at about 0.5 ms per KiB, so a bounce of :data:`PARSE_INLINE_LIMIT`
  holds the loop for about 8 ms at most (the prefilter's worst case at
  :data:`INLINE_LIMIT` is about 10 ms). Annotating depends on the recipients it
  explains and on the size of the parts it edits: with at most
  :data:`ANNOTATE_INLINE_ITEMS` recipients and :data:`ANNOTATE_INLINE_LIMIT`
  octets it measured under 1 ms, about 4 ms the first time a new shape of block
  is rendered (``gateway.explain.render``). The thread hop is dearer than its own
  40 us: the worker thread and the event loop then contend for the GIL while
  other sessions are served; the family path took about 10 % more CPU per bounce
  with every bounce parsed and annotated in a thread (``make bench``).
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
#: Bounces larger than this are parsed in a worker thread (see the module's text).
PARSE_INLINE_LIMIT = 16 * 1024
#: Bounces larger than this, or with more family recipients than that, are annotated in a worker thread.
ANNOTATE_INLINE_LIMIT = 64 * 1024
ANNOTATE_INLINE_ITEMS = 2


async def by_size(size: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)``: inline for a small message, in a worker thread for a large one."""
    return await by_count(size, 0, fn, *args, **kwargs)


async def by_count(size: int, items: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """As :func:`by_size`, and in a worker thread too when there are many ``items``."""
    if size > INLINE_LIMIT or items > INLINE_ITEMS:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


async def for_parsing(size: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` parsing a bounce of ``size`` octets: inline if small, else in a thread."""
    if size > PARSE_INLINE_LIMIT:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


async def for_annotating(
    size: int, items: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """``fn(*args, **kwargs)`` annotating a bounce of ``size`` octets for ``items`` recipients:
    inline if small with few recipients, else in a worker thread."""
    if size > ANNOTATE_INLINE_LIMIT or items > ANNOTATE_INLINE_ITEMS:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)
