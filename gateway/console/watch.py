"""Counting the mail relayed to refusing recipients: the evidence that a problem went quiet.

A pipeline step (``after_relay``, once the next hop has answered). Ordinary mail is never
parsed: each recipient the next hop accepted is lower-cased and looked up in a set of known
refusing recipients (those with an incident in the last :data:`WINDOW`, refreshed from the
database every :data:`REFRESH_EVERY` seconds and extended at once by every family bounce this
process relays). A family bounce restarts its recipients' counts at its own time.

Counts are kept in memory and written every :data:`FLUSH_EVERY` seconds as one UPSERT batch
(:func:`storage.problems.record_traffic`) on the recorder's database thread, so they never
compete with incident writes. They are evidence for the console, not mail: when the database is
down they wait for the next flush (at most :data:`MAX_PENDING` recipients), and a crash loses
at most one interval of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Engine

from gateway.pipeline import Processed
from gateway.relay import Reply
from gateway.transaction import MessageContext
from storage.db import make_engine
from storage.incidents import normalise_address
from storage.models import RecipientTraffic
from storage.problems import TrafficCount, record_traffic, refusing_recipients

log = logging.getLogger(__name__)

FLUSH_EVERY: Final = 5.0
REFRESH_EVERY: Final = 300.0
WINDOW: Final = timedelta(days=365)
#: Bounds the watch list and the counts waiting for the database (memory per process).
MAX_KNOWN: Final = 100_000
MAX_PENDING: Final = 100_000
#: The longest address recipient_traffic keeps (its column's length).
MAX_ADDRESS: Final[int] = getattr(RecipientTraffic.__table__.c.recipient.type, "length", None) or 320
#: At stop, how long the call in progress and the last flush may take (the recorder drains after).
STOP_TIMEOUT: Final = 3.0

#: Runs a blocking call on the recorder's database thread (``Recorder.call``).
DbRunner = Callable[..., Awaitable[Any]]


class TrafficWatch:
    def __init__(
        self, database_url: str, run: DbRunner, available: Callable[[], bool] = lambda: True
    ) -> None:
        self.database_url = database_url
        self._run = run
        #: False while the recorder finds the database down: nothing is sent to its thread then, so
        #: these counts never hold up its recovery and journal replay.
        self._available = available
        self.known: set[str] = set()
        self._resets: dict[str, datetime] = {}
        self._counts: dict[str, TrafficCount] = {}
        self._engine: Engine | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # -- the pipeline step -----------------------------------------------------------------------

    async def before_relay(self, ctx: MessageContext, message: Processed) -> None:
        return None

    async def after_relay(self, ctx: MessageContext, message: Processed, reply: Reply) -> None:
        if reply.transient:
            return
        report = message.report
        if report is not None and report.is_bounce:
            # A bounce goes back to our own sender: it is not mail to the refusing recipient.
            for recipient in report.family:
                address = normalise_address(recipient.recipient)
                # Only what the table can hold (a value PostgreSQL refuses would fail every later
                # batch); the incident itself stores the address cut to the same length.
                if not address or len(address) > MAX_ADDRESS or not address.isprintable():
                    continue
                if address in self.known or len(self.known) < MAX_KNOWN:
                    self.known.add(address)
                    self._resets[address] = ctx.received_at
                    self._counts.pop(address, None)
            return
        if not reply.positive or not self.known:
            return
        for rcpt in ctx.rcpt_tos:
            address = rcpt.strip("<>").lower()
            if address not in self.known:
                continue
            count = self._counts.get(address)
            if count is None:
                if len(self._counts) < MAX_PENDING:
                    self._counts[address] = TrafficCount(1, ctx.received_at, ctx.received_at)
            else:
                count.relayed += 1
                count.last_at = ctx.received_at

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        # The watch list is loaded by the background task: a database that is slow or down at
        # start does not hold up the gateway.
        self._engine = await asyncio.to_thread(make_engine, self.database_url)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="bouncegw-traffic-watch")

    async def stop(self) -> None:
        """Write what was counted, then close. The task is asked to stop, not cancelled: a call
        already on the database thread finishes before the engine is closed under it."""
        if self._task is not None:
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT)
            except TimeoutError:
                log.debug("relayed-mail counts not written at stop: the database did not answer")
                return  # the call still running keeps its connection; the engine goes with the process
            self._task = None
        if self._engine is not None:
            await asyncio.to_thread(self._engine.dispose)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_refresh = loop.time()
        while not self._stopping.is_set():
            if loop.time() >= next_refresh and await self.refresh():
                next_refresh = loop.time() + REFRESH_EVERY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), FLUSH_EVERY)
            await self.flush()

    async def refresh(self) -> bool:
        """Reload the watch list from the database; False (the current one kept) if it cannot."""
        if self._engine is None or not self._available():
            return False
        try:
            since = datetime.now(UTC) - WINDOW
            found = await self._run(refusing_recipients, self._engine, since=since, limit=MAX_KNOWN)
        except Exception as exc:
            log.debug("refusing recipients not refreshed: %r", exc)
            return False
        # A bounce relayed since the last flush (also while the query ran) waits in self._resets.
        self.known = found | set(self._resets)
        return True

    async def flush(self) -> None:
        """Write the counts gathered since the last flush; on failure keep them for the next."""
        if self._engine is None or not (self._resets or self._counts) or not self._available():
            return
        resets, counts = self._resets, self._counts
        self._resets, self._counts = {}, {}
        try:
            await self._run(record_traffic, self._engine, resets, counts)
        except Exception as exc:
            log.debug("relayed-mail counts not written yet: %r", exc)
            self._merge_back(resets, counts)

    def _merge_back(self, resets: dict[str, datetime], counts: dict[str, TrafficCount]) -> None:
        for address, at in resets.items():
            if address not in self._resets:
                self._resets[address] = at
                # Counts gathered after this reset (since the failed flush) stay as they are.
        for address, count in counts.items():
            if address in self._resets and address not in resets:
                continue  # a newer bounce restarted the count meanwhile
            newer = self._counts.get(address)
            if newer is None:
                if len(self._counts) < MAX_PENDING:
                    self._counts[address] = count
            else:
                newer.relayed += count.relayed
                newer.first_at = count.first_at
