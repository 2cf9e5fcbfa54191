"""``gateway.textsafe``: outside text escaped for replies, terminals, CSV and JSON."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from gateway.replies import COMMAND_TOO_LONG, REPLY_LINE_MAX, client_text, final_reply, safe_reply
from gateway.textsafe import csv_cell, json_text, printable

#: What must never reach a terminal raw: C0 (but the newline JSON indents with), DEL, C1,
#: separators, bidirectional and other format characters, lone surrogates.
LIVE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def test_printable_escapes_what_a_terminal_would_run() -> None:
    assert printable("\x1b[31mRED\x07") == "\\x1b[31mRED\\x07"
    assert printable("a\x9b2J\u202eb\x7f") == "a\\x9b2J\\u202eb\\x7f"
    assert printable("配信不能\u3000報告") == "配信不能\u3000報告"  # readable text stays
    assert printable("caf\xe9", ascii_only=True) == "caf\\xe9"
    assert printable("\udcff", ascii_only=True) == "\\xff"  # a raw byte from surrogateescape
    assert printable("x" * 50, limit=10) == "xxxxxxx..."
    assert client_text("\x00\x1b[31MRED\x07") == "\\x00\\x1b[31MRED\\x07"


@given(st.text())
def test_printable_leaves_nothing_live_and_is_stable(text: str) -> None:
    once = printable(text)
    assert not LIVE.search(once) and "\n" not in once
    assert printable(once) == once
    assert all(" " <= ch <= "~" for ch in printable(text, ascii_only=True))


@given(st.dictionaries(st.text(), st.text() | st.integers()))
def test_json_text_is_the_same_data_with_nothing_live(data: dict[str, object]) -> None:
    for indent in (None, 2):
        text = json_text(json.dumps(data, ensure_ascii=False, indent=indent))
        assert json.loads(text) == data
        assert not LIVE.search(text)


def test_csv_cells_are_never_formulas() -> None:
    assert [csv_cell(v) for v in ("=1+1", "+1", "-2", "@SUM(A1)", "ok", "a=b")] == [
        "'=1+1", "'+1", "'-2", "'@SUM(A1)", "ok", "a=b",
    ]  # fmt: skip
    assert csv_cell(5) == 5 and csv_cell(None) is None
    assert csv_cell("=\x1b[2J") == "'=\\x1b[2J"


def test_replies_are_printable_and_bounded() -> None:
    assert safe_reply("250 2.0.0 Ok") == "250 2.0.0 Ok"
    assert final_reply("500 Command line too long", enhanced=True) == COMMAND_TOO_LONG
    lines = safe_reply("550-5.1.1 a\x1b[2J\r\n550 5.1.1 " + "b" * 600 + "\nc").split("\r\n")
    assert lines[0] == "550-5.1.1 a\\x1b[2J"
    assert len(lines) == 2 and len(lines[1]) == REPLY_LINE_MAX and "\n" not in lines[1]
    # The enhanced code is added before the length is bounded.
    [line] = final_reply("502 Could not VRFY " + "v" * 600, enhanced=True).split("\r\n")
    assert line.startswith("502 5.5.1 Could not VRFY") and len(line) == REPLY_LINE_MAX
