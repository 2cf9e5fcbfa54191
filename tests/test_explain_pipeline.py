"""parse() (which classifies) + annotate() over every built positive and the corpus's Exchange samples.

Byte-for-byte: outside the human parts the parser located, the output is the input
(only the X-Bouncegw-Explained header is added); the delivery-status fields re-parse
the same; annotating twice is refused.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.bounce.parse import parse
from gateway.bounce.report import RecipientReport
from gateway.config import ExplainSettings
from gateway.explain import AlreadyExplained, ExplainError, annotate
from tests.corpus_table import CORPUS
from tests.explain_checks import assert_outside_identical, delivery_status_fields, human_texts, longest_line
from tests.positives import POSITIVES

NOW = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
SETTINGS = ExplainSettings()
EXCHANGE_SAMPLES = sorted((CORPUS / "sisimai" / "maildir" / "bsd").glob("lhost-exchange*.eml"))


def _check(data: bytes) -> bytes:
    report = parse(data)
    assert report.family, "the sample must have a family recipient"
    ids = [f"01TEST{i:04d}" for i in range(len(report.family))]
    out = annotate(data, report, incident_ids=ids, now=NOW, settings=SETTINGS)
    assert_outside_identical(data, out, report.human_parts)
    assert delivery_status_fields(out) == delivery_status_fields(data)
    assert longest_line(out) <= max(998, longest_line(data))
    texts = human_texts(out)
    for kind in ("text/plain", "text/html"):
        # Every human part the parser found carries the block.
        assert sum(kind == p.content_type for p in report.human_parts) <= len(texts.get(kind, []))
    joined = "\n".join(t for ts in texts.values() for t in ts)
    assert "メッセージは配信されませんでした" in joined
    for rcpt in report.family:
        assert rcpt.recipient is None or rcpt.recipient in " ".join(joined.split())
    again = parse(out)
    assert again.already_explained
    with pytest.raises(AlreadyExplained):
        annotate(out, again, incident_ids=None, now=NOW, settings=SETTINGS)
    return out


@pytest.mark.parametrize("positive", POSITIVES, ids=[p.name for p in POSITIVES])
def test_every_positive_annotates_byte_exactly(positive) -> None:  # type: ignore[no-untyped-def]
    out = _check(positive.data)
    assert out.startswith(b"X-Bouncegw-Explained: ")


def test_corpus_is_present() -> None:
    assert len(EXCHANGE_SAMPLES) >= 10


@pytest.mark.parametrize("path", EXCHANGE_SAMPLES, ids=[p.name for p in EXCHANGE_SAMPLES])
def test_corpus_exchange_samples(path: Path) -> None:
    """The corpus has no 5.7.12-family sample except one legacy AuthRequired bounce.

    Each sample is annotated as if its every failed recipient were in the family
    (the block's content does not matter here: the splice into real-world Exchange
    layouts, charsets and encodings does), and must come out byte-exact outside
    its human parts, or be refused with ExplainError (never damaged output).
    """
    data = path.read_bytes()
    report = parse(data)
    if not report.human_parts:
        pytest.skip("the parser found no human part (not a bounce)")
    if not report.recipients:
        # Exchange 2003 text bounces whose recipient the parser did not extract: the
        # splice is what is under test, so give the report a recipient to explain.
        report.recipients.append(RecipientReport(recipient="someone@example.jp", action="failed"))
    for rcpt in report.recipients:
        if rcpt.category is None:
            rcpt.category, rcpt.variant = "sender_not_authenticated", "organization"
    try:
        out = annotate(data, report, incident_ids=None, now=NOW, settings=SETTINGS)
    except ExplainError as exc:
        pytest.fail(f"refused: {exc}")
    assert_outside_identical(data, out, report.human_parts)
    assert delivery_status_fields(out) == delivery_status_fields(data)


def test_the_real_legacy_authrequired_bounce() -> None:
    data = (CORPUS / "sisimai" / "maildir" / "bsd" / "lhost-exchange2007-04.eml").read_bytes()
    report = parse(data)
    assert [r.variant for r in report.family] == ["legacy"]
    out = _check(data)
    # ISO-2022-JP quoted-printable human part: kept ISO-2022-JP, still quoted-printable.
    assert out.isascii()
    plain = human_texts(out)["text/plain"][0]
    assert "Exchange 管理コンソール" in plain
    assert "Your message can't be delivered because delivery to this address is restricted." in plain
