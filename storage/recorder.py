"""The asyncio front end of incident storage: what the relay pipeline awaits.

Interface::

    recorder = Recorder(database_url, journal_path, ..., events=observer)
    await recorder.start()          # opens the journal, replays what a previous run left
    await recorder.submit(records)  # returns once the records are durable
    await recorder.stop(drain)      # writes everything submitted so far, then stops

``submit`` never blocks the event loop: one writer task groups whatever has been submitted while
the previous write ran (group commit, at most ``batch_size`` incidents, optionally lingering
``batch_interval`` seconds) and hands the batch to a dedicated database thread. It returns when the
batch is committed, or, if the database fails or takes longer than ``db_timeout``, when the batch
has been appended to the journal and fsynced.

Outage policy:

- Database down or slow: batches go to the journal (``storage.journal``); mail keeps flowing.
  A background task retries the database and replays the journal when it answers; ``start()``
  replays leftovers from a previous run. Inserts are idempotent (unique fingerprint), so a batch
  that was both committed late and journalled, or a replay interrupted by a crash, is still
  stored exactly once.
- Backoff: after a failure the next attempt waits ``retry_interval``, doubled after each further
  failure up to ``retry_max_interval``, each wait jittered by +-:data:`RETRY_JITTER` so replicas
  that lost the database together do not hammer it together when it restarts. Nothing else
  (journal appends, new mail) triggers an attempt in between.
- Database down at start: ``start(unavailable=reason)`` (the caller could not check the schema)
  starts journaling at once; the first recovery that reaches the database checks (SQLite: creates
  or upgrades) the schema before replaying, and an out-of-date schema keeps it journaling with an
  error naming the fix.
- Stop: ``stop(drain)`` writes what is queued, then keeps trying to empty the journal into the
  database for up to ``drain`` seconds; whatever remains is named in one log line (count and
  path) and stays in the journal for the next process that opens it.
- Database down AND journal full (``journal_max_bytes``) or unwritable (disk full, I/O error):
  ``submit`` raises :class:`StorageUnavailable`. The relay should then answer the upstream with a
  4xx (e.g. ``451 4.3.0``) so the upstream keeps the bounce and retries: nothing is lost and the
  retry is deduplicated by the fingerprint.

Events (incidents stored, journalled, replayed or refused; database errors; recovery attempts;
what was left at stop) go to the ``events`` observer (:class:`RecorderEvents`), once each, as
they happen: the gateway's observer counts them in Prometheus, the default :class:`Tally` keeps
plain counts. State is read from attributes: ``db_available``, ``db_reason``, and the properties
``journal_backlog`` (incidents waiting) and ``journal_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future as ConcurrentFuture
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from storage.db import SchemaOutOfDate, check_schema, describe_error
from storage.incidents import IncidentRecord
from storage.journal import Journal, JournalFull, JournalLocked, sibling_journals, worker_index
from storage.repository import Repository

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How often retention purging runs (when retention_days is set) and its chunk size.
PURGE_EVERY = 3600.0
PURGE_CHUNK = 1000
#: Each wait between recovery attempts is its nominal value times a random factor in 1 +- this.
RETRY_JITTER = 0.2


def retry_delay(failures: int, first: float, cap: float, rng: random.Random | None = None) -> float:
    """The wait after ``failures`` consecutive failed attempts (1: the first failure).

    ``first * 2**(failures-1)``, capped at ``cap`` (never below ``first``), jittered.
    """
    nominal = min(max(cap, first), first * 2.0 ** min(max(failures - 1, 0), 60))
    return nominal * (1.0 + (rng or random).uniform(-RETRY_JITTER, RETRY_JITTER))


class StoragePath(enum.StrEnum):
    """Where the recorder put incidents (the label of ``bouncegw_storage_incidents_total``)."""

    DATABASE = "database"
    JOURNAL = "journal"
    REPLAYED = "replayed"  # from the journal into the database
    REJECTED = "rejected"  # neither database nor journal: the submitter got StorageUnavailable


class RecorderEvents(Protocol):
    """What the recorder reports as it happens, each event once."""

    def incidents(self, path: StoragePath, count: int) -> None:
        """``count`` incidents went to ``path``."""
        ...

    def database_error(self) -> None:
        """A database call failed or timed out (write, probe, replay, purge)."""
        ...

    def recovery_attempt(self) -> None:
        """The recorder tried to reach the database (and replay the journal)."""
        ...

    def stopped(self, left_in_journal: int) -> None:
        """The recorder stopped with ``left_in_journal`` incidents not yet in the database."""
        ...


@dataclasses.dataclass
class Tally:
    """:class:`RecorderEvents` as plain counts: the default, and what storage's own tests read."""

    stored: int = 0
    journaled: int = 0
    replayed: int = 0
    rejected: int = 0
    db_errors: int = 0
    db_attempts: int = 0
    left_at_stop: int | None = None

    def incidents(self, path: StoragePath, count: int) -> None:
        field = {
            StoragePath.DATABASE: "stored",
            StoragePath.JOURNAL: "journaled",
            StoragePath.REPLAYED: "replayed",
            StoragePath.REJECTED: "rejected",
        }[path]
        setattr(self, field, getattr(self, field) + count)

    def database_error(self) -> None:
        self.db_errors += 1

    def recovery_attempt(self) -> None:
        self.db_attempts += 1

    def stopped(self, left_in_journal: int) -> None:
        self.left_at_stop = left_in_journal


