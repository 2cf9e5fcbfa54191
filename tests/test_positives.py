"""Every built positive is found, with the right recipient, status, category and variant."""

from __future__ import annotations

import base64
import quopri

import pytest

from gateway.bounce.parse import parse
from gateway.bounce.prefilter import might_be_family_bounce
from tests.human_parts import check_human_parts
from tests.positives import LAYOUT_NEGATIVES, LAYOUT_POSITIVES, NEGATIVES, POSITIVES


def test_there_are_enough_positives() -> None:
    assert len(POSITIVES) >= 30
    assert len({p.name for p in POSITIVES}) == len(POSITIVES)


@pytest.mark.parametrize("pos", POSITIVES, ids=[p.name for p in POSITIVES])
def test_positive_is_found(pos) -> None:  # type: ignore[no-untyped-def]
    assert might_be_family_bounce(pos.data)
    report = parse(pos.data)
    assert report.is_bounce
    assert report.format == pos.format
    got = [(r.recipient, r.status, r.category, r.variant) for r in report.family]
    assert got == pos.expected
    assert all(r.evidence for r in report.family)
    assert report.human_parts


@pytest.mark.parametrize("pos", POSITIVES, ids=[p.name for p in POSITIVES])
def test_positive_human_part_offsets(pos) -> None:  # type: ignore[no-untyped-def]
    report = parse(pos.data)
    check_human_parts(pos.data, report)
    plain = [hp for hp in report.human_parts if hp.content_type == "text/plain"]
    assert plain
    hp = plain[0]
    raw = pos.data[hp.body_start : hp.body_end]
    if hp.transfer_encoding == "base64":
        raw = base64.b64decode(b"".join(raw.split()))
    elif hp.transfer_encoding == "quoted-printable":
        raw = quopri.decodestring(raw)
    text = raw.decode(hp.charset or "utf-8")
    assert pos.expected[0][0] in text


def test_multipart_alternative_gives_both_parts() -> None:
    pos = next(p for p in POSITIVES if p.name == "exo-qp-5.7.133")
    types = [hp.content_type for hp in parse(pos.data).human_parts]
    assert types == ["text/plain", "text/html"]


def test_related_inside_alternative_is_followed() -> None:
    pos = next(p for p in POSITIVES if p.name.startswith("exo-8bit-related"))
    types = [hp.content_type for hp in parse(pos.data).human_parts]
    assert types == ["text/plain", "text/html"]


def test_original_message_is_read() -> None:
    pos = next(p for p in POSITIVES if p.name == "exo-qp-5.7.133")
    report = parse(pos.data)
    assert report.original is not None
    assert report.original.message_id == "<orig-0001@example.org>"
    assert report.original.subject == "Quarterly report"


def test_already_explained_header() -> None:
    pos = POSITIVES[0]
    marked = b"X-Bouncegw-Explained: yes\r\n" + pos.data
    assert parse(marked).already_explained
    assert not parse(pos.data).already_explained


def test_microsoft_evidence_recorded() -> None:
    for pos in POSITIVES:
        assert parse(pos.data).microsoft_evidence, pos.name


def test_negatives_never_hide_positives() -> None:
    # The lists are reused by other tests: keep them distinct.
    assert not {p.name for p in POSITIVES} & {n.name for n in NEGATIVES}


@pytest.mark.parametrize("pos", LAYOUT_POSITIVES, ids=[p.name for p in LAYOUT_POSITIVES])
def test_layout_from_public_reports_keeps_the_reported_status(pos) -> None:  # type: ignore[no-untyped-def]
    assert pos.source, "every layout row cites where it comes from"
    family = parse(pos.data).family
    expected = pos.reported or [status for _, status, _, _ in pos.expected]
    assert [r.reported_status for r in family] == expected


def test_layout_negatives_cite_their_source() -> None:
    assert LAYOUT_NEGATIVES and all(n.source for n in LAYOUT_NEGATIVES)
