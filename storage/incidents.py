"""What one incident is, and how the relay pipeline builds them from a bounce.

Interface for the relay pipeline:

- :func:`stable_ids(report, digest) <stable_ids>` -> ``tuple[str, ...]``: the incident ids of a
  bounce's family recipients, made *before* the bounce is annotated because the explanation block
  shows them. Each is derived from the incident's fingerprint (:func:`incident_id`), so a bounce
  relayed twice (an upstream retry, perhaps through another replica) names the same ids, and they
  are the ids of the incidents the database keeps.
- :func:`new_incident_id` -> ``str``: a random ULID (for records without a bounce behind them).
- :func:`build_incidents(report, ctx, *, ids, annotated, relay_outcome, instance, store_subjects,
  bounce_digest=None) <build_incidents>` -> ``list[IncidentRecord]``: one record per recipient in
  ``report.family``, ids in the same order.

The fingerprint (the database's unique key) is sha256 over the bounce's identity and the failed
recipient. The identity is ``gateway.identity.bounce_digest`` of the bytes when the caller passes
it (an upstream retry and a mailbox copy of the same bounce share it), else the report's own
identifying fields (Message-ID, reporting MTA, original Message-ID).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parseaddr, parsedate_to_datetime
from typing import Any, Final, Literal, get_args

from ulid import ULID

from gateway.bounce.report import BounceReport, RecipientReport
from gateway.transaction import MessageContext

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


def normalise_address(value: str | None) -> str | None:
    """The addr-spec of an address or From header, lower-cased; None when there is none."""
    if not value:
        return None
    _, addr = parseaddr(value)
    addr = (addr or value).strip().strip("<>").strip()
    return addr.lower() or None


def domain_of(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].lower() or None


def fingerprint(identity: str, recipient: RecipientReport) -> str:
    """sha256 over the bounce identity and the failed recipient (the table's unique key)."""
    h = hashlib.sha256()
    for part in (identity, recipient.recipient or "", recipient.original_recipient or ""):
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\x00")
    return h.hexdigest()


def stable_ids(report: BounceReport, digest: str | None) -> tuple[str, ...]:
    """The ids :func:`build_incidents` should get for ``report``'s family (same ``digest``).

    A recipient listed twice gets one id: it is one incident (same fingerprint).
    """
    identity = _identity(report, digest)
    return tuple(incident_id(fingerprint(identity, rcpt), report.date) for rcpt in report.family)


def _identity(report: BounceReport, digest: str | None) -> str:
    return "bytes:" + digest if digest else _report_identity(report)


def _report_identity(report: BounceReport) -> str:
    original = report.original
    parts = (
        report.message_id or "",
        report.reporting_mta or "",
        original.message_id if original else "",
        original.date if original else "",
    )
    return "report:" + "\x1f".join(p or "" for p in parts)


def build_incidents(
    report: BounceReport,
    ctx: MessageContext,
    *,
    ids: Sequence[str],
    annotated: bool,
    relay_outcome: str,
    instance: str,
    store_subjects: bool,
    bounce_digest: str | None = None,
) -> list[IncidentRecord]:
    """One :class:`IncidentRecord` per recipient in ``report.family``, ``ids`` in the same order."""
    family = report.family
    if len(ids) != len(family):
        raise ValueError(f"{len(ids)} ids for {len(family)} family recipients")
    identity = _identity(report, bounce_digest)
    original = report.original
    # The bounce travels back to whoever sent the failed message: its RCPT TO is that sender.
    envelope_rcpt = ", ".join(ctx.rcpt_tos) or None
    sender = normalise_address(ctx.rcpt_tos[0] if ctx.rcpt_tos else None) or normalise_address(
        original.sender if original else None
    )
    records = []
    for incident_id, rcpt in zip(ids, family, strict=True):
        failed = normalise_address(rcpt.recipient)
        records.append(
            IncidentRecord(
                id=incident_id,
                fingerprint=fingerprint(identity, rcpt),
                recorded_at=ctx.received_at.astimezone(UTC),
                transaction_id=ctx.transaction_id,
                bounce_message_id=report.message_id,
                envelope_sender=ctx.mail_from,
                envelope_recipient=envelope_rcpt,
                sender=sender,
                sender_domain=domain_of(sender),
                failed_recipient=failed,
                recipient_domain=domain_of(failed),
                original_recipient=rcpt.original_recipient,
                status=rcpt.status,
                reported_status=rcpt.reported_status,
                diagnostic=rcpt.diagnostic,
                category=rcpt.category,
                variant=rcpt.variant,
                reporting_mta=report.reporting_mta,
                remote_mta=rcpt.remote_mta,
                original_message_id=original.message_id if original else None,
                original_from=original.sender if original else None,
                original_subject=original.subject if original and store_subjects else None,
                original_date=original.date if original else None,
                client_address=ctx.client_address,
                helo=ctx.helo,
                annotated=annotated,
                relay_outcome=relay_outcome,
                instance=instance,
            )
        )
    return records
