"""Incident records for the storage, API and CLI tests, built from plain values (no gateway)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from storage.incidents import IncidentRecord, domain_of, fingerprint, new_incident_id
from storage.repository import IncidentFilter, Repository

#: What the family's records carry (a 5.7.133 "sender not authenticated for group" bounce).
STATUS = "5.7.133"
CATEGORY = "sender_not_authenticated"


def records_for(
    n: int,
    *,
    tag: str = "",
    start: datetime | None = None,
    step: timedelta = timedelta(minutes=1),
    recipients_per_bounce: int = 1,
) -> list[IncidentRecord]:
    """``n`` bounces, each with ``recipients_per_bounce`` family recipients, one minute apart.

    Bounce ``i`` (named by ``tag`` and ``i``: the same ``tag`` gives the same fingerprints) failed
    for ``group<i%7>-<j>@contoso<i%3>.example``, its variant alternates group/mailbox, and it goes
    back to ``sender<i%4>@fabrikam<i%2>.example``.
    """
    start = start or datetime.now(UTC) - timedelta(days=1)
    out: list[IncidentRecord] = []
    for i in range(n):
        bounce_id = f"<bounce-{tag}{i}@mx.example>"
        sender = f"sender{i % 4}@fabrikam{i % 2}.example"
        for j in range(recipients_per_bounce):
            rcpt = f"group{i % 7}-{j}@contoso{i % 3}.example"
            out.append(
                IncidentRecord(
                    id=new_incident_id(),
                    fingerprint=fingerprint("report:" + bounce_id, rcpt, f"rfc822;{rcpt}"),
                    recorded_at=start + i * step,
                    transaction_id="T" + uuid.uuid4().hex[:10],
                    bounce_message_id=bounce_id,
                    envelope_sender="",
                    envelope_recipient=sender,
                    sender=sender,
                    sender_domain=domain_of(sender),
                    failed_recipient=rcpt,
                    recipient_domain=domain_of(rcpt),
                    original_recipient=f"rfc822;{rcpt}",
                    status=STATUS,
                    diagnostic=f"smtp; 550 {STATUS} RESOLVER.RST.SenderNotAuthenticatedForGroup; {rcpt}",
                    category=CATEGORY,
                    variant=("group", "mailbox")[i % 2],
                    reporting_mta="dns; mta.fabrikam.example",
                    remote_mta="dns; contoso-example.mail.protection.outlook.com",
                    original_message_id="<orig-1@fabrikam.example>",
                    original_from="Alice Sender <Alice@Fabrikam.example>",
                    original_subject="Quarterly report",
                    original_date="Mon, 05 May 2025 10:00:00 +0000",
                    client_address="127.0.0.1",
                    helo="mta.fabrikam.example",
                    annotated=True,
                    relay_outcome="250",
                    instance="test",
                )
            )
    return out


def count_incidents(url: str) -> int:
    """How many incidents the database at ``url`` holds (a connection of its own, closed after)."""
    repo = Repository.from_url(url)
    try:
        return repo.count(IncidentFilter())
    finally:
        repo.close()
