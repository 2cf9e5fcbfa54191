"""Incident records built from a parsed bounce and its transaction (gateway.incidents)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from gateway.identity import bounce_digest
from gateway.incidents import build_incidents, stable_ids
from gateway.bounce.report import (
    CATEGORY_SENDER_NOT_AUTHENTICATED,
    FORMAT_RFC3464,
    BounceReport,
    OriginalMessage,
    RecipientReport,
)
from gateway.transaction import MessageContext
from storage.incidents import SOURCE_SCAN, incident_id, new_incident_id


def family_report(
    recipients: tuple[str, ...] = ("group@contoso.example",),
    *,
    status: str = "5.7.133",
    variant: str = "group",
    message_id: str = "<bounce-1@mx.contoso.example>",
    subject: str = "Quarterly report",
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


def context(*, rcpt: str = "alice@fabrikam.example") -> MessageContext:
    return MessageContext(
        transaction_id="T" + uuid.uuid4().hex[:10],
        mail_from="",
        rcpt_tos=(rcpt,),
        client_address="127.0.0.1",
        helo="mta.fabrikam.example",
        received_at=datetime.now(UTC),
        size=4200,
    )


def test_build_incidents_one_per_family_recipient_in_id_order() -> None:
    report = family_report(("a@contoso.example", "B@Contoso.example"))
    ids = [new_incident_id(), new_incident_id()]
    records = build_incidents(
        report, context(), ids=ids, annotated=True, relay_outcome="250", instance="gw1", store_subjects=True
    )
    assert [r.id for r in records] == ids
    assert [r.failed_recipient for r in records] == ["a@contoso.example", "b@contoso.example"]
    first = records[0]
    assert first.recipient_domain == "contoso.example"
    assert first.sender == "alice@fabrikam.example" and first.sender_domain == "fabrikam.example"
    assert first.status == "5.7.133" and first.variant == "group"
    assert first.original_subject == "Quarterly report"
    assert first.annotated is True and first.instance == "gw1" and first.relay_outcome == "250"
    assert first.fingerprint != records[1].fingerprint
    assert sorted(ids) == ids  # ULIDs sort by creation time


def test_privacy_option_drops_the_subject_and_retry_keeps_the_fingerprint() -> None:
    report = family_report()
    kwargs = {"annotated": False, "relay_outcome": "250", "instance": "gw1"}
    raw = b"the bounce bytes"
    one = build_incidents(
        report,
        context(),
        ids=[new_incident_id()],
        store_subjects=False,
        bounce_digest=bounce_digest(raw),
        **kwargs,
    )
    retry = build_incidents(
        report,
        context(),
        ids=[new_incident_id()],
        store_subjects=True,
        bounce_digest=bounce_digest(raw),
        **kwargs,
    )
    assert one[0].original_subject is None
    assert one[0].fingerprint == retry[0].fingerprint
    other = build_incidents(
        report,
        context(),
        ids=[new_incident_id()],
        store_subjects=True,
        bounce_digest=bounce_digest(b"x"),
        **kwargs,
    )
    assert other[0].fingerprint != one[0].fingerprint
    with pytest.raises(ValueError, match="ids"):
        build_incidents(report, context(), ids=[], store_subjects=True, **kwargs)


def test_stable_ids_are_the_ids_of_the_fingerprints_and_repeat_for_a_retry() -> None:
    report = family_report(("a@contoso.example", "b@contoso.example"))
    digest = bounce_digest(b"the bounce bytes")
    ids = stable_ids(report, digest)
    assert ids == stable_ids(report, digest)  # a retry names the same incidents
    assert len(set(ids)) == 2
    assert stable_ids(report, bounce_digest(b"another bounce")) != ids
    assert stable_ids(report, None) != ids  # without bytes: the report's identifying fields
    records = build_incidents(
        report,
        context(),
        ids=ids,
        annotated=False,
        relay_outcome="relayed",
        instance="gw1",
        store_subjects=True,
        bounce_digest=digest,
        source=SOURCE_SCAN,
    )
    assert [incident_id(r.fingerprint, report.date) for r in records] == list(ids)
    assert {r.source for r in records} == {SOURCE_SCAN}
