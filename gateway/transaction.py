"""What the gateway knows about one SMTP transaction, apart from the message bytes.

The handler (``gateway.handler.RelayHandler.handle_DATA``) builds a :class:`MessageContext`
when DATA ends; the processing steps, the incident records (``gateway.incidents``) and the
transaction log line all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class MessageContext:
    #: A ULID; also in the log line and as the ``id`` of our ``Received:`` field
    #: (``gateway.loops.LoopGuard.trace``).
    transaction_id: str
    mail_from: str  # "" for the null reverse-path (every DSN has it, RFC 3461 section 6.2)
    rcpt_tos: tuple[str, ...]  # recipients the next hop accepted
    client_address: str | None  # the upstream MTA's IP address
    helo: str | None  # what the upstream said in EHLO/HELO
    received_at: datetime  # timezone-aware, UTC
    size: int  # octets of message data as received
    mail_options: tuple[str, ...] = field(default=())
