"""``bouncegw check-config``: validate and print the effective configuration."""

from __future__ import annotations

from pathlib import Path

import click
import tomli_w

from gateway.cli.common import cli, config_option, settings_from
from gateway.config import effective_config


@cli.command("check-config")
@config_option
def check_config(config_file: Path | None) -> None:
    """Validate the configuration and print it as TOML, secrets masked."""
    settings = settings_from(config_file)
    click.echo(tomli_w.dumps(effective_config(settings)), nl=False)
