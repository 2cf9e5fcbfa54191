"""Queries behind the incident console: problems grouped per refusing recipient, trends, traffic.

Blocking, like :mod:`storage.repository`; the console calls them from FastAPI's thread pool.

- :func:`problems(engine, filters, *, sort, descending, state, limit, offset) <problems>` ->
  :class:`ProblemPage`: one row per (failed recipient, variant) with first and last seen, the
  number of bounces, the distinct senders affected, and the relay's evidence from
  ``recipient_traffic``: the messages relayed to the recipient since its last bounce. A row is
  *quiet* when at least one was relayed after the last bounce it shows, else *active*.
- :func:`daily_counts(engine, filters, recipients, since) <daily_counts>`: the per-row trend;
  :func:`trend(engine, filters) <trend>`: incidents per UTC day and variant;
  :func:`top_domains(engine, filters, limit) <top_domains>`: the domains refusing most.
- :func:`refusing_recipients(engine, *, since, limit) <refusing_recipients>`: the recipients with
  an incident since ``since`` (the relay's watch list).
- :func:`record_traffic(engine, resets, counts) <record_traffic>`: one UPSERT batch of the
  relay's counts (SQLite and PostgreSQL ``INSERT ... ON CONFLICT``).

The grouping query reads only ``ix_incidents_problems`` (migration 0004); ``tests/benchmarks``
times it on 100,000 incidents.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Literal, get_args

from sqlalchemy import Engine, Select, and_, case, desc, func, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite

from storage.incidents import domain_of
from storage.models import Incident, RecipientTraffic
from storage.repository import IncidentFilter

#: Columns the problems view sorts on (the URL's ``sort``).
SortKey = Literal["last_seen", "first_seen", "bounces", "senders", "recipient", "variant", "state"]
SORT_KEYS: Final[tuple[SortKey, ...]] = get_args(SortKey)
State = Literal["active", "quiet"]
STATES: Final[tuple[State, ...]] = get_args(State)


@dataclasses.dataclass(frozen=True, slots=True)
class ProblemRow:
    """One refusing recipient (and the kind of refusal) as the problems view shows it."""

    recipient: str | None
    variant: str | None
    first_seen: datetime
    last_seen: datetime
    bounces: int
    senders: int
    #: The newest incident of the group (the detail page's link).
    latest_id: str
    #: Messages relayed to the recipient since its last bounce (None: never counted).
    relayed_since: int | None
    last_relayed_at: datetime | None
    state: State

    @property
    def domain(self) -> str | None:
        # The stored recipient_domain is derived the same way (storage.incidents.build_incidents).
        return domain_of(self.recipient)


@dataclasses.dataclass(frozen=True, slots=True)
class ProblemPage:
    rows: list[ProblemRow]
    #: Groups matching the filters, all pages together.
    total: int


def _grouped(filters: IncidentFilter) -> Any:
    last_seen = func.max(Incident.recorded_at)
    return (
        select(
            Incident.failed_recipient.label("recipient"),
            Incident.variant.label("variant"),
            func.min(Incident.recorded_at).label("first_seen"),
            last_seen.label("last_seen"),
            func.count().label("bounces"),
            func.count(Incident.sender.distinct()).label("senders"),
            func.max(Incident.id).label("latest_id"),
        )
        .where(*filters.clauses())
        .group_by(Incident.failed_recipient, Incident.variant)
        .subquery("g")
    )


def problems_query(
    filters: IncidentFilter,
    *,
    sort: SortKey = "last_seen",
    descending: bool = True,
    state: State | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Select[Any]:
    """The statement behind :func:`problems` (also what the benchmark EXPLAINs)."""
    if sort not in SORT_KEYS:
        raise ValueError(f"unknown sort key {sort!r} (one of: {', '.join(SORT_KEYS)})")
    g = _grouped(filters)
    t = RecipientTraffic.__table__.alias("t")
    quiet = and_(t.c.relayed > 0, t.c.since >= g.c.last_seen)
    state_col = case((quiet, literal_column("'quiet'")), else_=literal_column("'active'")).label("state")
    total = func.count().over().label("total")
    stmt = select(
        g.c.recipient,
        g.c.variant,
        g.c.first_seen,
        g.c.last_seen,
        g.c.bounces,
        g.c.senders,
        g.c.latest_id,
        t.c.relayed,
        t.c.since,
        t.c.last_relayed_at,
        state_col,
        total,
    ).select_from(g.outerjoin(t, t.c.recipient == g.c.recipient))
    if state == "quiet":
        stmt = stmt.where(quiet)
    elif state == "active":
        stmt = stmt.where(~quiet | t.c.recipient.is_(None))
    key = state_col if sort == "state" else g.c[sort]
    ordered = [desc(key) if descending else key, g.c.recipient, g.c.variant]
    return stmt.order_by(*ordered).limit(limit).offset(offset)


def problems(
    engine: Engine,
    filters: IncidentFilter,
    *,
    sort: SortKey = "last_seen",
    descending: bool = True,
    state: State | None = None,
    limit: int = 50,
    offset: int = 0,
) -> ProblemPage:
    """One page of problems, sorted by ``sort`` (ties: recipient, variant)."""
    stmt = problems_query(filters, sort=sort, descending=descending, state=state, limit=limit, offset=offset)
    with engine.connect() as conn:
        result = conn.execute(stmt).all()
    rows = []
    for r in result:
        counted = r.relayed is not None and r.since is not None and r.since >= r.last_seen
        rows.append(
            ProblemRow(
                recipient=r.recipient,
                variant=r.variant,
                first_seen=r.first_seen,
                last_seen=r.last_seen,
                bounces=int(r.bounces),
                senders=int(r.senders),
                latest_id=r.latest_id,
                relayed_since=int(r.relayed) if counted else None,
                last_relayed_at=r.last_relayed_at if counted else None,
                state="quiet" if r.state == "quiet" else "active",
            )
        )
    return ProblemPage(rows=rows, total=int(result[0].total) if result else 0)


def iter_problems(
    engine: Engine,
    filters: IncidentFilter,
    *,
    sort: SortKey = "last_seen",
    descending: bool = True,
    state: State | None = None,
    page_size: int = 1000,
) -> Iterator[ProblemRow]:
    """Every problem matching the filters, in order, a page at a time (exports)."""
    offset = 0
    while True:
        page = problems(
            engine, filters, sort=sort, descending=descending, state=state, limit=page_size, offset=offset
        )
        yield from page.rows
        offset += len(page.rows)
        if len(page.rows) < page_size:
            return


@dataclasses.dataclass(frozen=True, slots=True)
class TrendPoint:
    day: str  # ISO date (UTC)
    variant: str | None
    count: int


def trend(engine: Engine, filters: IncidentFilter) -> list[TrendPoint]:
    """Incidents per UTC day and variant, oldest day first."""
    day = func.date(Incident.recorded_at).label("day")
    stmt = (
        select(day, Incident.variant, func.count())
        .where(*filters.clauses())
        .group_by(day, Incident.variant)
        .order_by(day, Incident.variant)
    )
    with engine.connect() as conn:
        return [TrendPoint(str(d), v, int(n)) for d, v, n in conn.execute(stmt)]


def daily_counts(
    engine: Engine, filters: IncidentFilter, recipients: Sequence[str], since: datetime
) -> dict[tuple[str, str | None], dict[str, int]]:
    """Incidents per UTC day since ``since`` for each of ``recipients`` (and variant): the
    problems view's per-row trend, for the rows of one page (the index serves each recipient)."""
    if not recipients:
        return {}
    day = func.date(Incident.recorded_at).label("day")
    stmt = (
        select(Incident.failed_recipient, Incident.variant, day, func.count())
        .where(
            *filters.clauses(),
            Incident.failed_recipient.in_(list(recipients)),
            Incident.recorded_at >= since,
        )
        .group_by(Incident.failed_recipient, Incident.variant, day)
    )
    out: dict[tuple[str, str | None], dict[str, int]] = {}
    with engine.connect() as conn:
        for recipient, variant, d, n in conn.execute(stmt):
            out.setdefault((recipient, variant), {})[str(d)] = int(n)
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class DomainCount:
    domain: str | None
    count: int
    recipients: int


