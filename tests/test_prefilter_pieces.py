"""The prefilter searches a large body a piece at a time: a code found wherever it falls, including
across the seam between two pieces, and with a quoted-printable soft break in it."""

from __future__ import annotations

import pytest

from gateway.bounce import prefilter

HEAD = b"Return-Path: <>\r\nSubject: Undeliverable: report\r\n\r\n"
FILLER = b"Delivery to the following recipients failed, nothing to see here.\r\n"


@pytest.mark.parametrize("code", [b"5.7.133", b"5.7=\r\n.1=\r\n33", b"RESOLVER.RST.AuthRequired"])
@pytest.mark.parametrize("shift", range(-8, 9, 2))
def test_a_code_at_every_seam_is_found(code: bytes, shift: int) -> None:
    body = FILLER * (3 * prefilter._PIECE // len(FILLER))
    at = 2 * prefilter._PIECE + shift - len(code) // 2  # straddles the second seam
    data = HEAD + body[:at] + b" " + code + b" " + body[at:]
    assert prefilter.might_be_family_bounce(data)
    assert not prefilter.might_be_family_bounce(HEAD + body)


def test_a_base64_part_far_down_is_found() -> None:
    body = FILLER * (3 * prefilter._PIECE // len(FILLER))
    seam = len(HEAD) + 2 * prefilter._PIECE
    data = HEAD + body
    data = data[: seam - 10] + b"\r\nContent-Transfer-Encoding: base64\r\n" + data[seam - 10 :]
    assert prefilter.might_be_family_bounce(data)


def test_the_overlap_covers_the_longest_token_with_soft_breaks() -> None:
    from gateway.bounce import family

    words = {t for row in family.FAMILY.rows for t in (*row.tokens, *row.evidence_tokens)}
    longest = max(len(w) for w in words | {row.code for row in family.FAMILY.rows})
    assert longest * len(b"x=\r\n") < prefilter._OVERLAP
