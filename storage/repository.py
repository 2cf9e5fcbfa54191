"""The synchronous incident repository that the recorder, the CLI and the API use.

Everything here blocks: the asyncio side calls it from worker threads (``Recorder`` through its own
executor, the API through FastAPI's thread pool).

- ``Repository(engine)`` / ``Repository.from_url(url)``; ``close()``.
- ``record(records) -> int``: inserts, skipping any whose fingerprint (or id) is already stored,
  in one transaction; returns how many were new. Safe to repeat (journal replay, retries).
- ``get(id) -> IncidentRecord | None``.
- ``query(filters, *, limit, cursor=None) -> Page``: newest first; ``Page.next_cursor`` continues.
- ``iterate(filters, *, page_size) -> Iterator[IncidentRecord]`` and ``count(filters) -> int``.
- ``stats(by, filters) -> list[StatRow]`` with ``by`` one of :data:`STAT_KEYS`.
- ``purge(before, *, chunk, progress) -> int``: deletes incidents recorded before ``before``
  (``purge_chunk`` does one short transaction of it); ``ping()`` raises unless the database answers.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Dialect, Engine, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session
from ulid import ULID

from storage.db import make_engine
from storage.incidents import FIELD_NAMES, IncidentRecord
from storage.models import Incident, RecipientTraffic


class InvalidCursor(ValueError):
    """The pagination cursor is not one this API handed out."""


@dataclasses.dataclass(frozen=True, slots=True)
class IncidentFilter:
    """Filters shared by the CLI and the API; None means "any"."""

    since: datetime | None = None
    until: datetime | None = None
    recipient: str | None = None  # failed recipient, exact (case-insensitive)
    domain: str | None = None  # failed recipient's domain
    sender: str | None = None  # sender address, or a bare domain for every sender there
    code: str | None = None  # enhanced status code, e.g. 5.7.133
    variant: str | None = None
    instance: str | None = None  # the gateway instance that recorded it (settings.instance)
    source: str | None = None  # "relay" or "scan" (storage.incidents.SOURCES)

    def clauses(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.since is not None:
            where.append(Incident.recorded_at >= self.since)
        if self.until is not None:
            where.append(Incident.recorded_at < self.until)
        if self.recipient:
            where.append(Incident.failed_recipient == self.recipient.strip().lower())
        if self.domain:
            where.append(Incident.recipient_domain == self.domain.strip().lower().lstrip("@"))
        if self.sender:
            sender = self.sender.strip().lower()
            if "@" in sender.lstrip("@"):
                where.append(Incident.sender == sender)
            else:
                where.append(Incident.sender_domain == sender.lstrip("@"))
        if self.code:
            where.append(Incident.status == self.code.strip())
        if self.variant:
            where.append(Incident.variant == self.variant.strip())
        if self.instance:
            where.append(Incident.instance == self.instance.strip())
        if self.source:
            where.append(Incident.source == self.source.strip())
        return where


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    items: list[IncidentRecord]
    next_cursor: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class StatRow:
    key: str | None
    count: int
    first_seen: datetime
    last_seen: datetime


#: ``stats --by`` keys and the column each groups on (day: the UTC calendar day).
STAT_KEYS: dict[str, Callable[[], ColumnElement[Any] | InstrumentedAttribute[Any]]] = {
    "day": lambda: func.date(Incident.recorded_at),
    "recipient": lambda: Incident.failed_recipient,
    "domain": lambda: Incident.recipient_domain,
    "variant": lambda: Incident.variant,
    "sender-domain": lambda: Incident.sender_domain,
    "instance": lambda: Incident.instance,
}


#: Column length limits: a value that does not fit is cut rather than failing the whole batch
#: (a batch that can never be inserted would sit in the journal forever).
_MAX_LENGTHS: dict[str, int] = {
    column.name: length
    for column in Incident.__table__.columns
    if (length := getattr(column.type, "length", None))
}


@dataclasses.dataclass(frozen=True, slots=True)
class _InsertPlan:
    """``INSERT INTO incidents ... ON CONFLICT DO NOTHING`` compiled once for a dialect.

    SQLAlchemy 2.0 never caches the compilation of its dialect-specific ``insert()`` (the
    PostgreSQL and SQLite ``Insert`` set ``inherit_cache = False``: ON CONFLICT is not part of the
    cache key), so executing a fresh ``insert(...).on_conflict_do_nothing()`` compiled it again on
    every call. The plan keeps the SQL and what turns a record into the driver's parameters.
    """

    sql: str
    #: True: parameters are tuples in ``names`` order (sqlite3's qmark); False: dicts (psycopg).
    positional: bool
    #: The bind parameter names (= IncidentRecord fields), in the order of the SQL.
    names: tuple[str, ...]
    #: Reads those fields of a record in one call (dataclasses.asdict deep-copies: far slower).
    read: Callable[[IncidentRecord], tuple[Any, ...]]
    #: Each parameter's column length limit (None: none); see :data:`_MAX_LENGTHS`.
    limits: tuple[int | None, ...]
    #: The type conversions SQLAlchemy would apply (UTCDateTime; on SQLite datetime-as-text and
    #: Boolean): (parameter index, processor).
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]

    @classmethod
    def compile(cls, dialect: Dialect) -> _InsertPlan:
        insert_fn: Any = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect.name]
        # ON CONFLICT DO NOTHING with no target covers both the fingerprint and the id.
        compiled = insert_fn(Incident).on_conflict_do_nothing().compile(dialect=dialect)
        names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.params)
        if sorted(names) != sorted(FIELD_NAMES):
            raise RuntimeError(f"the INSERT's parameters {names} are not the IncidentRecord fields")
        columns = Incident.__table__.columns
        processors = [
            (i, processor)
            for i, name in enumerate(names)
            if (processor := columns[name].type.dialect_impl(dialect).bind_processor(dialect))
        ]
        return cls(
            sql=compiled.string,
            positional=compiled.positional,
            names=names,
            read=operator.attrgetter(*names),
            limits=tuple(_MAX_LENGTHS.get(name) for name in names),
            processors=tuple(processors),
        )

    def parameters(self, record: IncidentRecord) -> tuple[Any, ...] | dict[str, Any]:
        # PostgreSQL text cannot hold NUL; SMTP and MIME text should never carry one anyway.
        # s[:None] is all of s; replace() and slicing return s itself when nothing changes.
        row = [
            value.replace("\x00", "")[:limit] if isinstance(value, str) else value
            for value, limit in zip(self.read(record), self.limits, strict=True)
        ]
        for i, processor in self.processors:
            row[i] = processor(row[i])
        return tuple(row) if self.positional else dict(zip(self.names, row, strict=True))


def _to_record(row: Incident) -> IncidentRecord:
    return IncidentRecord(**{name: getattr(row, name) for name in FIELD_NAMES})


def check_cursor(cursor: str) -> str:
    """A cursor is the last id of the previous page (a ULID); anything else is refused."""
    try:
        return str(ULID.from_str(cursor))
    except ValueError:
        raise InvalidCursor(f"invalid cursor {cursor!r}: pass next_cursor from a previous page") from None


class Repository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert_plan: _InsertPlan | None = None

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> Repository:
        return cls(make_engine(url, **engine_kwargs))

    def close(self) -> None:
        self.engine.dispose()

    # -- writing ---------------------------------------------------------------------------------

    def record(self, records: Sequence[IncidentRecord]) -> int:
        """Insert ``records`` in one transaction, skipping duplicates; return how many were new."""
        if not records:
            return 0
        with self.engine.begin() as conn:
            plan = self._insert_plan
            if plan is None:  # compiled once the dialect knows its server (first connection)
                plan = self._insert_plan = _InsertPlan.compile(conn.dialect)
            # executemany: the statement runs once per record, so a replayed journal line or an
            # upstream retry (same fingerprint or id), even one repeated within ``records``, is
            # skipped, and rowcount (summed over the records by sqlite3 and by psycopg 3) counts
            # only the rows that went in.
            result = conn.exec_driver_sql(plan.sql, [plan.parameters(r) for r in records])
            return int(result.rowcount)

    def purge(
        self, before: datetime, *, chunk: int = 5000, progress: Callable[[int], None] | None = None
    ) -> int:
        """Delete incidents recorded before ``before`` in chunks (short transactions), then the
        relay's counts that no incident needs any more (:meth:`purge_traffic`); return how many
        incidents went."""
        total = 0
        while True:
            deleted = self.purge_chunk(before, chunk)
            total += deleted
            if progress is not None and deleted:
                progress(deleted)
            if deleted < chunk:
                self.purge_traffic(before)
                return total

    def purge_chunk(self, before: datetime, chunk: int) -> int:
        """Delete at most ``chunk`` incidents recorded before ``before``; return how many."""
        with self.engine.begin() as conn:
            # One statement: SQLite never has to upgrade a read lock to a write lock.
            ids = (
                select(Incident.id)
                .where(Incident.recorded_at < before)
                .order_by(Incident.id)
                .limit(chunk)
                .scalar_subquery()
            )
            return int(conn.execute(delete(Incident).where(Incident.id.in_(ids))).rowcount)

    def purge_traffic(self, before: datetime) -> int:
        """Forget the relay's counts (``recipient_traffic``) for recipients whose last bounce came
        before ``before`` and that no incident names any more; return how many.

        The counts name the recipient, so retention covers them too once the incidents that made
        the recipient worth counting are gone (the console shows counts only beside incidents).
        A recipient still named by an incident keeps its count, however old its last bounce.
        """
        named = select(Incident.failed_recipient).where(
            Incident.failed_recipient == RecipientTraffic.recipient
        )
        stmt = delete(RecipientTraffic).where(RecipientTraffic.since < before, ~named.exists())
        with self.engine.begin() as conn:
            return int(conn.execute(stmt).rowcount)

    def ping(self) -> None:
        """Raise unless the database answers."""
        with self.engine.connect() as conn:
            conn.execute(select(1))

    # -- reading ---------------------------------------------------------------------------------

    def get(self, incident_id: str) -> IncidentRecord | None:
        with Session(self.engine) as session:
            row = session.get(Incident, incident_id)
            return _to_record(row) if row is not None else None

    def query(self, filters: IncidentFilter, *, limit: int, cursor: str | None = None) -> Page:
        """Newest first; at most ``limit`` items; ``cursor`` is a previous page's ``next_cursor``."""
        stmt = select(Incident).where(*filters.clauses()).order_by(Incident.id.desc()).limit(limit + 1)
        if cursor is not None:
            stmt = stmt.where(Incident.id < check_cursor(cursor))
        with Session(self.engine) as session:
            rows = list(session.scalars(stmt))
        items = [_to_record(r) for r in rows[:limit]]
        next_cursor = items[-1].id if len(rows) > limit and items else None
        return Page(items=items, next_cursor=next_cursor)

    def iterate(
        self, filters: IncidentFilter, *, limit: int | None = None, page_size: int = 1000
    ) -> Iterator[IncidentRecord]:
        """Every matching incident, newest first, a page at a time (exports)."""
        cursor: str | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            size = page_size if remaining is None else min(page_size, remaining)
            page = self.query(filters, limit=size, cursor=cursor)
            yield from page.items
            if remaining is not None:
                remaining -= len(page.items)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def count(self, filters: IncidentFilter) -> int:
        with Session(self.engine) as session:
            return int(
                session.scalar(select(func.count()).select_from(Incident).where(*filters.clauses())) or 0
            )

    def stats(self, by: str, filters: IncidentFilter) -> list[StatRow]:
        """Counts, first and last seen per ``by`` key (days in order, otherwise biggest first)."""
        if by not in STAT_KEYS:
            raise ValueError(f"unknown stats key {by!r} (one of: {', '.join(STAT_KEYS)})")
        key = STAT_KEYS[by]().label("key")
        n = func.count().label("n")
        stmt = (
            select(key, n, func.min(Incident.recorded_at), func.max(Incident.recorded_at))
            .where(*filters.clauses())
            .group_by(key)
        )
        stmt = stmt.order_by(key) if by == "day" else stmt.order_by(n.desc(), key)
        with Session(self.engine) as session:
            rows = session.execute(stmt).all()
        return [
            StatRow(key=None if k is None else str(k), count=int(c), first_seen=first, last_seen=last)
            for k, c, first, last in rows
        ]
