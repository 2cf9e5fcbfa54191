"""A header block (RFC 5322 section 2.2) as the standard library's compat32 ``Message``, cheaply.

The parser reads the header blocks of a bounce (its root, each part, the returned message) and
the annotation's validation reads those of the parts it edited. The stdlib's feedparser costs
about ten times what these few short blocks need, because of its per-line machinery. So a block
in which every line is a field or the folding of one is read here, into exactly the fields that
parser would store (``tests/test_parse_fast_paths.py`` compares the two on the whole corpus).
Anything unusual (a first line that is folded, a line that is no field, an mbox ``From_`` line)
goes to the stdlib parser, and with it its defect handling.

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

#: One line with its line break (the stdlib's feedparser breaks lines at CRLF, LF or CR).
_LINE_RE: Final = re.compile(r"[^\r\n]*(?:\r\n|\n|\r)?")
#: A field name as the feedparser accepts it: printable US-ASCII except ":" (RFC 5322 §2.2).
_FIELD_NAME_RE: Final = re.compile(r"[!-9;-~]+")


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
    name: str | None = None
    lines: list[str] = []
    for match in _LINE_RE.finditer(text):
        line = match.group()
        if not line.strip("\r\n"):
            break  # the end of the text, or the empty line that ends the block
        if line[0] in " \t":
            if name is None:
                return None  # a folded first line: a defect the stdlib records
            lines.append(line)
            continue
        colon = line.find(":")
        if colon <= 0 or not _FIELD_NAME_RE.fullmatch(line, 0, colon) or line.startswith("From "):
            return None
        if name is not None:
            fields.append((name, "".join(lines).rstrip("\r\n")))
        name, lines = line[:colon], [line[colon + 1 :].lstrip(" \t")]
    if name is not None:
        fields.append((name, "".join(lines).rstrip("\r\n")))
    return fields
