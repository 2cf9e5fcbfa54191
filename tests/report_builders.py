"""Parsed family bounces and transactions for the tests of what the gateway builds from them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from gateway.bounce.report import (
    CATEGORY_SENDER_NOT_AUTHENTICATED,
    FORMAT_RFC3464,
    BounceReport,
    OriginalMessage,
    RecipientReport,
)
from gateway.transaction import MessageContext


def family_report(
    recipients: tuple[str, ...] = ("group@contoso.example",),
    *,
    status: str = "5.7.133",
    variant: str = "group",
    message_id: str = "<bounce-1@mx.contoso.example>",
    subject: str = "Quarterly report",
) -> BounceReport:
    """A classified RFC 3464 bounce: ``recipients`` refused with ``status``, plus one 5.1.1 recipient."""
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
    """The transaction a bounce arrived in (null sender, one recipient)."""
    return MessageContext(
        transaction_id="T" + uuid.uuid4().hex[:10],
        mail_from="",
        rcpt_tos=(rcpt,),
        client_address="127.0.0.1",
        helo="mta.fabrikam.example",
        received_at=received_at or datetime.now(UTC),
        size=4200,
    )
