"""``bouncegw scan PATH...``: find the 5.7.12 family in mailbox archives, and record it if asked.

Reads mbox files, Maildir and MH folders, ``.eml`` files, folders holding ``.eml`` and mbox
files (``--recursive`` descends into their sub-folders, Maildir and MH ones included), and ``-``
for standard input (one message, or an mbox). Prints one row per family recipient
(``--format table|jsonl|csv``), then a summary: on standard output for the table, on standard
error for the machine formats so that a pipe gets rows only. A progress line is shown on
standard error while it is a terminal, and nothing extra when it is not.

``--record`` writes the incidents into the configured database (``--config``/``--database``,
the same settings ``serve`` reads) with ``source = scan`` and the relay's fingerprints, so a second
scan, or a scan of mail the relay already recorded, adds nothing twice.

Exit status, as grep's: 0 family recipients found, 1 none found, 2 an input named on the command
line could not be read (the rest is still scanned and reported) or, with ``--record``, the
database could not be used (one line naming it), 130 interrupted (Ctrl-C: what was
recorded so far stays recorded and the summary says how far the scan got). Messages that do not
parse are counted and listed in the summary; they do not change the exit status.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from gateway.cli.common import DatabaseCommand, cli, config_option, database_option, settings_from

FORMATS = ("table", "jsonl", "csv")
#: One row per family recipient: (heading, incident field).
ROW_FIELDS: tuple[tuple[str, str], ...] = (
    ("recipient", "failed_recipient"),
    ("status", "status"),
    ("variant", "variant"),
    ("sender", "sender"),
)
HEADINGS = ("location", "date", *(h for h, _ in ROW_FIELDS))
#: Records written to the database per transaction.
RECORD_BATCH = 500


@cli.command("scan", cls=DatabaseCommand)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-folders (Maildir and MH ones too).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--record", is_flag=True, help="Write the incidents into the configured database.")
@click.option(
    "--jobs", type=click.IntRange(min=1), default=None, help="Parsing processes (default: one per core)."
)
@config_option
@database_option
def scan_command(
    paths: tuple[str, ...],
    recursive: bool,
    fmt: str,
    record: bool,
    jobs: int | None,
    config_file: Path | None,
    database: str | None,
) -> None:
    """Find 5.7.12-family bounces in mailbox archives (mbox, Maildir, MH, .eml; - for stdin)."""
    from gateway import scan

    settings = settings_from(config_file, {"database": database})
    repo = _open_for_writing(settings.database.url) if record else None
    summary = scan.Summary()
    pending: list[Any] = []
    writer = _RowWriter(fmt)

    def flush() -> None:
        if repo is not None and pending:
            stored = repo.record(pending)
            summary.recorded += stored
            summary.already_recorded += len(pending) - stored
            pending.clear()

    def counted() -> None:
        summary.messages += 1
        progress.update(summary)

    progress = _Progress.start()
    try:
        items = scan.read(paths, recursive=recursive)
        for result in scan.scan(
            items,
            jobs=jobs or scan.default_jobs(),
            instance=settings.instance,
            store_subjects=settings.storage.store_subjects,
            on_message=counted,
        ):
            if isinstance(result, scan.Problem):
                summary.problems.append(result)
                continue
            summary.candidates += 1
            summary.bounces += result.is_bounce
            if result.problem:
                summary.problems.append(scan.Problem(result.location, result.problem))
            if not result.records:
                continue
            summary.family_bounces += 1
            if result.explained_by_relay:
                summary.explained_by_relay += 1
            for incident in result.records:
                summary.add(incident, result.date)
                writer.row(result.location, result.date, incident)
                if repo is not None and not result.explained_by_relay:
                    pending.append(incident)
            if len(pending) >= RECORD_BATCH:
                flush()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        progress.stop()
        flush()
        if repo is not None:
            repo.close()
    writer.close()
    _print_summary(summary, record=record, to=sys.stdout if fmt == "table" else sys.stderr)
    if summary.interrupted:
        sys.exit(130)
    if any(p.fatal for p in summary.problems):
        sys.exit(2)
    sys.exit(0 if summary.recipients else 1)


def _open_for_writing(url: str) -> Any:
    from storage.db import SchemaOutOfDate, check_schema
    from storage.repository import Repository

    try:
        check_schema(url)
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None
    return Repository.from_url(url)


def _cell(value: Any, empty: str = "-") -> str:
    """A value from a bounce, made safe for a terminal (attacker-controlled text)."""
    from gateway.textsafe import printable

    if value is None or value == "":
        return empty
    text = value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else str(value)
    return printable(text, limit=500)


class _RowWriter:
    """Rows as they come (jsonl, csv), or one aligned table at the end; never truncated."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.table: list[tuple[str, ...]] = []
        if fmt == "csv":
            import csv

            self.csv = csv.writer(sys.stdout, lineterminator="\n")
            self.csv.writerow(HEADINGS)

    def row(self, location: str, date: datetime | None, incident: Any) -> None:
        empty = "-" if self.fmt == "table" else ""
        cells = (
            _cell(location),
            _cell(date, empty),
            *(_cell(getattr(incident, f), empty) for _, f in ROW_FIELDS),
        )
        if self.fmt == "table":
            self.table.append(cells)
        elif self.fmt == "csv":
            from gateway.textsafe import csv_cell

            self.csv.writerow([csv_cell(c) for c in cells])
        else:
            import json

            data: dict[str, str | None] = dict(zip(HEADINGS, cells, strict=True))
            data["date"] = date.isoformat() if date else None
            data |= {"category": incident.category, "domain": incident.recipient_domain}
            sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self.fmt != "table" or not self.table:
            return
        headings = HEADINGS
        widths = [max(len(r[i]) for r in (headings, *self.table)) for i in range(len(headings))]
        for cells in (headings, *self.table):
            sys.stdout.write(
                "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() + "\n"
            )
        sys.stdout.write("\n")


