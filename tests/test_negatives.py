"""Near misses: never classified as "sender not authenticated"."""

from __future__ import annotations

import pytest

from gateway.bounce.parse import parse
from gateway.bounce.prefilter import might_be_family_bounce
from gateway.bounce.report import CATEGORY_SENDER_NOT_AUTHENTICATED
from tests.positives import NEGATIVES


@pytest.mark.parametrize("neg", NEGATIVES, ids=[n.name for n in NEGATIVES])
def test_negative(neg) -> None:  # type: ignore[no-untyped-def]
    report = parse(neg.data)
    assert report.is_bounce is neg.is_bounce
    assert not [r for r in report.recipients if r.category == CATEGORY_SENDER_NOT_AUTHENTICATED]
    got = [(r.recipient, r.status, r.category, r.variant) for r in report.family]
    assert got == neg.allowed


def test_mysql_version_is_not_even_prefiltered() -> None:
    neg = next(n for n in NEGATIVES if n.name.startswith("mysql"))
    assert not might_be_family_bounce(neg.data)


def test_5_7_12_needs_microsoft_evidence() -> None:
    neg = next(n for n in NEGATIVES if n.name == "5.7.12-without-microsoft")
    report = parse(neg.data)
    assert [r.status for r in report.recipients] == ["5.7.12"]
    assert not report.microsoft_evidence
    assert report.family == []
