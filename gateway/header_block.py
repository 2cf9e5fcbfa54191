"""A header block (RFC 5322 section 2.2) as the standard library's compat32 ``Message``, cheaply.

The parser reads the header blocks of a bounce (its root, each part, the returned message) and
the annotation's validation reads those of the parts it edited. The stdlib's feedparser costs
about ten times what these few short blocks need, because of its per-line machinery. So a block
in which every line is a field or the folding of one is read here, into exactly the fields that
parser would store (``tests/test_parse_fast_paths.py`` compares the two on the whole corpus).
Anything unusual (a first line that is folded, a line that is no field, an mbox ``From_`` line)
goes to the stdlib parser, and with it its defect handling. :func:`empty_line` finds where a
header block ends.

Raw UTF-8 in header fields is allowed by RFC 6532 (Japanese carriers send it); the bytes parser
would turn it into opaque "unknown-8bit" Header objects. So the block is decoded as UTF-8, and
bytes that are not UTF-8 become U+FFFD: a surrogate would make compat32 build a Header object
whose ``str()`` raises.
"""

from __future__ import annotations

import re
from email import policy
from email.message import Message
from email.parser import HeaderParser
from typing import Final

#: One field: its name (printable US-ASCII except ":", as the stdlib's feedparser accepts it;
#: RFC 5322 §2.2), then its value with any folded lines, then the line break that ends it.
#: The feedparser breaks lines at CRLF, LF or CR.
_FIELD_RE: Final = re.compile(
    r"([!-9;-~]+):[ \t]*([^\r\n]*(?:(?:\r\n|\n|\r)[ \t][^\r\n]*)*)(?:\r\n|\n|\r|\Z)"
)
#: The empty line that ends the block.
_EMPTY_LINE_RE: Final = re.compile(r"\r\n|\n|\r|\Z")


#: The empty line that ends a header block, whatever the line ends, in the order a regular
#: expression alternation would try them.
_EMPTY_LINES: Final = (b"\r\n\r\n", b"\n\n", b"\r\r", b"\r\n\n", b"\n\r\n")


def empty_line(data: bytes, start: int = 0, end: int | None = None) -> tuple[int, int] | None:
    """(start, end) of the first empty line in ``data[start:end]``: the leftmost, then the first
    in :data:`_EMPTY_LINES` (what ``re.search`` on their alternation finds). A regular expression
    has no literal to skip ahead with here and crawls through a long header block (Exchange's
    run to 13 KB); ``bytes.find`` does not.
    """
    stop = len(data) if end is None else end
    best: tuple[int, int] | None = None
    for sep in _EMPTY_LINES:
        # A later alternative wins only by starting earlier: search no further than that.
        at = data.find(sep, start, stop if best is None else min(stop, best[0] - 1 + len(sep)))
        if at >= 0 and (best is None or at < best[0]):
            best = (at, at + len(sep))
    return best


def parse(block: bytes) -> Message:
    """The fields of ``block`` (a body after its empty line is ignored)."""
    text = block.decode("utf-8", "replace")
    fields = plain_fields(text)
    if fields is None:
        return HeaderParser(policy=policy.compat32).parsestr(text)
    message = Message()
    for name, value in fields:
        message.set_raw(name, value)
    return message


def plain_fields(text: str) -> list[tuple[str, str]] | None:
    """(name, value) of a block whose every line is a field or its folding; else None.

    The values are what the compat32 policy stores: folding kept, the line break after the last
    line dropped.
    """
    fields: list[tuple[str, str]] = []
    at, end = 0, len(text)
    while at < end and not _EMPTY_LINE_RE.match(text, at):
        match = _FIELD_RE.match(text, at)
        if match is None:  # a folded first line, a line that is no field, an mbox "From " line
            return None
        fields.append((match.group(1), match.group(2)))
        at = match.end()
    return fields
