"""``python -m gateway`` runs the ``bouncegw`` command."""

from gateway.cli import main

main()
