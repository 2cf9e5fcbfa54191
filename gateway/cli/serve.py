"""``bouncegw serve``: run the relay hop."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from gateway.cli.common import cli, config_option, settings_from
from gateway.config import Settings, startup_warnings


@cli.command()
@config_option
@click.option("--listen", metavar="HOST:PORT", help="SMTP listener address [127.0.0.1:10025].")
@click.option("--next-hop", metavar="HOST:PORT|maildir:PATH", help="Where mail goes on [127.0.0.1:10026].")
@click.option("--database", metavar="URL", help="SQLAlchemy database URL [sqlite:///var/bouncegw.sqlite3].")
@click.option("--http", metavar="HOST:PORT", help="Admin HTTP address [127.0.0.1:8025].")
@click.option("--workers", type=click.IntRange(1, 256), help="Worker processes [number of CPUs].")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", type=click.Choice(["json", "text"]))
def serve(
    config_file: Path | None,
    listen: str | None,
    next_hop: str | None,
    database: str | None,
    http: str | None,
    workers: int | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Relay mail to the next hop, explaining and recording 5.7.12-family bounces."""
    from gateway.logs import setup_logging

    settings = settings_from(
        config_file,
        {
            "listen": listen,
            "next_hop": next_hop,
            "database": database,
            "http": http,
            "workers": workers,
            "log_level": log_level,
            "log_format": log_format,
        },
    )
    setup_logging(settings.log.level, settings.log.format)
    for warning in startup_warnings(settings):
        logging.getLogger("gateway.config").warning(warning)
    from gateway.memory import return_large_blocks

    return_large_blocks()  # inherited by forked workers
    sys.exit(_serve(settings))


def _serve(settings: Settings) -> int:
    """Bind, check, then run one process or a supervisor; an exit status or one line of error."""
    from gateway import startup

    log = logging.getLogger("gateway.serve")
    debug = log.isEnabledFor(logging.DEBUG)
    workers = settings.listener.workers
    if workers > 1:
        from gateway import workers as supervisor

        supervisor.use_multiprocess_metrics()  # before anything imports gateway.metrics
    try:
        # The addresses first: a second gateway (a second `make run`) stops here, on its
        # address, before it touches the journal or the database the first one owns.
        sockets = startup.bind(settings)
        try:
            startup.preflight(settings)
            if workers > 1:
                supervisor.empty_multiprocess_metrics()  # ours now: the addresses are held
                return supervisor.supervise(settings, workers, sockets)
            from gateway.app import run

            bound = settings.model_copy(
                update={
                    "listener": settings.listener.model_copy(update={"listen": sockets.listen}),
                    "admin": settings.admin.model_copy(update={"http": sockets.admin}),
                }
            )
            asyncio.run(run(bound, smtp_socket=sockets.smtp, http_socket=sockets.http))
            return 0
        finally:
            sockets.close()
    except startup.FatalError as exc:
        if debug:
            log.debug("fatal", exc_info=exc.__cause__ or exc)
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        # Start-up checks and the supervisor itself: still one line, the traceback only in debug.
        if debug:
            log.debug("fatal", exc_info=exc)
        raise click.ClickException(startup.describe(exc)) from None
