"""From a parsed bounce to the incident records storage keeps.

Storage defines what an incident is (``storage.incidents``) and takes plain values; this module
is where a :class:`~gateway.bounce.report.BounceReport` and its :class:`~gateway.transaction.MessageContext`
become those records, so the dependency points from the gateway down to storage only.

- :func:`stable_ids(report, digest) <stable_ids>` -> ``tuple[str, ...]``: the incident ids of a
  bounce's family recipients, made *before* the bounce is annotated because the explanation block
  shows them. Each is derived from the incident's fingerprint (``storage.incidents.incident_id``),
  so a bounce relayed twice (an upstream retry, perhaps through another replica) names the same
  ids, and they are the ids of the incidents the database keeps.
- :func:`build_incidents(report, ctx, *, ids, annotated, relay_outcome, instance, store_subjects,
  bounce_digest=None, source) <build_incidents>` -> ``list[IncidentRecord]``: one record per
  recipient in ``report.family``, ids in the same order.

The bounce's identity (hashed into each fingerprint) is ``gateway.identity.bounce_digest`` of the
bytes when the caller passes it (an upstream retry and a mailbox copy of the same bounce share
it), else the report's own identifying fields (Message-ID, reporting MTA, original Message-ID).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from gateway.bounce.report import BounceReport, RecipientReport
from gateway.transaction import MessageContext
from storage.incidents import (
    SOURCE_RELAY,
    IncidentRecord,
    Source,
    domain_of,
    fingerprint,
    incident_id,
    normalise_address,
)


def recipient_fingerprint(identity: str, recipient: RecipientReport) -> str:
    return fingerprint(identity, recipient.recipient, recipient.original_recipient)


def stable_ids(report: BounceReport, digest: str | None) -> tuple[str, ...]:
    """The ids :func:`build_incidents` should get for ``report``'s family (same ``digest``).

    A recipient listed twice gets one id: it is one incident (same fingerprint).
    """
    identity = _identity(report, digest)
    return tuple(incident_id(recipient_fingerprint(identity, rcpt), report.date) for rcpt in report.family)


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
    source: Source = SOURCE_RELAY,
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
    for record_id, rcpt in zip(ids, family, strict=True):
        failed = normalise_address(rcpt.recipient)
        records.append(
            IncidentRecord(
                id=record_id,
                fingerprint=recipient_fingerprint(identity, rcpt),
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
                source=source,
            )
        )
    return records
