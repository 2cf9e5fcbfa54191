"""The ``bouncegw`` command: serve | milter | check-config | explain | incidents | scan | db.

Each sub-command lives in its own module here and registers itself on the
group; heavy imports stay inside the command functions so that
``bouncegw --help`` is instant.
"""

from __future__ import annotations

from gateway.cli import check_config, db, explain, incidents, milter, scan, serve  # noqa: F401  (registers commands)
from gateway.cli.common import cli


def main() -> None:
    cli(prog_name="bouncegw")


__all__ = ["cli", "main"]
