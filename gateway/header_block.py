"""A header block (RFC 5322 section 2.2) as the standard library's compat32 ``Message``, cheaply.

The parser reads the header blocks of a bounce (its root, each part, the returned message) and
the annotation's validation reads those of the parts it edited. The stdlib's feedparser costs
about ten times what these few short blocks need, because of its per-line machinery. So a block
in which every line is a field or the folding of one is read here, into exactly the fields that
parser would store (``tests/test_parse_fast_paths.py`` compares the two on the whole corpus).
Anything unusual (a first line that is folded, a line that is no field, an mbox ``From_`` line)
goes to the stdlib parser, and with it its defect handling. :func:`split` and :func:`empty_line`
find where a header block ends, :func:`read` finds it and reads it; :func:`raw_fields` cuts a block
into its fields as they are written (for editing them byte for byte).

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

#: A field name: printable US-ASCII except ":" (RFC 5322 §2.2), as the stdlib's feedparser accepts it.
FIELD_NAME: Final = "[!-9;-~]+"
FIELD_NAME_BYTES: Final = FIELD_NAME.encode("ascii")

#: One field: its name, then its value with any folded lines, then the line break that ends it.
#: The feedparser breaks lines at CRLF, LF or CR.
_FIELD_RE: Final = re.compile(
    "(" + FIELD_NAME + r"):[ \t]*([^\r\n]*(?:(?:\r\n|\n|\r)[ \t][^\r\n]*)*)(?:\r\n|\n|\r|\Z)"
)
_FIELD_NAME_RE: Final = re.compile(b"(" + FIELD_NAME_BYTES + rb")[ \t]*:")
#: A line and its line break (LF ends it; a CR before it stays part of the line).
_RAW_LINE_RE: Final = re.compile(rb"[^\n]*\n|[^\n]+$")
#: The empty line that ends the block.
_EMPTY_LINE_RE: Final = re.compile(r"\r\n|\n|\r|\Z")


#: The empty line that ends a header block, whatever the line ends. No two of them can start at
#: the same octet, so the leftmost found is the one a regular expression alternation finds.
_EMPTY_LINES: Final = (b"\r\n\r\n", b"\n\n", b"\r\r", b"\r\n\n", b"\n\r\n")
#: The same, the likeliest first for a block whose first line ends in CRLF, and for any other.
_CRLF_FIRST: Final = _EMPTY_LINES
_LF_FIRST: Final = (b"\n\n", b"\r\n\r\n", b"\r\r", b"\r\n\n", b"\n\r\n")


def empty_line(data: bytes, start: int = 0, end: int | None = None) -> tuple[int, int] | None:
    """(start, end) of the first empty line in ``data[start:end]`` (what ``re.search`` on the
    alternation of :data:`_EMPTY_LINES` finds). A regular expression has no literal to skip ahead
    with here and crawls through a long header block (Exchange's run to 13 KB); ``bytes.find``
    does not. The separator the first line's ending suggests is searched first: looking for
    CRLFCRLF in LF-only mail would scan the whole body.
    """
    found = _empty_line(data, start, len(data) if end is None else end)
    return None if found is None else (found[0], found[1])


def _empty_line(data: bytes, start: int, stop: int) -> tuple[int, int, bool] | None:
    """:func:`empty_line`, and whether every line before it ends in CRLF (checked on the way)."""
    first_break = data.find(b"\n", start, stop)
    crlf = first_break > start and data[first_break - 1] == 0x0D
    if crlf:
        at = data.find(b"\r\n\r\n", start, stop)
        # Any other empty line before it holds a bare LF or CR: in a block of CRLF lines (as many
        # CRs and LFs as CRLFs) there is none. Counting single octets is cheaper than searching
        # for a pair (a CR CR search: 5.6 us on Exchange's 6.5 KB root block, a CR count 2 us).
        if at >= 0 and data.count(b"\r", start, at) == data.count(b"\n", start, at) == data.count(
            b"\r\n", start, at
        ):
            return at, at + 4, True
    elif first_break >= 0:
        at = data.find(b"\n\n", start, stop)
        # Every other empty line holds a CR: with none before it, this is the first.
        if at >= 0 and data.find(b"\r", start, at) < 0:
            return at, at + 2, False
    best: tuple[int, int, bool] | None = None
    for sep in _CRLF_FIRST if crlf else _LF_FIRST:
        # A later alternative wins only by starting earlier: search no further than that.
        at = data.find(sep, start, stop if best is None else min(stop, best[0] - 1 + len(sep)))
        if at >= 0 and (best is None or at < best[0]):
            best = (at, at + len(sep), False)
    return best


def split(data: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """(end of the header block, first body byte) of a message or a MIME entity (RFC 5322 §2.1:
    header fields, an empty line, the body). An entity that opens with the empty line has no
    fields; one without an empty line is all header block.

    The entity is ``data[start:end]`` (the offsets returned are into ``data``): an entity inside
    a message is read where it is, without a copy.
    """
    header_end, body_start, _ = _split(data, start, len(data) if end is None else end)
    return header_end, body_start


def _split(data: bytes, start: int, stop: int) -> tuple[int, int, bool]:
    """:func:`split`, and whether every line of the header block ends in CRLF."""
    if data.startswith((b"\r\n", b"\n", b"\r"), start, stop):
        return start, start + (2 if data.startswith(b"\r\n", start, stop) else 1), False
    found = _empty_line(data, start, stop)
    return (stop, stop, False) if found is None else found


def read(data: bytes, start: int = 0, end: int | None = None) -> tuple[Message, int, int]:
    """(the fields, end of the header block, first body byte) of the message or entity
    ``data[start:end]``: :func:`split`, then :func:`parse` of the block.

    The split has already counted a CRLF block's line ends, so the block is cut into its fields
    without counting them again (13 us of the 31 us that reading Exchange's 6.5 KB root block
    takes otherwise).
    """
    header_end, body_start, crlf = _split(data, start, len(data) if end is None else end)
    if not crlf:
        return parse(data[start:header_end]), header_end, body_start
    # The block ends before the last field's line break and holds only CRLF line ends, as
    # _crlf_region would return it: decoding keeps them (no UTF-8 sequence holds CR or LF).
    fields = _crlf_fields(data[start:header_end].decode("utf-8", "replace"))
    return (_message(fields) if fields is not None else parse(data[start:header_end])), header_end, body_start


def parse(block: bytes) -> Message:
    """The fields of ``block`` (a body after its empty line is ignored)."""
    text = block.decode("utf-8", "replace")
    fields = plain_fields(text)
    if fields is None:
        return HeaderParser(policy=policy.compat32).parsestr(text)
    return _message(fields)


def _message(fields: list[tuple[str, str]]) -> Message:
    message = Message()
    for name, value in fields:
        message.set_raw(name, value)
    return message


def first_values(message: Message) -> dict[str, str]:
    """Each field's first value by lower-cased name, in one pass over the fields.

    For a block read by :func:`parse` this is what ``message.get(name)`` returns: its values are
    ``str`` without surrogates (the block is decoded with U+FFFD for bad octets), which compat32
    hands back unchanged. Each ``get`` scans every field, lower-casing its name: a dozen of them on
    Exchange's 13 KB root header block cost more than this pass.
    """
    values: dict[str, str] = {}
    for name, value in message.raw_items():
        values.setdefault(name.lower(), value)
    return values


def plain_fields(text: str) -> list[tuple[str, str]] | None:
    """(name, value) of a block whose every line is a field or its folding; else None.

    The values are what the compat32 policy stores: folding kept, the line break after the last
    line dropped.
    """
    if len(text) >= _SHORT_BLOCK and (region := _crlf_region(text)) is not None:
        return _crlf_fields(region)
    return _any_fields(text)


#: Blocks shorter than this (a part's one or two fields) are read faster by the field pattern of
#: :func:`_any_fields` than by the split's fixed cost (measured: equal at about 170 characters,
#: the split 0.6 us slower on a 90-character part header, 2 us faster on a 450-character root).
_SHORT_BLOCK: Final = 200


#: A line break that ends a field (a line break before white space folds the field instead), and
#: the name of the field after it; the name does not take part when the line is no field.
_FIELD_BREAK_RE: Final = re.compile(r"\r\n(?![ \t])(?:(" + FIELD_NAME + r"):[ \t]*)?")


def _crlf_region(text: str) -> str | None:
    """The fields of a block whose lines up to its empty line all end in CRLF (what MTAs write),
    without the line break of the last; None for any other block, and for one that opens with a
    line break."""
    if not text or text[0] in "\r\n":
        return None
    end = text.find("\r\n\r\n")
    if end < 0:
        end = len(text) - 2 if text.endswith("\r\n") else len(text)
    region = text[:end]
    breaks = region.count("\n")
    # Every CR is followed by LF and every LF preceded by CR: the only empty line is at ``end``.
    if region.count("\r") != breaks or region.count("\r\n") != breaks:
        return None
    return region


def _crlf_fields(region: str) -> list[tuple[str, str]] | None:
    """:func:`plain_fields` of a :func:`_crlf_region`: the block is cut at the line breaks that end
    fields by one split, whose search skips ahead to each CRLF with ``str.find``'s speed. The
    field pattern of :func:`_any_fields` looks at every character: 44 us on Exchange's 6.5 KB
    root block against 15 us here."""
    # "\r\n" + the region: the first field follows a line break like every other.
    parts = _FIELD_BREAK_RE.split("\r\n" + region)
    # parts: "", then (name, value) for each field. Text before the first break is a folded
    # first line; a name that is None is a line that is no field.
    names = parts[1::2]
    if parts[0] or None in names:
        return None
    return list(zip(names, parts[2::2], strict=True))


def _any_fields(text: str) -> list[tuple[str, str]] | None:
    """:func:`plain_fields` of a block with any line ends (CRLF, LF, CR, mixed)."""
    fields: list[tuple[str, str]] = []
    at, end = 0, len(text)
    # One search for the fields back to back instead of two matches per field (a third of the
    # cost on Exchange's 75-field root block). A field never starts at a line break, so where
    # the next one found does not start where the last ended, the block ends there: at its
    # empty line or its end, or at a line that is no field (then None).
    for match in _FIELD_RE.finditer(text):
        if match.start() != at:
            break
        fields.append(match.groups())  # type: ignore[arg-type]  # both groups always take part
        at = match.end()
        if at >= end:
            return fields
    if at < end and not _EMPTY_LINE_RE.match(text, at):
        return None  # a folded first line, a line that is no field, an mbox "From " line
    return fields


def raw_fields(block: bytes) -> tuple[list[bytes], bytes]:
    """A header block cut into its fields as written (each with its folded lines and line breaks),
    and what follows the last field (the empty line, and a body if ``block`` holds one)."""
    lines = _RAW_LINE_RE.findall(block)
    fields: list[bytes] = []
    index = 0
    while index < len(lines) and lines[index].strip(b"\r\n"):
        line = lines[index]
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
        index += 1
    return fields, b"".join(lines[index:])


def field_name(field: bytes) -> bytes:
    """The lower-cased name of a raw field (empty when the line is no field)."""
    match = _FIELD_NAME_RE.match(field)
    return match.group(1).lower() if match else b""
