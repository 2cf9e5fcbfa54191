"""``bouncegw incidents list | show | stats``: query recorded incidents.

Filters (``list`` and ``stats``): ``--since/--until`` (a duration back from now such as ``24h`` or
``7d``, or an ISO date / date-time), ``--recipient``, ``--domain``, ``--sender`` (address, or a
domain), ``--code`` (an enhanced status code), ``--variant`` (from the family table in
``gateway.bounce.family``), ``--source`` (relay or scan), ``--instance``. Output
``--format table|json|csv|ndjson|tsv``; on a terminal the table fits its width, anywhere else (a
pipe, a file) nothing is cut, so ``grep`` finds whole values; a long export shows progress on
stderr when stderr is a terminal.

These commands only read: they never create a database. They find the one ``serve`` uses from
the same configuration (``--config``/``BOUNCEGW_CONFIG``, ``BOUNCEGW_DATABASE__URL``,
``--database``) and say so when it does not exist.

Stored values come from bounces (attacker-controlled): every one is printed through
``gateway.textsafe`` (control characters and escape sequences escaped, CSV formulas defused,
no rich markup interpreted).
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway.cli.common import DatabaseGroup, cli, config_option, database_option, settings_from
from gateway.textsafe import csv_cell, json_text, printable
from storage.incidents import SOURCES

F = TypeVar("F", bound=Callable[..., Any])

FORMATS = ("table", "json", "csv", "ndjson", "tsv")
#: Table columns for ``list``: (heading, record field, minimum width).
LIST_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("id", "id", 26),
    ("recorded (UTC)", "recorded_at", 16),
    ("status", "status", 7),
    ("variant", "variant", 6),
    ("recipient", "failed_recipient", 9),
    ("sender", "sender", 8),
    ("source", "source", 5),
)


def _time(text: str | None, name: str) -> datetime | None:
    from storage.timespec import parse_time_bound

    if text is None:
        return None
    try:
        return parse_time_bound(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


#: An enhanced status code (RFC 3463 section 2): class.subject.detail.
_STATUS_CODE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def _status_code(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _STATUS_CODE.fullmatch(value.strip()):
        raise click.BadParameter(f"{value!r} is not an enhanced status code such as 5.7.133 (RFC 3463)")
    return value.strip() if value is not None else None


def filter_options(func: F) -> F:
    from gateway.bounce.family import FAMILY

    # Every variant the family table can give a recipient, and nothing else.
    variants = sorted({variant for _, variant in FAMILY.kinds})
    options = [
        click.option(
            "--since", metavar="WHEN", help="Duration back from now (24h, 7d) or date (2025-05-01)."
        ),
        click.option("--until", metavar="WHEN", help="Same forms as --since (exclusive)."),
        click.option("--recipient", metavar="ADDR", help="Failed recipient address."),
        click.option("--domain", metavar="DOMAIN", help="Failed recipient's domain."),
        click.option("--sender", metavar="ADDR|DOMAIN", help="Sender address, or every sender of a domain."),
        click.option(
            "--code", metavar="CODE", callback=_status_code, help="Enhanced status code, e.g. 5.7.133."
        ),
        click.option("--variant", type=click.Choice(variants), help="Classifier variant."),
        click.option("--source", type=click.Choice(SOURCES), help="Found by the relay or by bouncegw scan."),
        click.option("--instance", metavar="NAME", help="Gateway instance that recorded it."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def format_option(func: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format.",
    )(func)


def _filters(kwargs: dict[str, Any]) -> Any:
    from storage.repository import IncidentFilter

    return IncidentFilter(
        since=_time(kwargs.pop("since"), "--since"),
        until=_time(kwargs.pop("until"), "--until"),
        recipient=kwargs.pop("recipient"),
        domain=kwargs.pop("domain"),
        sender=kwargs.pop("sender"),
        code=kwargs.pop("code"),
        variant=kwargs.pop("variant"),
        source=kwargs.pop("source"),
        instance=kwargs.pop("instance"),
    )


def open_repository(config_file: Path | None, database: str | None) -> Any:
    """The repository for the configured database, after the schema check ``serve`` also does.

    Read-only: an SQLite file that does not exist is an error, not a new empty database (which
    would answer "no incidents" for the wrong place), and its schema is never upgraded here.
    """
    from sqlalchemy.engine import make_url

    from storage.db import SchemaOutOfDate, check_schema, is_sqlite
    from storage.repository import Repository

    url = settings_from(config_file, {"database": database}).database.url
    if is_sqlite(url):
        path = make_url(url).database
        if path and path != ":memory:" and not path.startswith("file:") and not Path(path).is_file():
            raise click.ClickException(
                f"no incident database at {Path(path).absolute()} (database.url = {url!r}); "
                "run this where `bouncegw serve` runs, or give it the same configuration "
                "(--config, BOUNCEGW_DATABASE__URL or --database)"
            )
    try:
        check_schema(url, auto_upgrade_sqlite=False)
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None
    return Repository.from_url(url)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _tsv(value: Any) -> str:
    """A TSV field: no tab or line break inside, backslash-escaped as PostgreSQL's text format does,
    and any other unsafe character escaped by ``printable`` (a bounce's value never drives a terminal)."""
    if value is None:
        return ""
    text = str(_plain(value))
    text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return printable(text)


def _emit(fmt: str, fields: list[str], rows: Iterable[dict[str, Any]]) -> None:
    """json / csv / ndjson / tsv writers shared by every command (streamed, row by row)."""
    out = sys.stdout
    if fmt == "tsv":
        out.write("\t".join(fields) + "\n")
        for row in rows:
            out.write("\t".join(_tsv(row.get(f)) for f in fields) + "\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: csv_cell(_plain(v)) for k, v in row.items()})
    elif fmt == "ndjson":
        for row in rows:
            out.write(
                json_text(json.dumps({k: _plain(v) for k, v in row.items()}, ensure_ascii=False)) + "\n"
            )
    else:  # json: one array, one element per line, so a large export still streams
        out.write("[")
        for n, row in enumerate(rows):
            out.write(
                ("\n" if n == 0 else ",\n")
                + json_text(json.dumps({k: _plain(v) for k, v in row.items()}, ensure_ascii=False))
            )
        out.write("\n]\n")


def _fit(headings: list[int], rows: list[tuple[str, ...]], total: int) -> list[int]:
    """Column widths for the list table: content width, the widest columns cut until the row fits."""
    widths = [max([h, *(len(row[i]) for row in rows)]) for i, h in enumerate(headings)]
    floor = [min(w, m) for w, (_, _, m) in zip(widths, LIST_COLUMNS, strict=True)]
    budget = total - (len(widths) - 1)  # one space between columns
    while sum(widths) > budget:
        # Shrink the column with the most room above its minimum (addresses, in practice).
        i = max(range(len(widths)), key=lambda k: widths[k] - floor[k])
        if widths[i] <= floor[i]:
            break
        widths[i] -= 1
    return widths


def _fits_width() -> bool:
    """Fit tables to a width only on a terminal (or when $COLUMNS asks): a pipe gets whole values."""
    return sys.stdout.isatty() or "COLUMNS" in os.environ


def _cell(value: str) -> Any:
    """A table cell: escaped text, never parsed as rich markup."""
    from rich.text import Text

    return Text(printable(value))


def _console() -> Any:
    from rich.console import Console

    if _fits_width():
        # Width: the terminal, or $COLUMNS; columns shrink (ellipsis) to fit it.
        return Console(highlight=False, soft_wrap=False)
    # Piped or redirected: wide enough that rich never cuts or folds a value.
    return Console(highlight=False, soft_wrap=False, width=1_000_000, no_color=True)


def _with_progress(rows: Iterator[dict[str, Any]], total: int) -> Iterator[dict[str, Any]]:
    """Progress on stderr for exports, only when a person is watching."""
    if not sys.stderr.isatty():
        yield from rows
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("exporting", total=total)
        for row in rows:
            yield row
            progress.advance(task)


@cli.group("incidents", cls=DatabaseGroup)
def incidents() -> None:
    """Query recorded incidents."""


@incidents.command("list")
@config_option
@database_option
@filter_options
@click.option(
    "--limit", type=click.IntRange(min=0), default=100, show_default=True, help="At most N (0: all)."
)
@format_option
def list_incidents(
    config_file: Path | None, database: str | None, limit: int, fmt: str, **kwargs: Any
) -> None:
    """List incidents, newest first."""
    from storage.incidents import FIELD_NAMES

    filters = _filters(kwargs)
    repo = open_repository(config_file, database)
    try:
        records = repo.iterate(filters, limit=limit or None)
        if fmt == "table":
            from rich.table import Table

            rows = [
                (
                    r.id,
                    r.recorded_at.strftime("%Y-%m-%d %H:%M"),
                    *(printable(getattr(r, f) or "-") for _, f, _ in LIST_COLUMNS[2:]),
                )
                for r in records
            ]
            console = _console()
            headings = [len(h) for h, _, _ in LIST_COLUMNS]
            widths = _fit(headings, rows, console.width if _fits_width() else sys.maxsize)
            table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
            for (heading, _, _), width in zip(LIST_COLUMNS, widths, strict=True):
                table.add_column(heading, width=width, no_wrap=True, overflow="ellipsis")
            for row in rows:
                table.add_row(*(_cell(c) for c in row))
            console.print(table)
            return
        total = min(repo.count(filters), limit) if limit else repo.count(filters)
        _emit(fmt, list(FIELD_NAMES), _with_progress((r.to_dict() for r in records), total))
    finally:
        repo.close()


@incidents.command("show")
@config_option
@database_option
@click.argument("incident_id", metavar="ID")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table", show_default=True)
def show(config_file: Path | None, database: str | None, incident_id: str, fmt: str) -> None:
    """Show every field of one incident."""
    repo = open_repository(config_file, database)
    try:
        record = repo.get(incident_id)
    finally:
        repo.close()
    if record is None:
        raise click.ClickException(f"no incident with id {incident_id!r}")
    data = record.to_dict()
    if fmt == "json":
        click.echo(json_text(json.dumps(data, ensure_ascii=False, indent=2)))
        return
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in data.items():
        table.add_row(key, _cell("-" if value is None else str(value)))
    _console().print(table)


@incidents.command("stats")
@config_option
@database_option
@filter_options
@click.option(
    "--by",
    type=click.Choice(("day", "recipient", "domain", "variant", "sender-domain", "instance")),
    default="day",
    show_default=True,
)
@format_option
def stats(config_file: Path | None, database: str | None, by: str, fmt: str, **kwargs: Any) -> None:
    """Counts with first and last seen, per day, recipient, domain, variant, sender domain or instance."""
    filters = _filters(kwargs)
    repo = open_repository(config_file, database)
    try:
        rows = repo.stats(by, filters)
    finally:
        repo.close()
    fields = [by, "count", "first_seen", "last_seen"]
    data = [dict(zip(fields, (r.key, r.count, r.first_seen, r.last_seen), strict=True)) for r in rows]
    if fmt != "table":
        _emit(fmt, fields, data)
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    table.add_column(by, no_wrap=True, overflow="ellipsis", min_width=10)
    table.add_column("count", justify="right")
    table.add_column("first seen (UTC)", no_wrap=True)
    table.add_column("last seen (UTC)", no_wrap=True)
    for r in rows:
        table.add_row(
            _cell(r.key or "-"),
            str(r.count),
            r.first_seen.strftime("%Y-%m-%d %H:%M"),
            r.last_seen.strftime("%Y-%m-%d %H:%M"),
        )
    _console().print(table)
