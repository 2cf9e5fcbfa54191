"""Builders of reports, contexts and incident records for the storage, API and CLI tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from gateway.bounce.report import (
    CATEGORY_SENDER_NOT_AUTHENTICATED,
    FORMAT_RFC3464,
    BounceReport,
    OriginalMessage,
    RecipientReport,
)
from gateway.transaction import MessageContext
from storage.incidents import IncidentRecord, build_incidents, new_incident_id


def family_report(
    recipients: tuple[str, ...] = ("group@contoso.example",),
    *,
    status: str = "5.7.133",
    variant: str = "group",
    message_id: str = "<bounce-1@mx.contoso.example>",
    subject: str = "Quarterly report",
    extra_non_family: bool = True,
) -> BounceReport:
    rcpts = [
        RecipientReport(
            recipient=r,
            original_recipient=f"rfc822;{r}",
            action="failed",
            status=status,
            diagnostic=f"smtp; 550 {status} RESOLVER.RST.SenderNotAuthenticatedForGroup; {r}",
            remote_mta="dns; contoso-example.mail.protection.outlook.com",
            category=CATEGORY_SENDER_NOT_AUTHENTICATED,
            variant=variant,
        )
        for r in recipients
    ]
    if extra_non_family:
        rcpts.append(RecipientReport(recipient="user@elsewhere.example", action="failed", status="5.1.1"))
    return BounceReport(
        is_bounce=True,
        format=FORMAT_RFC3464,
        reporting_mta="dns; mta.fabrikam.example",
        message_id=message_id,
        original=OriginalMessage(
            message_id="<orig-1@fabrikam.example>",
            sender="Alice Sender <Alice@Fabrikam.example>",
            subject=subject,
            date="Mon, 05 May 2025 10:00:00 +0000",
        ),
        recipients=rcpts,
    )


def context(*, received_at: datetime | None = None, rcpt: str = "alice@fabrikam.example") -> MessageContext:
    return MessageContext(
        transaction_id="T" + uuid.uuid4().hex[:10],
        mail_from="",
        rcpt_tos=(rcpt,),
        client_address="127.0.0.1",
        helo="mta.fabrikam.example",
        received_at=received_at or datetime.now(UTC),
        size=4200,
    )


def records_for(
    n: int,
    *,
    tag: str = "",
    start: datetime | None = None,
    step: timedelta = timedelta(minutes=1),
    recipients_per_bounce: int = 1,
) -> list[IncidentRecord]:
    """``n`` bounces, each with ``recipients_per_bounce`` family recipients, one minute apart."""
    start = start or datetime.now(UTC) - timedelta(days=1)
    out: list[IncidentRecord] = []
    for i in range(n):
        rcpts = tuple(f"group{i % 7}-{j}@contoso{i % 3}.example" for j in range(recipients_per_bounce))
        report = family_report(
            rcpts, message_id=f"<bounce-{tag}{i}@mx.example>", variant=("group", "mailbox")[i % 2]
        )
        ctx = context(received_at=start + i * step, rcpt=f"sender{i % 4}@fabrikam{i % 2}.example")
        out += build_incidents(
            report,
            ctx,
            ids=[new_incident_id() for _ in report.family],
            annotated=True,
            relay_outcome="250",
            instance="test",
            store_subjects=True,
        )
    return out
