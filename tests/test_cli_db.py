"""``bouncegw db``: upgrade and current on both databases."""

from __future__ import annotations

from click.testing import CliRunner

from gateway.cli.common import cli
from storage.db import head_revision

pytest_plugins = ["tests.storage_fixtures"]


def test_cli_db_upgrade_and_current(db_url: str) -> None:
    runner = CliRunner()
    import gateway.cli.db  # noqa: F401  (registers the command group)

    result = runner.invoke(cli, ["db", "current", "--database", db_url])
    assert result.exit_code == 1
    assert "database: empty" in result.output
    result = runner.invoke(cli, ["db", "upgrade", "--database", db_url])
    assert result.exit_code == 0, result.output
    assert f"to revision {head_revision()}" in result.output
    result = runner.invoke(cli, ["db", "current", "--database", db_url])
    assert result.exit_code == 0
    assert f"database: {head_revision()}" in result.output
