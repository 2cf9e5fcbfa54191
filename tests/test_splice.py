"""Splicing a rendered block into one human part (gateway.explain.splice), through its public functions."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.bounce.report import HumanPart
from gateway.config import ExplainSettings
from gateway.explain import render, splice
from gateway.explain.render import Filled, Line, Rendered
from gateway.explain.splice import SpliceError, apply, edit_part, line_ending, qp_of_pieces
from tests.explain_samples import make, recipient

BLOCK = Rendered(text="NOTICE: the recipient only accepts authenticated senders.\n", html="<p>NOTICE</p>")
JAPANESE = Rendered(text="送信者の認証が必要です。\n", html="<p>送信者の認証が必要です。</p>")
PREAMBLE = b"From: MAILER-DAEMON@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
EPILOGUE = b"\r\n--b--\r\n"


def message(headers: bytes, body: bytes, **part: str | None) -> tuple[bytes, HumanPart]:
    """A multipart message whose first part has ``headers`` and ``body``, and where that part sits."""
    start = len(PREAMBLE)
    body_start = start + len(headers) + 2
    data = PREAMBLE + headers + b"\r\n" + body + EPILOGUE
    content_type = part.get("content_type") or "text/plain"
    human = HumanPart(
        content_type=content_type,
        charset=part.get("charset"),
        transfer_encoding=part.get("cte") or "7bit",
        headers_start=start,
        body_start=body_start,
        body_end=body_start + len(body),
    )
    return data, human


def spliced(data: bytes, part: HumanPart, rendered: Rendered = BLOCK) -> tuple[bytes, tuple[str, ...]]:
    edit = edit_part(data, part, rendered)
    assert (edit.start, edit.end) == (part.headers_start, part.body_end)
    out = apply(data, [edit])
    # ARCHITECTURE.md, invariant 3: everything outside the part is untouched.
    assert out.startswith(data[: part.headers_start]) and out.endswith(data[part.body_end :])
    return out, edit.changes


def first_part(out: bytes) -> email.message.Message:
    root = email.message_from_bytes(out, policy=email.policy.compat32)
    part = root.get_payload()[0]
    assert isinstance(part, email.message.Message)
    return part


@pytest.mark.parametrize(
    ("raw", "ending"), [(b"a\r\nb\r\n", b"\r\n"), (b"a\nb\n", b"\n"), (b"one line", b"\n")]
)
def test_line_ending(raw: bytes, ending: bytes) -> None:
    assert line_ending(raw) == ending


def test_plain_ascii_gets_the_block_first_and_nothing_else_changes() -> None:
    data, part = message(
        b"Content-Type: text/plain; charset=us-ascii\r\n", b"Delivery failed.\r\n", charset="us-ascii"
    )
    out, changes = spliced(data, part)
    assert changes == ()
    body = first_part(out).get_payload(decode=True)
    assert body == b"NOTICE: the recipient only accepts authenticated senders.\r\n\r\nDelivery failed.\r\n"
    assert b"Content-Type: text/plain; charset=us-ascii\r\n" in out  # header block kept as it was


def test_a_charset_that_cannot_carry_the_block_becomes_utf8_and_7bit_becomes_qp() -> None:
    data, part = message(
        b"Content-Type: text/plain; charset=us-ascii\r\n", b"Delivery failed.\r\n", charset="us-ascii"
    )
    out, changes = spliced(data, part, JAPANESE)
    assert changes == ("charset->utf-8", "cte:7bit->quoted-printable")
    got = first_part(out)
    assert got.get_content_charset() == "utf-8"
    assert got["Content-Transfer-Encoding"] == "quoted-printable"
    assert (
        got.get_payload(decode=True).decode("utf-8") == "送信者の認証が必要です。\r\n\r\nDelivery failed.\r\n"
    )


def test_base64_stays_base64_with_short_lines() -> None:
    text = "Zustellung fehlgeschlagen: ümlaut.\r\n".encode("iso-8859-1")
    encoded = base64.encodebytes(text).replace(b"\n", b"\r\n")
    headers = b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64\r\n"
    data, part = message(headers, encoded, charset="iso-8859-1", cte="base64")
    out, changes = spliced(data, part)
    assert changes == ()
    got = first_part(out)
    assert got["Content-Transfer-Encoding"] == "base64"
    assert (
        got.get_payload(decode=True)
        .decode("iso-8859-1")
        .endswith("\r\nZustellung fehlgeschlagen: ümlaut.\r\n")
    )
    assert max(len(line) for line in got.get_payload().splitlines()) <= 76


def test_quoted_printable_stays_quoted_printable() -> None:
    body = b"Caf=E9 ferm=E9.\r\n"
    headers = (
        b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    )
    data, part = message(headers, body, charset="iso-8859-1", cte="quoted-printable")
    out, changes = spliced(data, part)
    assert changes == ()
    got = first_part(out)
    assert got.get_payload(decode=True).decode("iso-8859-1").endswith("Café fermé.\r\n")
    assert binascii.a2b_qp(got.get_payload()).startswith(b"NOTICE:")


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (
            b'<html><body class="x">Failed.</body></html>',
            b'<html><body class="x">\r\n<p>NOTICE</p>Failed.</body></html>',
        ),
        (b"<p>Failed.</p>", b"\r\n<p>NOTICE</p><p>Failed.</p>"),  # a fragment: the block goes first
    ],
)
def test_html_gets_the_block_after_the_body_tag(html: bytes, expected: bytes) -> None:
    data, part = message(
        b"Content-Type: text/html; charset=us-ascii\r\n", html, content_type="text/html", charset="us-ascii"
    )
    out, _ = spliced(data, part)
    assert first_part(out).get_payload(decode=True) == expected


@pytest.mark.parametrize(
    ("headers", "body", "part", "error"),
    [
        (b"Content-Type: text/plain; charset=x-none\r\n", b"x\r\n", {"charset": "x-none"}, "unknown charset"),
        (b"Content-Transfer-Encoding: base64\r\n", b"!!!not base64!!!\r\n", {"cte": "base64"}, "base64"),
        (
            b"Content-Transfer-Encoding: x-uuencode\r\n",
            b"x\r\n",
            {"cte": "x-uuencode"},
            "Content-Transfer-Encoding",
        ),
        (b"Content-Type: text/plain; charset=utf-8\r\n", b"\xff\xfe\r\n", {"charset": "utf-8"}, "not valid"),
        (
            b"Content-Type: image/png\r\n",
            b"x\r\n",
            {"content_type": "image/png"},
            "not a human-readable type",
        ),
    ],
)
def test_parts_that_cannot_be_edited_safely_are_refused(
    headers: bytes, body: bytes, part: dict[str, str], error: str
) -> None:
    data, human = message(headers, body, **part)
    with pytest.raises(SpliceError, match=error):
        edit_part(data, human, BLOCK)


def test_offsets_outside_the_message_are_refused() -> None:
    data, _ = message(b"", b"x\r\n")
    with pytest.raises(SpliceError, match="offsets"):
        edit_part(data, HumanPart("text/plain", None, "7bit", 0, 10, len(data) + 1), BLOCK)
    with pytest.raises(SpliceError, match="offsets"):
        edit_part(data, HumanPart("text/plain", None, "7bit", 20, 10, 30), BLOCK)


def test_apply_puts_the_prefix_first_and_refuses_overlaps() -> None:
    data, part = message(b"", b"Delivery failed.\r\n")
    edit = edit_part(data, part, BLOCK)
    out = apply(data, [edit], prefix=b"X-Test: 1\r\n")
    assert out.startswith(b"X-Test: 1\r\n" + PREAMBLE) and out.endswith(EPILOGUE)
    assert apply(data, []) == data
    with pytest.raises(SpliceError, match="overlap"):
        apply(data, [edit, edit])


# Characters that decide quoted-printable's output: whitespace and "." at line ends, "=", 8-bit
# text, NUL, runs long enough for soft breaks, line breaks of both kinds.
_QP_ATOMS = st.sampled_from(
    ["a", " ", "\t", ".", "=", "あ", "é", "\x00", "x" * 70, "<body>", "\r\n", "\n", "\r"]
)
_QP_TEXT = st.lists(_QP_ATOMS, max_size=12).map("".join)


@given(
    newline=st.sampled_from(["\r\n", "\n"]),
    before=_QP_TEXT,
    block=st.lists(_QP_TEXT.map(lambda t: t.replace("\r", "").replace("\n", "")), max_size=5),
    after=_QP_TEXT,
    ends_line=st.booleans(),
)
# Soft breaks in text after the block without a break of its own; in the text before it; a
# trailing space and a lone "." at the end of the text and of a line; a line exactly 76 long.
@example(newline="\r\n", before="", block=["a"], after="x" * 80, ends_line=False)
@example(newline="\r\n", before="y" * 80, block=[], after="", ends_line=True)
@example(newline="\n", before="", block=["a ", "."], after="b .", ends_line=False)
@example(newline="\r\n", before="", block=["x" * 76], after="\r\n.", ends_line=False)
def test_quoted_printable_of_pieces_is_b2a_qp_of_the_whole(
    newline: str, before: str, block: list[str], after: str, ends_line: bool
) -> None:
    if ends_line:  # as the caller cuts it: the block starts a line
        before += newline
    block_text = "".join(line + "\n" for line in block)
    pieces = (before, block_text, after)
    encoded = qp_of_pieces(pieces, newline)
    whole = (before + block_text.replace("\n", newline) + after).encode("utf-8")
    if encoded is not None:  # None: line breaks other than ``newline`` (the caller encodes the whole)
        assert encoded == binascii.b2a_qp(whole, quotetabs=False, istext=True, header=False)
    uniform = all(
        t.count("\r") == t.count("\n") == t.count("\r\n") if newline == "\r\n" else "\r" not in t
        for t in (before, after)
    )
    assert (encoded is not None) == (uniform and (before == "" or before.endswith("\n")))


#: Values for a cached block's lines: braces (its lines are format strings), the characters that
#: decide quoted-printable, and a line break (no value holds one; if one did, no plan is used).
_VALUES = st.lists(
    st.sampled_from(["", "a", "{0}", "}{", "{", " ", "\t", ".", "=", "あ", "x" * 70, "\n"]),
    min_size=1,
    max_size=4,
)
#: The skeleton's literals: block text, with line breaks but no CR (a block has none).
_LITERALS = st.lists(_QP_TEXT.map(lambda t: t.replace("\r", "")), min_size=1, max_size=6)


@given(
    newline=st.sampled_from(["\r\n", "\n"]),
    before=_QP_TEXT,
    literals=_LITERALS,
    values=_VALUES,
    data=st.data(),
    after=_QP_TEXT,
    ends_block=st.booleans(),
)
@example(
    newline="\r\n",
    before="",
    literals=["a\n{x}", " .\n"],
    values=["."],
    data=None,
    after="b",
    ends_block=True,
)
def test_quoted_printable_of_a_cached_block_is_b2a_qp_of_the_whole(
    newline: str,
    before: str,
    literals: list[str],
    values: list[str],
    data: st.DataObject | None,
    after: str,
    ends_block: bool,
) -> None:
    """A block the render cache made (its skeleton's lines and the values) encodes as a whole."""
    if ends_block:
        literals[-1] += "\n"
    count = len(literals) - 1
    index = st.integers(0, len(values) - 1)
    indexes = [0] * count if data is None else data.draw(st.lists(index, min_size=count, max_size=count))
    skeleton = render._Pieces(tuple(literals), tuple(indexes))
    block = skeleton.join(values)
    filled = Filled(skeleton.lines(), tuple(values))
    lines = [line.fill(values) if isinstance(line, Line) else line for line in filled.lines.lines]
    assert "\n".join(lines) == block
    before = before + newline if before else ""  # as the caller cuts it: the block starts a line
    pieces = (before, block, after)
    encoded = qp_of_pieces(pieces, newline, filled)
    assert encoded == qp_of_pieces(pieces, newline)
    whole = (before + block.replace("\n", newline) + after).encode("utf-8")
    if encoded is not None:
        assert encoded == binascii.b2a_qp(whole, quotetabs=False, istext=True, header=False)
    # The plan serves every block that is empty or ends with a line break, whose values hold none
    # (the cache's values are never empty: an empty one stays in the skeleton).
    used = {values[i] for i in indexes}
    for crlf in (False, True) if all(used) else ():
        planned = splice._filled_qp(filled, crlf) is not None
        ends_line = block == "" or block.endswith("\n")
        assert planned == (ends_line and not any("\n" in value for value in used))


NOW = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    ("charset", "cte", "layout", "japanese", "nl"),
    [
        (charset, cte, layout, charset == "iso-2022-jp", nl)
        for charset, cte, layout, nl in itertools.product(
            ["us-ascii", "utf-8", "iso-8859-1", "iso-2022-jp"],
            ["7bit", "8bit", "quoted-printable", "base64"],
            ["alternative", "text", "non_mime"],
            [b"\r\n", b"\n"],
        )
    ],
)
def test_a_block_from_the_render_cache_is_spliced_as_the_full_render_is(
    charset: str, cte: str, layout: str, japanese: bool, nl: bytes
) -> None:
    """The cached block's lines (quoted-printable once per skeleton) change no byte of the edit."""
    sample = make(
        [recipient("sales-team@contoso.example", "group"), recipient("x@example.jp", "mailbox")],
        charset=charset,
        cte=cte,
        layout=layout,
        japanese=japanese,
        nl=nl,
        subject="{0} {{x}} = .",
    )
    for settings in (ExplainSettings(), ExplainSettings(languages=["en"])):
        cached = Rendered("", "")
        for _ in range(2):  # the first render fills the skeleton cache, the second comes from it
            cached = render.render(sample.report, incident_ids=["ID-1", "ID-2"], now=NOW, settings=settings)
        assert cached.text_lines is not None and cached.html_lines is not None
        full = Rendered(cached.text, cached.html)
        splice._QP_PLANS.clear()  # (a full cache is emptied when a plan is added)
        for part in sample.report.human_parts:
            assert edit_part(sample.data, part, cached) == edit_part(sample.data, part, full)
        # UTF-8 quoted-printable comes out here (the Japanese block is not ASCII): from the plan.
        if (
            len(settings.languages) == 2
            and charset in ("us-ascii", "utf-8")
            and cte in ("7bit", "quoted-printable")
        ):
            assert any(key[0] is cached.text_lines.lines for key in splice._QP_PLANS)