class StorageUnavailable(Exception):
    """Neither the database nor the journal could take the incidents: answer the upstream 4xx."""


_Item = tuple[list[IncidentRecord], "asyncio.Future[None]"]


class Recorder:
    def __init__(
        self,
        database_url: str,
        journal_path: Path,
        *,
        journal_max_bytes: int = 64 * 1024 * 1024,
        batch_size: int = 500,
        batch_interval: float = 0.0,
        db_timeout: float = 5.0,
        retry_interval: float = 5.0,
        retry_max_interval: float = 60.0,
        retention_days: int | None = None,
        workers: int = 1,
        events: RecorderEvents | None = None,
    ) -> None:
        self.database_url = database_url
        self.journal_path = Path(journal_path)
        self.journal_max_bytes = journal_max_bytes
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.db_timeout = db_timeout
        self.retry_interval = retry_interval
        self.retry_max_interval = retry_max_interval
        self.retention_days = retention_days
        #: Worker processes of this gateway run (``--workers``): the journals of workers 0..N-1 are
        #: owned by live siblings, never adopted (see :meth:`_adopt`).
        self.workers = workers
        self.events: RecorderEvents = events if events is not None else Tally()
        self.db_available = True
        #: Why the database is unavailable (one line), None while it is available.
        self.db_reason: str | None = None
        self._journal: Journal | None = None
        self._repo: Repository | None = None
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._kick = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        # One thread each: database calls are serialised (group commit), and a hung database call
        # never holds up journal appends.
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="bouncegw-db")
        self._io_thread = ThreadPoolExecutor(1, thread_name_prefix="bouncegw-journal")
        self._next_purge = 0.0
        # Set when the journal refused a write (full or disk error); cleared when it takes one again.
        self._journal_refused = False
        # Backoff state: consecutive failed attempts, and when the next attempt may run.
        self._failures = 0
        self._retry_at = 0.0
        # False until the schema was checked against a database that answered.
        self._schema_ready = True
        self._schema_problem = False

    @property
    def journal_backlog(self) -> int:
        return self._journal.backlog if self._journal else 0

    @property
    def journal_bytes(self) -> int:
        return self._journal.size_bytes if self._journal else 0

    def can_accept(self, incidents: int = 1) -> bool:
        """False when the database is down and the journal cannot take ``incidents`` more.

        Asked *before* a family bounce is relayed: once the next hop has it, a failed submit can
        no longer turn into a 4xx (that would duplicate the bounce). So "full" means "no room for
        this bounce's incidents", each assumed as long as the longest line the journal has held
        (also those in files left by an earlier run) and never shorter than
        :data:`~storage.journal.LINE_FLOOR`: the estimate errs towards a 4xx, never towards a
        relayed bounce whose incidents cannot be kept. A journal whose disk refused a write
        (ENOSPC, EIO) stays full until a replay or a successful append frees it.
        """
        if self.db_available:
            return True
        if self._journal is None or self._journal_refused:
            return False
        needed = incidents * self._journal.room_per_incident
        return self._journal.size_bytes + needed <= self.journal_max_bytes

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self, *, unavailable: str | None = None) -> None:
        """Open the journal and the database; replay a journal left by a previous run.

        ``unavailable``: the caller found the database down (this says why) and could not check
        the schema; journal until it answers, then check the schema before the first write.
        """
        self._journal = await self._io(Journal, self.journal_path, self.journal_max_bytes)
        self._repo = Repository.from_url(self.database_url)
        self._schema_ready = unavailable is None
        self.db_reason = unavailable
        if self._journal.backlog:
            log.info(
                "%d incidents in the journal %s from a previous run; writing them to the database",
                self._journal.backlog,
                self.journal_path,
            )
        if unavailable is None:
            await self._recover()
        else:
            self.db_available = False  # the caller has said so already: no second warning
            self._db_failed(None)
        self._tasks = [
            asyncio.create_task(self._writer(), name="bouncegw-recorder-writer"),
            asyncio.create_task(self._maintainer(), name="bouncegw-recorder-maintainer"),
        ]

    async def stop(self, drain: float = 0.0) -> None:
        """Write everything already submitted, then stop (the journal keeps what the DB did not take).

        With incidents in the journal, keep trying the database for up to ``drain`` seconds
        (attempts follow the backoff, the last one is cut short by the deadline); then log how
        many remain and where.
        """
        if not self._tasks:
            return
        await self._queue.put(None)
        await self._tasks[0]
        self._stopping = True
        self._kick.set()
        await self._tasks[1]
        self._tasks = []
        await self._drain(drain)
        self._db_thread.shutdown(wait=False, cancel_futures=True)
        self._io_thread.shutdown(wait=True)
        if self._repo is not None:
            # The database thread may still be inside a call that timed out (a locked SQLite waits
            # out its busy timeout). Dispose of the engine after that call, so its connection is
            # closed, not dropped (Python 3.13 warns about unclosed sqlite3 connections); wait for
            # that at most db_timeout, as for any database call.
            repo, db_thread = self._repo, self._db_thread

            def close() -> None:
                db_thread.shutdown(wait=True)
                repo.close()

            closer = threading.Thread(target=close, name="bouncegw-recorder-close", daemon=True)
            closer.start()
            await asyncio.to_thread(closer.join, self.db_timeout)
        if self._journal is not None:
            self._journal.close()

    async def submit(self, records: Sequence[IncidentRecord]) -> None:
        """Return once ``records`` are durable; raise :class:`StorageUnavailable` if they cannot be."""
        if not records:
            return
        if not self._tasks or self._stopping:
            raise RuntimeError("Recorder.submit() called while the recorder is not running")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((list(records), done))
        await done

    # -- the writer ------------------------------------------------------------------------------

    async def _writer(self) -> None:
        stop = False
        while not stop:
            item = await self._queue.get()
            if item is None:
                return
            batch = [item]
            count = len(item[0])
            deadline = time.monotonic() + self.batch_interval
            while count < self.batch_size:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                count += len(nxt[0])
            await self._write(batch)

    async def _write(self, batch: list[_Item]) -> None:
        records = [r for recs, _ in batch for r in recs]
        assert self._repo is not None and self._journal is not None
        error: BaseException | None = None
        if self.db_available:
            try:
                stored = await self._db(self._repo.record, records)
                self.events.incidents(StoragePath.DATABASE, stored)
            except Exception as exc:
                self._db_failed(exc)
            else:
                _resolve(batch, None)
                return
        try:
            await self._io(self._journal.append, records)
            self._journal_refused = False
            self.events.incidents(StoragePath.JOURNAL, len(records))
        except (JournalFull, OSError) as exc:  # OSError: never let the writer task die of a disk error
            self._journal_refused = True
            self.events.incidents(StoragePath.REJECTED, len(records))
            log.error("incidents refused: database unavailable and %s", exc)
            error = StorageUnavailable(f"database unavailable and {exc}")
        _resolve(batch, error)

    def _db_failed(self, exc: BaseException | None) -> None:
        """Switch to (or stay on) the journal and schedule the next attempt after the backoff."""
        reason = self.db_reason or "database unavailable"
        schema = isinstance(exc, SchemaOutOfDate)
        if exc is not None:
            self.events.database_error()
            reason = _reason(self.database_url, exc)
        if self.db_available or schema != self._schema_problem:
            # Once per outage, and again when it turns from "no answer" into "wrong schema" (the
            # driver's wording of a refused connection varies from attempt to attempt).
            log.warning("%s; incidents go to the journal %s meanwhile", reason, self.journal_path)
        self._schema_problem = schema
        self.db_reason = reason
        self.db_available = False
        self._failures += 1
        self._retry_at = time.monotonic() + retry_delay(
            self._failures, self.retry_interval, self.retry_max_interval
        )

    # -- recovery and retention ------------------------------------------------------------------

    async def _maintainer(self) -> None:
        while True:
            # Until the next attempt the backoff allows, else the usual interval (backlog, purge).
            wait = self.retry_interval
            if not self.db_available:
                wait = max(0.0, self._retry_at - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), wait)
            self._kick.clear()
            if self._stopping:
                return
            if (not self.db_available or self.journal_backlog) and time.monotonic() >= self._retry_at:
                await self._recover()
            if self.retention_days and self.db_available and time.monotonic() >= self._next_purge:
                await self._purge()

    async def _recover(self) -> None:
        """Probe the database; when it answers, replay the journal (idempotently)."""
        assert self._repo is not None and self._journal is not None
        self.events.recovery_attempt()
        try:
            await self._db(self._repo.ping)
            if not self._schema_ready:
                await self._db(check_schema, self.database_url)
                self._schema_ready = True
            while (path := await self._io(self._journal.take)) is not None:
                records = await self._io(Journal.read, path)
                for start in range(0, len(records), self.batch_size):
                    chunk = records[start : start + self.batch_size]
                    replayed = await self._db(self._repo.record, chunk)
                    self.events.incidents(StoragePath.REPLAYED, replayed)
                await self._io(self._journal.done, path)
                self._journal_refused = False  # the replayed file's space is free again
        except Exception as exc:
            self._db_failed(exc)
            return
        if not self.db_available:
            log.info("database available again; journal replayed")
        self.db_available = True
        self.db_reason = None
        self._schema_problem = False
        self._failures = 0
        self._retry_at = 0.0
        await self._adopt()

    async def _drain(self, budget: float) -> None:
        """At stop: try to empty the journal within ``budget`` seconds; say what is left and where."""
        deadline = time.monotonic() + budget
        while self.journal_backlog and (remaining := deadline - time.monotonic()) > 0:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, remaining))
                continue
            try:
                await asyncio.wait_for(self._recover(), remaining)
            except TimeoutError:
                break
        left = self.journal_backlog
        self.events.stopped(left)
        if left:
            log.error(
                "stopping with %d incidents not yet in the database (%s); they stay in the journal "
                "%s and are written by the next gateway started on it, or by "
                "`bouncegw db replay-journal %s`",
                left,
                self.db_reason or "database unavailable",
                self.journal_path,
                self.journal_path,
            )

    async def _adopt(self) -> None:
        """Replay sibling journals that no live process owns (workers of an earlier, larger run).

        With ``--workers N`` the journals ``.w0`` .. ``.w<N-1>`` belong to this run's workers, each
        of which replays its own. Taking one, even briefly, races with its worker's start: the
        worker would find its journal locked and could not start. So only journals of workers
        beyond this run's count (and the plain journal of a one-process run) are adopted.
        """
        assert self._repo is not None
        for path in await self._io(sibling_journals, self.journal_path):
            index = worker_index(path)
            if self.workers > 1 and index is not None and index < self.workers:
                continue  # a live sibling worker's own journal
            try:
                journal = await self._io(Journal, path, self.journal_max_bytes)
            except JournalLocked:
                continue  # a live worker owns it and replays it itself
            try:
                while (taken := await self._io(journal.take)) is not None:
                    records = await self._io(Journal.read, taken)
                    log.info("replaying %d incidents from %s", len(records), taken)
                    for start in range(0, len(records), self.batch_size):
                        chunk = records[start : start + self.batch_size]
                        replayed = await self._db(self._repo.record, chunk)
                        self.events.incidents(StoragePath.REPLAYED, replayed)
                    await self._io(journal.done, taken)
            except Exception as exc:
                self._db_failed(exc)
                return
            finally:
                journal.close()

    async def _purge(self) -> None:
        assert self._repo is not None and self.retention_days
        self._next_purge = time.monotonic() + PURGE_EVERY
        before = datetime.now(UTC) - timedelta(days=self.retention_days)
        try:
            # Chunk by chunk, so incident writes interleave with a long purge.
            while (n := await self._db(self._repo.purge_chunk, before, PURGE_CHUNK)) > 0:
                if n < PURGE_CHUNK or self._stopping:
                    break
            if not self._stopping:
                await self._db(self._repo.purge_traffic, before)
        except Exception as exc:
            self._db_failed(exc)

    # -- threads ---------------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in the database thread; give up waiting after ``db_timeout`` seconds."""
        future = self._db_thread.submit(fn, *args)
        # The call may still finish (even commit) after the timeout: the idempotent insert makes
        # the journalled copy harmless. Retrieve its outcome so nothing is reported as unhandled.
        future.add_done_callback(_consume)
        return await asyncio.wait_for(asyncio.wrap_future(future), self.db_timeout)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the database thread, after the writes queued there (same timeout)."""
        return await self._db(functools.partial(fn, *args, **kwargs))

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io_thread, fn, *args)


def _reason(url: str, exc: BaseException) -> str:
    if isinstance(exc, SchemaOutOfDate):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "the database did not answer within storage.db_timeout"
    return describe_error(url, exc)


def _consume(future: ConcurrentFuture[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _resolve(batch: list[_Item], error: BaseException | None) -> None:
    for _, done in batch:
        if done.done():  # the submitter was cancelled (its session went away); nothing to tell
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
