"""``bouncegw milter``: run as a milter for Postfix or Sendmail."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from gateway.cli.common import cli, config_option, settings_from
from gateway.config import startup_warnings


@cli.command()
@config_option
@click.option(
    "--listen",
    metavar="inet:HOST:PORT|unix:PATH",
    default="inet:127.0.0.1:10030",
    show_default=True,
    help="Milter socket, as smtpd_milters names it.",
)
@click.option("--database", metavar="URL", help="SQLAlchemy database URL [sqlite:///var/bouncegw.sqlite3].")
@click.option("--http", metavar="HOST:PORT", help="Admin HTTP address [127.0.0.1:8025].")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", type=click.Choice(["json", "text"]))
def milter(
    config_file: Path | None,
    listen: str,
    database: str | None,
    http: str | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Explain and record 5.7.12-family bounces as a milter (Postfix, Sendmail)."""
    from gateway.logs import setup_logging
    from gateway.milter.service import Address

    try:
        address = Address.parse(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    settings = settings_from(
        config_file,
        {"database": database, "http": http, "log_level": log_level, "log_format": log_format},
    )
    setup_logging(settings.log.level, settings.log.format)
    for warning in startup_warnings(settings):
        if "listener." not in warning:  # the SMTP listener's settings do not apply here
            logging.getLogger("gateway.config").warning(warning)
    from gateway import startup
    from gateway.milter.service import run

    log = logging.getLogger("gateway.milter")
    try:
        startup.check_journal(settings)
        startup.check_database(settings)
        asyncio.run(run(settings, address))
    except startup.FatalError as exc:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("fatal", exc_info=exc.__cause__ or exc)
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        # The start-up checks themselves: still one line, the traceback only in debug (as serve).
        if log.isEnabledFor(logging.DEBUG):
            log.debug("fatal", exc_info=exc)
        raise click.ClickException(startup.describe(exc)) from None
    sys.exit(0)
