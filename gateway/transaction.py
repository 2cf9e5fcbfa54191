"""What the gateway knows about one SMTP transaction, apart from the message bytes.

The listener builds a :class:`MessageContext` when DATA ends; the processing
step, the incident store and the transaction log line all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class MessageContext:
    transaction_id: str  # also in the log line and the Received trace of the session
    mail_from: str  # "" for the null reverse-path (every DSN has it, RFC 3461 section 6.2)
    rcpt_tos: tuple[str, ...]  # recipients the next hop accepted
    client_address: str | None  # the upstream MTA's IP address
    helo: str | None  # what the upstream said in EHLO/HELO
    received_at: datetime  # timezone-aware, UTC
    size: int  # octets of message data as received
    mail_options: tuple[str, ...] = field(default=())