def top_domains(engine: Engine, filters: IncidentFilter, limit: int = 10) -> list[DomainCount]:
    """The recipient domains with the most incidents, most first."""
    n = func.count().label("n")
    stmt = (
        select(Incident.recipient_domain, n, func.count(Incident.failed_recipient.distinct()))
        .where(*filters.clauses())
        .group_by(Incident.recipient_domain)
        .order_by(n.desc(), Incident.recipient_domain)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [DomainCount(d, int(c), int(r)) for d, c, r in conn.execute(stmt)]


def refusing_recipients(engine: Engine, *, since: datetime, limit: int) -> set[str]:
    """Recipients with an incident recorded since ``since`` (at most ``limit``, the newest)."""
    last = func.max(Incident.recorded_at)
    stmt = (
        select(Incident.failed_recipient)
        .where(Incident.recorded_at >= since, Incident.failed_recipient.is_not(None))
        .group_by(Incident.failed_recipient)
        .order_by(last.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return {r for (r,) in conn.execute(stmt) if r}


@dataclasses.dataclass(slots=True)
class TrafficCount:
    """Messages relayed to one recipient within one batch."""

    relayed: int
    first_at: datetime
    last_at: datetime


def _insert(engine: Engine) -> Any:
    return {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[engine.dialect.name](RecipientTraffic)


def record_traffic(
    engine: Engine, resets: Mapping[str, datetime], counts: Mapping[str, TrafficCount]
) -> None:
    """Apply one batch: restart the count of each recipient in ``resets`` (at its bounce's time,
    unless a later bounce already did), then add ``counts``; one transaction."""
    if not resets and not counts:
        return
    insert = _insert(engine)
    with engine.begin() as conn:
        if resets:
            excluded = insert.excluded
            reset = insert.on_conflict_do_update(
                index_elements=[RecipientTraffic.recipient],
                set_={"relayed": 0, "since": excluded.since, "last_relayed_at": None},
                where=RecipientTraffic.since < excluded.since,
            )
            conn.execute(
                reset,
                [
                    {"recipient": r, "relayed": 0, "since": at, "last_relayed_at": None}
                    for r, at in resets.items()
                ],
            )
        if counts:
            excluded = insert.excluded
            add = insert.on_conflict_do_update(
                index_elements=[RecipientTraffic.recipient],
                set_={
                    "relayed": RecipientTraffic.relayed + excluded.relayed,
                    "last_relayed_at": excluded.last_relayed_at,
                },
            )
            conn.execute(
                add,
                [
                    {"recipient": r, "relayed": c.relayed, "since": c.first_at, "last_relayed_at": c.last_at}
                    for r, c in counts.items()
                ],
            )
