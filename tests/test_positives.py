"""Every built positive is found, with the right recipient, status, category and variant."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import quopri

import pytest

from gateway.bounce.parse import parse
from gateway.bounce.prefilter import might_be_family_bounce
from gateway.bounce.report import BounceReport, HumanPart
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


def check_human_parts(data: bytes, report: BounceReport, *, strict_charset: bool = True) -> None:
    """Offsets are exact: header block + blank line, and a body that decodes as the part's content."""
    for hp in report.human_parts:
        check_human_part(data, hp, strict_charset=strict_charset)


def check_human_part(data: bytes, hp: HumanPart, *, strict_charset: bool = True) -> None:
    assert 0 <= hp.headers_start <= hp.body_start <= hp.body_end <= len(data)
    block = data[hp.headers_start : hp.body_start]
    # A part without header lines is just its blank line; CR-only files (old Mac
    # mailboxes in the corpus) end that line with a bare CR.
    assert block.endswith((b"\r\n\r\n", b"\n\n", b"\r\r")) or block in (b"\r\n", b"\n", b"\r")
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(block)
    if hp.headers_start > 0:  # a part, not the whole message: its own Content-Type
        # Compare the type token only: a Content-Type that forgets the ";" before its
        # parameters ("text/plain\n   charset=...") is read by the stdlib as one long
        # type, while the offsets themselves are right.
        assert headers.get_content_type().split()[0] == hp.content_type
    assert (headers.get("Content-Transfer-Encoding") or "7bit").strip().lower() == hp.transfer_encoding
    # The body ends where the delimiter's line break starts, or at the end of the input.
    tail = data[hp.body_end :]
    empty_at_delimiter = hp.body_start == hp.body_end and tail.startswith(b"--")
    assert tail == b"" or empty_at_delimiter or tail.startswith((b"\r\n--", b"\n--", b"\r--")), tail[:20]
    raw = data[hp.body_start : hp.body_end]
    if hp.transfer_encoding == "base64":
        decoded = base64.b64decode(b"".join(raw.split()), validate=strict_charset)
    elif hp.transfer_encoding == "quoted-printable":
        decoded = quopri.decodestring(raw)
    else:
        decoded = raw
    if strict_charset and hp.charset:
        decoded.decode(hp.charset)


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
