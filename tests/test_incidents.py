"""Incident records built from a parsed bounce and its transaction (gateway.incidents)."""

from __future__ import annotations

import pytest

from gateway.identity import bounce_digest
from gateway.incidents import build_incidents, stable_ids
from storage.incidents import SOURCE_SCAN, incident_id, new_incident_id
from tests.report_builders import context, family_report


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
