"""What one incident is: the record storage keeps, its id and its fingerprint.

Plain values only: building records from a parsed bounce is the gateway's job
(``gateway.incidents``); storage never imports the gateway (ARCHITECTURE.md).

- :class:`IncidentRecord`: one failed recipient of a family bounce, the same fields as the table.
- :func:`fingerprint(identity, recipient, original_recipient) <fingerprint>`: the table's unique
  key, sha256 over the bounce's identity and the failed recipient.
- :func:`incident_id(fingerprint, date) <incident_id>`: a ULID derived from the fingerprint, so
  a bounce relayed twice (an upstream retry, perhaps through another replica) names the same ids.
- :func:`new_incident_id`: a random ULID (for records without a bounce behind them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parseaddr, parsedate_to_datetime
from typing import Any, Final, Literal, get_args

from ulid import ULID

#: ``IncidentRecord.source``: found in the mail flow, or read from a mailbox by ``bouncegw scan``.
Source = Literal["relay", "scan"]
SOURCE_RELAY: Final[Source] = "relay"
SOURCE_SCAN: Final[Source] = "scan"
SOURCES: tuple[Source, ...] = get_args(Source)


def new_incident_id() -> str:
    """A new ULID: time-ordered, so ids double as the pagination order."""
    return str(ULID())


#: ULIDs carry 48 bits of milliseconds since the epoch (the ULID specification).
_ULID_MAX_MS = (1 << 48) - 1


def incident_id(fingerprint_hex: str, date: str | None) -> str:
    """A ULID made from an incident's fingerprint and its bounce's Date header.

    The 48-bit time part is the bounce's Date (RFC 5322 section 3.6.1; the same bytes on every
    retry), so ids still sort roughly by time and list newest first; a bounce without a usable
    Date gets time 0 (it sorts last). The 80-bit random part is the start of the fingerprint, so
    two incidents share an id only if they share a fingerprint, which the database already
    treats as the same incident.
    """
    millis = 0
    if date:
        try:
            when = parsedate_to_datetime(date)
            if when.tzinfo is None:  # "-0000": UTC without a claim about local time (RFC 5322 3.3)
                when = when.replace(tzinfo=UTC)
            millis = min(max(int(when.timestamp() * 1000), 0), _ULID_MAX_MS)
        except (TypeError, ValueError, IndexError, OverflowError):
            millis = 0
    return str(ULID.from_bytes(millis.to_bytes(6, "big") + bytes.fromhex(fingerprint_hex)[:10]))


@dataclasses.dataclass(frozen=True, slots=True)
class IncidentRecord:
    """One failed recipient of a family bounce, ready to store (same fields as the table)."""

    id: str
    fingerprint: str
    recorded_at: datetime
    transaction_id: str | None = None
    bounce_message_id: str | None = None
    envelope_sender: str = ""
    envelope_recipient: str | None = None
    sender: str | None = None
    sender_domain: str | None = None
    failed_recipient: str | None = None
    recipient_domain: str | None = None
    original_recipient: str | None = None
    status: str | None = None
    reported_status: str | None = None
    diagnostic: str | None = None
    category: str | None = None
    variant: str | None = None
    reporting_mta: str | None = None
    remote_mta: str | None = None
    original_message_id: str | None = None
    original_from: str | None = None
    original_subject: str | None = None
    original_date: str | None = None
    client_address: str | None = None
    helo: str | None = None
    annotated: bool = False
    relay_outcome: str | None = None
    instance: str | None = None
    source: Source = SOURCE_RELAY

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the journal line and the API body)."""
        data = dataclasses.asdict(self)
        data["recorded_at"] = self.recorded_at.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IncidentRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        recorded = values["recorded_at"]
        if isinstance(recorded, str):
            recorded = datetime.fromisoformat(recorded)
        values["recorded_at"] = recorded.astimezone(UTC)
        return cls(**values)


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(IncidentRecord))


#: A bare dot-atom addr-spec (RFC 5322 section 3.4.1), which parseaddr returns as it is: most
#: addresses are this, and parseaddr's tokenizer costs about 5 us per call, three per incident.
_PLAIN_ADDR_SPEC: Final = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def normalise_address(value: str | None) -> str | None:
    """The addr-spec of an address or From header, lower-cased; None when there is none."""
    if not value:
        return None
    if _PLAIN_ADDR_SPEC.fullmatch(value):
        return value.lower()
    _, addr = parseaddr(value)
    addr = (addr or value).strip().strip("<>").strip()
    return addr.lower() or None


def domain_of(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].lower() or None


def fingerprint(identity: str, recipient: str | None, original_recipient: str | None) -> str:
    """sha256 over the bounce identity and the failed recipient (the table's unique key).

    ``identity`` names the bounce (its bytes' digest, or its identifying fields), so a bounce
    relayed twice yields the same fingerprint per recipient and is stored once.
    """
    h = hashlib.sha256()
    for part in (identity, recipient or "", original_recipient or ""):
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\x00")
    return h.hexdigest()
