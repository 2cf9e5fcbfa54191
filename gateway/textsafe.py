"""Outside text (SMTP clients, bounces) made safe for the place it is shown in.

Anything a client or a bounce wrote is attacker-controlled. Before it goes into an SMTP reply, a
terminal or a CSV cell, every character that could act instead of being read is escaped:
C0 and C1 controls (ESC starts terminal escape sequences; 0x9B is a one-byte CSI), DEL, line and
paragraph separators, and Unicode format characters (bidirectional overrides can make a terminal
show text in a different order than it is stored). Escapes are written as ``\\xNN``, ``\\uNNNN``
or ``\\UNNNNNNNN``, so what was there stays visible and nothing is silently dropped.

- :func:`printable` is the one escaper; ``ascii_only`` for SMTP replies (RFC 5321 section 2.4:
  replies are US-ASCII), Unicode text kept for terminals (a Japanese subject stays readable).
- :func:`clip` normalises a value before it is stored as evidence: whitespace collapsed,
  non-printable characters replaced, length bounded.
- :func:`csv_cell` and :func:`json_text` apply the same rule to those two output formats.
"""

from __future__ import annotations

import re
import unicodedata

#: Characters that need no escaping in a terminal besides the printable ones: spaces of other
#: widths (U+3000 IDEOGRAPHIC SPACE is ordinary in Japanese text).
_SPACE_CATEGORIES = frozenset({"Zs"})
#: Spreadsheets run a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@")


def _safe_char(ch: str, ascii_only: bool) -> bool:
    if " " <= ch <= "~":
        return True
    if ascii_only:
        return False
    return ch.isprintable() or unicodedata.category(ch) in _SPACE_CATEGORIES


def _escape(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a raw byte kept by surrogateescape decoding
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, *, ascii_only: bool = False, limit: int | None = None) -> str:
    """``text`` with every unsafe character escaped; at most ``limit`` characters (``...`` ends a cut)."""
    if not (text.isprintable() and (text.isascii() or not ascii_only)):
        text = "".join(ch if _safe_char(ch, ascii_only) else _escape(ch) for ch in text)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


#: How long a piece of evidence (a diagnostic line, a matched header) is kept.
EVIDENCE_LIMIT = 200


def clip(text: str, limit: int = EVIDENCE_LIMIT) -> str:
    """One line for evidence: whitespace collapsed, non-printable characters replaced by ``?``."""
    text = " ".join(text.split())
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:limit]


def csv_cell(value: object) -> object:
    """A CSV value: strings escaped, and a leading ``'`` where a spreadsheet would see a formula."""
    if not isinstance(value, str):
        return value
    text = printable(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


#: Outside printable ASCII; the newline is left alone (json.dumps escapes it inside strings, so
#: a raw one is the indentation's).
_JSON_UNSAFE = re.compile(r"[^\x20-\x7e\n]")


def _json_escape(match: re.Match[str]) -> str:
    ch = match.group()
    if _safe_char(ch, False):
        return ch
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON escapes astral characters as a UTF-16 surrogate pair (RFC 8259 section 7)
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_text(dumped: str) -> str:
    """JSON text (as ``json.dumps(..., ensure_ascii=False)`` writes it) with every unsafe character
    written as a ``\\u`` escape: the same data for a JSON reader, nothing live for a terminal."""
    if dumped.isascii():  # json.dumps already escaped the C0 controls; DEL is the one left
        return dumped.replace("\x7f", "\\u007f")
    return _JSON_UNSAFE.sub(_json_escape, dumped)
