"""Dot-stuffing on the way out (RFC 5321 section 4.5.2), piece by piece: the same bytes as
stuffing the whole message at once, for any message and any piece size."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import relay


def reference(message: bytes) -> bytes:
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


#: CRLF-only messages made of lines that often start with dots and run long.
lines = st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=30)
dots = st.sampled_from([b"", b".", b"..", b"x"])
messages = st.lists(st.tuples(dots, lines), max_size=20).map(
    lambda parts: b"".join(d + b"".join(line) + b"\r\n" for d, line in parts)
)


@settings(max_examples=300, deadline=None)
@given(message=messages, piece=st.integers(min_value=1, max_value=40))
def test_pieces_join_to_the_stuffed_message(message: bytes, piece: int) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(relay, "WRITE_CHUNK", piece)
        pieces = list(relay._stuffed_pieces(message))
    assert b"".join(pieces) == reference(message)
    assert all(pieces)


def test_a_piece_without_a_dot_line_is_a_view_not_a_copy() -> None:
    message = b"plain line\r\n" * 100_000
    pieces = list(relay._stuffed_pieces(message))
    assert len(pieces) > 1 and all(isinstance(p, memoryview) for p in pieces)


@pytest.mark.parametrize(
    ("message", "end"),
    [
        (b"a\r\n", b".\r\n"),
        (b"a", b"\r\n.\r\n"),
        (b"", b"\r\n.\r\n"),
        (b"a\nb\r\n", None),
        (b"a\rb\r\n", None),
        (b"\r\r\n\n", None),  # two CR, two LF, one CRLF
        (b"a\n\rb", None),
        (b"a\rb\nc", None),
    ],
)
def test_data_end(message: bytes, end: bytes | None) -> None:
    assert relay._data_end(message) == end


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n"]), max_size=30).map(b"".join))
def test_data_end_finds_any_lone_cr_or_lf(message: bytes) -> None:
    crlf_only = re.search(rb"\r(?!\n)|(?<!\r)\n", message) is None
    assert (relay._data_end(message) is not None) == crlf_only
