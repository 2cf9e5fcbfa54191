"""The command group and the options every sub-command shares."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway.config import ConfigError, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="bouncegw")
def cli() -> None:
    """bouncegw: an SMTP relay hop that explains "550 5.7.12" bounces and records them."""


def config_option(func: F) -> F:
    """--config FILE (also BOUNCEGW_CONFIG)."""
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="BOUNCEGW_CONFIG",
        help="TOML configuration file (environment BOUNCEGW_<SECTION>__<KEY> and flags override it).",
    )(func)


def database_option(func: F) -> F:
    return click.option("--database", metavar="URL", help="SQLAlchemy database URL.")(func)


#: Where ``settings_from`` leaves the database URL for :class:`DatabaseGroup`'s error message.
_DATABASE_URL = "bouncegw.database_url"


def settings_from(config_file: Path | None, flags: Mapping[str, Any] | None = None) -> Settings:
    """Load the settings or exit with the validation message (exit status 2)."""
    try:
        settings = load_settings(config_file, flags=flags)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[_DATABASE_URL] = settings.database.url
    return settings


def _database_error(ctx: click.Context, exc: Exception, exit_code: int = 1) -> click.ClickException:
    """A database error as one line naming the database (password masked), the driver's reason
    and what to check; any other exception is raised again."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        raise exc
    from storage.db import describe_error

    url = str(ctx.meta.get(_DATABASE_URL, ""))
    line = f"{describe_error(url, exc)} (check database.url or --database, and that the server runs)"
    return click.ClickException(line) if exit_code == 1 else _ExitTwo(line)


class _ExitTwo(click.ClickException):
    """The same one line, exit status 2."""

    exit_code = 2


class DatabaseGroup(click.Group):
    """A command group whose commands use the database: a database error is one line, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            raise _database_error(ctx, exc) from None


class DatabaseCommand(click.Command):
    """A single command that uses the database: a database error is one line, exit status 2
    (``bouncegw scan`` gives 0 and 1 their grep meanings)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            raise _database_error(ctx, exc, exit_code=2) from None
