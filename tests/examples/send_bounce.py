"""Send one realistic 5.7.133 Exchange Online bounce to a gateway.

Usage: ``python -m tests.examples.send_bounce HOST:PORT``.

The bounce is one of the test suite's built positives (``tests/positives.py``),
sent with the null reverse-path as a real bounce would be.
"""

from __future__ import annotations

import smtplib
import sys

from gateway.config import parse_host_port
from tests.positives import POSITIVES

NAME = "exo-qp-5.7.133"


def main(argv: list[str]) -> int:
    host, port = parse_host_port(argv[1] if len(argv) > 1 else "127.0.0.1:10025")
    positive = next(p for p in POSITIVES if p.name == NAME)
    with smtplib.SMTP(host, port, timeout=30) as client:
        refused = client.sendmail("<>", ["sender@example.org"], positive.data)
    print(f"sent {NAME} ({len(positive.data)} bytes) to {host}:{port}; refused: {refused or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
