"""The bounce digest from the parser's reading of the root equals the digest that reads it itself.

``gateway.identity.bounce_digest(data, report.root_identity)`` skips reading the root header
block; an incident's id depends on the digest, so the two must agree on every message, or a
bounce relayed before and scanned after (or the other way round) would be two incidents.
For the same reason, a copy read back from a mailbox gives the digest of the copy on the wire.
"""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.bounce.parse import ParseError, parse
from gateway.identity import as_on_the_wire, bounce_digest
from tests.benchmarks import messages
from tests.corpus_table import CORPUS, require_corpus
from tests.positives import NEGATIVES, POSITIVES, with_mbox_quoted_lines


def _both(data: bytes) -> tuple[str, str] | None:
    try:
        report = parse(data)
    except ParseError:
        return None
    return bounce_digest(data), bounce_digest(data, report.root_identity)


def test_digest_from_the_parsers_root_is_the_digests_own_on_the_corpus() -> None:
    files = sorted(p for p in require_corpus().rglob("*") if p.is_file() and p.suffix in (".eml", ".txt", ""))
    compared = with_root = 0
    for path in files:
        for data in (path.read_bytes(), as_on_the_wire(path.read_bytes())):
            both = _both(data)
            if both is None:
                continue
            compared += 1
            with_root += parse(data).root_identity is not None
            assert both[0] == both[1], path.relative_to(CORPUS)
    # The corpus is hundreds of messages: a loader that found none would prove nothing.
    assert compared > 300 and with_root > 300


@pytest.mark.parametrize("sample", POSITIVES + NEGATIVES, ids=lambda s: s.name)
def test_digest_from_the_parsers_root_on_built_samples(sample: object) -> None:
    both = _both(sample.data)  # type: ignore[attr-defined]
    assert both is not None and both[0] == both[1]


def test_benchmark_bounces_have_a_root_identity() -> None:
    for data in (messages.family(), messages.exchange_online(20 * 1024)):
        report = parse(data, envelope_sender="")
        assert report.root_identity is not None
        assert report.root_identity.message_id and report.root_identity.date
        assert bounce_digest(data) == bounce_digest(data, report.root_identity)


@pytest.mark.parametrize(
    "data",
    [
        b"\r\nno header block at all\r\n",  # opens with the empty line
        b"\r\n\r\nbody after two empty lines\r\n",
        b"Subject: no body and no empty line\r\n",
        b"Subject: x\nDate: Mon, 2 Jun 2025 01:02:05 +0000\n\nLF body\n",
        b"Message-ID: <a@b>\r\nMessage-ID: <second@b>\r\nDate:  folded\r\n  date\r\n\r\nbody\nbare LF\r\n",
        b"From nobody Mon Jun  2 01:02:05 2025\r\nSubject: mbox line first\r\n\r\nbody\r\n",
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: =?utf-8?q?x?=\r\n\r\nbody\r\n",
    ],
)
def test_digest_agrees_on_unusual_layouts(data: bytes) -> None:
    both = _both(data)
    assert both is not None and both[0] == both[1]


@given(
    st.lists(
        st.sampled_from(
            [
                b"Message-ID: <m@x>",
                b"message-id:<n@x>",
                b"Date: Mon, 2 Jun 2025 01:02:05 +0000",
                b"DATE:\t x",
                b" folded",
                b"\tfolded",
                b"Subject: s",
                b"not a field",
                b"",
                b"From x",
                b"body line",
                b"\xff\xfe",
            ]
        ),
        max_size=12,
    ),
    st.sampled_from([b"\r\n", b"\n", b"\r"]),
)
def test_digest_agrees_on_generated_layouts(lines: list[bytes], newline: bytes) -> None:
    data = newline.join(lines) + newline
    both = _both(data)
    if both is not None:
        assert both[0] == both[1]


def test_an_mbox_copy_has_the_digest_of_the_bounce_on_the_wire(tmp_path: Path) -> None:
    wire = with_mbox_quoted_lines()
    assert parse(wire).family, "still a family bounce"
    box = mailbox.mbox(tmp_path / "inbox.mbox")
    try:
        key = box.add(b"Return-Path: <>\r\nDelivered-To: postmaster@example.org\r\n" + wire)
        box.flush()
        copy = as_on_the_wire(box.get_bytes(key))
    finally:
        box.close()
    assert b"\n>From the team" in (tmp_path / "inbox.mbox").read_bytes(), "the mailbox module quotes"
    assert copy != wire
    assert bounce_digest(copy) == bounce_digest(wire) == bounce_digest(wire, parse(wire).root_identity)
    # mboxrd quotes the quoted line once more; the digest reads both forms as the wire's.
    mboxrd = copy.replace(b"\r\n>From a reply", b"\r\n>>From a reply")
    assert bounce_digest(mboxrd) == bounce_digest(wire)
    # Other text still tells bounces apart, and so does a ">" that is not before "From ".
    assert bounce_digest(copy.replace(b"figures are", b"figures were")) != bounce_digest(wire)
    assert bounce_digest(wire.replace(b">From a reply", b">Fro a reply")) != bounce_digest(wire)
