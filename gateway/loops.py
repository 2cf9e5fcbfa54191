"""The trace bouncegw adds to every message it relays, and the loop check that reads it back.

RFC 5321 section 4.4: an SMTP server that relays a message MUST insert a ``Received:`` trace
field at the beginning of the content. bouncegw's names itself ``by HOSTNAME (bouncegw)``, so a
message that comes back carries the proof that it has already been here.

RFC 5321 section 6.3: loops are detected by counting ``Received:`` fields. bouncegw refuses a
message with ``554 5.4.6`` (RFC 3463 X.4.6, routing loop detected) when

- it already carries ``max_hops`` or more ``Received:`` fields (Postfix's ``hopcount_limit``
  rule, 50 by default there and here), or
- its own trace shows it has already crossed this gateway ``max_passes`` times: a
  misrouted Postfix (relay host pointing at bouncegw, bouncegw's next hop that same Postfix)
  is stopped after a few rounds instead of at the 50th copy.

The work is bounded: only the header block is read, and counting stops at the limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Final

from gateway import replies
from gateway.header_block import empty_line
from gateway.outcomes import LoopReason

#: A Received: field at the start of a line, with its folded continuation lines (RFC 5322
#: section 2.2.3), in the header block only.
_RECEIVED: Final = re.compile(
    rb"^received[ \t]*:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE
)
#: What may stand for the client's name in our trace: a domain or an address literal. HELO is
#: the client's word (attacker-controlled): anything else is written as "unknown".
_HELO: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-_]{0,252})|\[[A-Za-z0-9.:\-]{1,60}\]")
_ADDRESS: Final = re.compile(r"[0-9A-Fa-f.:]{2,45}")
#: The comment that marks our own trace, after "by HOSTNAME".
MARK: Final = "(bouncegw)"
#: The longest trace :meth:`LoopGuard.trace` writes (a 253-octet HELO and host name, an IPv6
#: literal, the id and the date come to under 700 octets). What the pipeline adds to a message
#: must leave room for it within max_message_size, the size promised to the upstream.
TRACE_MAX: Final = 1024


def size_budget(max_message_size: int) -> int:
    """The most a processed message may weigh so that it still fits under our trace."""
    return max_message_size - TRACE_MAX


@dataclass(frozen=True, slots=True)
class Loop:
    """Why a message is refused: the reply to give and the metric label."""

    reason: LoopReason
    reply: str


@dataclass(frozen=True, slots=True)
class LoopGuard:
    hostname: str
    max_hops: int = 50
    max_passes: int = 3

    @property
    def _own(self) -> bytes:
        return f"by {self.hostname} {MARK}".lower().encode("ascii", "replace")

    def check(self, data: bytes) -> Loop | None:
        """The refusal for ``data``, or None when it may be relayed."""
        end = empty_line(data)
        header_end = end[0] if end is not None else len(data)
        own = self._own
        passes = 0
        for hops, match in enumerate(_RECEIVED.finditer(data, 0, header_end), start=1):
            # Unfolded and lower-cased: a few hundred bytes per field.
            value = b" ".join(match.group(1).split()).lower()
            if own in value:
                passes += 1
                if passes >= self.max_passes:
                    return Loop(LoopReason.PASSES, replies.LOOP_DETECTED.format(passes=passes))
            if hops >= self.max_hops:
                return Loop(LoopReason.HOPS, replies.TOO_MANY_HOPS.format(limit=self.max_hops))
        return None

    def trace(
        self,
        *,
        helo: str | None,
        client_address: str | None,
        esmtp: bool,
        tls: bool,
        authenticated: bool,
        transaction_id: str,
        when: datetime,
    ) -> bytes:
        """Our ``Received:`` field (RFC 5321 section 4.4), folded, ending in CRLF.

        The protocol word follows RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA). No "for" clause:
        the recipients stay out of the message.
        """
        name = helo if helo is not None and _HELO.fullmatch(helo) else "unknown"
        address = client_address if client_address and _ADDRESS.fullmatch(client_address) else "unknown"
        if ":" in address:
            address = "IPv6:" + address  # RFC 5321 section 4.1.3
        protocol = "ESMTP" if esmtp else "SMTP"
        if esmtp:
            protocol += ("S" if tls else "") + ("A" if authenticated else "")
        return (
            f"Received: from {name} ([{address}])\r\n"
            f"\tby {self.hostname} {MARK} with {protocol} id {transaction_id};\r\n"
            f"\t{format_datetime(when)}\r\n"
        ).encode("ascii", "replace")
