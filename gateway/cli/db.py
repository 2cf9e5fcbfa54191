"""``bouncegw db upgrade | current | purge | replay-journal``: schema migrations, retention, and
writing journals of gateways that no longer run (a scaled-away replica's volume) into the database."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from gateway.cli.common import DatabaseGroup, cli, config_option, database_option, settings_from


@cli.group("db", cls=DatabaseGroup)
def db() -> None:
    """Database schema and retention."""


@db.command("upgrade")
@config_option
@database_option
def upgrade(config_file: Path | None, database: str | None) -> None:
    """Create or upgrade the incidents schema to this version's revision."""
    from storage.db import current_revision
    from storage.db import upgrade as run_upgrade

    url = settings_from(config_file, {"database": database}).database.url
    before = current_revision(url)
    run_upgrade(url)
    after = current_revision(url)
    if before == after:
        click.echo(f"schema already at revision {after}")
    else:
        click.echo(f"schema upgraded from {before or 'empty'} to revision {after}")


@db.command("current")
@config_option
@database_option
def current(config_file: Path | None, database: str | None) -> None:
    """Print the schema revision of the database and the one this bouncegw needs (exit 1 if they differ)."""
    from storage.db import current_revision, head_revision

    url = settings_from(config_file, {"database": database}).database.url
    have, need = current_revision(url), head_revision()
    click.echo(f"database: {have or 'empty'}\nrequired: {need}")
    if have != need:
        sys.exit(1)


@db.command("purge")
@config_option
@database_option
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Delete incidents older than this (30d, 12w, ...); default: storage.retention_days.",
)
def purge(config_file: Path | None, database: str | None, older_than: str | None) -> None:
    """Delete old incidents, in short transactions, with progress."""
    from rich.console import Console
    from rich.progress import Progress

    from storage.db import SchemaOutOfDate, check_schema
    from storage.repository import IncidentFilter, Repository
    from storage.timespec import parse_duration

    settings = settings_from(config_file, {"database": database})
    if older_than is not None:
        try:
            age = parse_duration(older_than)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--older-than") from None
    elif settings.storage.retention_days:
        age = timedelta(days=settings.storage.retention_days)
    else:
        raise click.UsageError("give --older-than DURATION or set storage.retention_days")
    url = settings.database.url
    try:
        check_schema(url)
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None
    before = datetime.now(UTC) - age
    repo = Repository.from_url(url)
    try:
        total = repo.count(IncidentFilter(until=before))
        # Progress goes to stderr; rich draws the bar only on a terminal.
        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("purging", total=total)
            deleted = repo.purge(before, progress=lambda n: progress.advance(task, n))
    finally:
        repo.close()
    click.echo(f"purged {deleted} incidents recorded before {before.isoformat(timespec='seconds')}")


@db.command("replay-journal")
@config_option
@database_option
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
def replay_journal(config_file: Path | None, database: str | None, paths: tuple[Path, ...]) -> None:
    """Write the incidents in journals (files or directories) into the database, exactly once.

    Default: storage.journal_path and its per-worker siblings. A journal that a running gateway
    holds is left to that gateway (it replays it itself).
    """
    from storage.db import SchemaOutOfDate, check_schema
    from storage.journal import Journal, JournalLocked, journals_in, replay_into, sibling_journals
    from storage.repository import Repository

    settings = settings_from(config_file, {"database": database})
    url = settings.database.url
    own = settings.storage.journal_path
    targets: list[Path] = [] if paths else [own, *sibling_journals(own)]
    for path in paths:
        targets += journals_in(path) if path.is_dir() else [path]
    try:
        check_schema(url)
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None
    repo = Repository.from_url(url)
    busy = 0
    try:
        for path in targets:
            try:
                journal = Journal(path, settings.storage.journal_max_bytes)
            except JournalLocked:
                busy += 1
                click.echo(f"{path}: in use by a running gateway, which replays it itself", err=True)
                continue
            try:
                waiting = journal.backlog
                new = replay_into(journal, repo.record, settings.storage.batch_size)
            finally:
                journal.close()
            click.echo(f"{path}: {waiting} journalled incidents, {new} new in the database")
    finally:
        repo.close()
    if busy:
        sys.exit(1)