class _Progress:
    """A live count on standard error while it is a terminal; nothing at all otherwise."""

    def __init__(self, progress: Any, task: Any) -> None:
        self.progress = progress
        self.task = task

    @classmethod
    def start(cls) -> _Progress:
        if not sys.stderr.isatty():
            return cls(None, None)
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
            redirect_stdout=False,  # the rows stay on standard output
            redirect_stderr=False,
        )
        progress.start()
        return cls(progress, progress.add_task("scanning", total=None))

    def update(self, summary: Any) -> None:
        if self.progress is not None:
            self.progress.update(
                self.task,
                description=f"scanning: {summary.messages} messages, {summary.recipients} family recipients",
            )

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _print_summary(summary: Any, *, record: bool, to: Any) -> None:
    def line(text: str = "", end: str = "\n") -> None:
        to.write(text + end)

    state = "interrupted after" if summary.interrupted else "scanned"
    # Only messages the prefilter lets through are parsed: bounces without the family's codes
    # are never counted as bounces here.
    line(f"{state} {summary.messages} messages: {summary.candidates} might carry the family's codes", end=" ")
    line(f"and were parsed ({summary.bounces} bounces), {summary.family_bounces} in the family")
    line(f"family recipients: {summary.recipients}")
    if summary.recipients:
        line("  by variant: " + ", ".join(f"{k} {n}" for k, n in summary.by_variant.most_common()))
        line("  by domain:  " + ", ".join(f"{_cell(k)} {n}" for k, n in summary.by_domain.most_common(10)))
        if summary.first and summary.last:
            line(f"  dated {summary.first:%Y-%m-%d %H:%M} to {summary.last:%Y-%m-%d %H:%M} UTC")
    if summary.explained_by_relay:
        line(f"already explained and recorded by the relay: {summary.explained_by_relay} bounces")
    if record:
        line(f"recorded: {summary.recorded} new, {summary.already_recorded} already in the database")
    if summary.problems:
        line(f"problems: {len(summary.problems)}")
        for problem in summary.problems[:20]:
            line(f"  {_cell(problem.location)}: {_cell(problem.reason)}")
        if len(summary.problems) > 20:
            line(f"  ... and {len(summary.problems) - 20} more")
