"""Check an annotated message before it leaves: never relay damaged output.

Two independent checks. The byte check proves that outside the edited ranges
the output is the input (plus the one prepended header). The structural check
then only has to look where bytes changed, so it never re-parses the whole
message (a full stdlib parse of input and output cost more than the rest of the
annotation):

* the prepended header parses as exactly one field, X-Bouncegw-Explained, and
  the input does not start with a folded line that would join it;
* each edited range starts and ends on a line boundary and neither the original
  range nor its replacement holds a line that is a boundary delimiter of any
  multipart in the message (RFC 2046 section 5.1.1, matched the way the stdlib
  parser matches it): so the output has exactly the input's delimiters, the same
  tree, and the same bytes in every other part, preamble and epilogue;
* the original range and its replacement are each read as a MIME entity, on their
  own and with the standard library's semantics (fields as its compat32 policy
  stores them, the body decoded by ``Message.get_payload``), not from the offsets
  the parser found: the same content type as the parser claimed, the same header
  fields apart from charset/encoding, and the decoded new text contains the block.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from email.message import Message

from gateway import header_block
from gateway.bounce.report import EXPLAINED_HEADER
from gateway.explain.splice import Edit

#: A boundary parameter anywhere in the message (RFC 2045 section 5.1); collecting too many only
#: makes the check stricter. Found by its name in lower-cased pieces of the message (a
#: case-insensitive pattern has no literal to skip ahead with), then matched in the message.
_BOUNDARY_PARAM = re.compile(rb"""boundary\s*=\s*(?:"([^"\r\n]+)"|([^\s;"]+))""", re.IGNORECASE)
_BOUNDARY_NAME = b"boundary"
#: Pieces lower-cased at a time: a lower-cased copy of a whole 30 MB message would be one more
#: full copy at the moment the original and the output are both held.
_PIECE = 1024 * 1024

#: "--" and the rest of its line (lines end at CR, LF or CRLF, as bytes.splitlines() splits them).
_DASHES = re.compile(rb"--([^\r\n]*)")

#: Headers an edit may change on an edited part (charset switch, 7bit -> QP, non-MIME root).
_EDITABLE = {"content-type", "content-transfer-encoding", "mime-version"}


class ValidationFailed(ValueError):
    """The annotated message differs from the original where it must not."""


def check_bytes(original: bytes, output: bytes, prefix: bytes, edits: list[Edit]) -> None:
    if not output.startswith(prefix):
        raise ValidationFailed("the prepended header is missing")
    # Compared in place: ``startswith`` with a start offset and a memoryview of the original
    # runs memcmp on both buffers and copies neither (slices of bytes would copy the message).
    view = memoryview(original)
    position_in = 0
    position_out = len(prefix)
    for edit in sorted(edits, key=lambda e: e.start):
        length = edit.start - position_in
        if length < 0 or not output.startswith(view[position_in : edit.start], position_out):
            raise ValidationFailed(f"bytes before offset {edit.start} changed")
        position_out += length + len(edit.replacement)
        position_in = edit.end
    tail = len(original) - position_in
    if len(output) - position_out != tail or not output.startswith(view[position_in:], position_out):
        raise ValidationFailed("bytes after the last edited part changed")


def _parse(data: bytes) -> Message:
    """One MIME entity: its header block read as the stdlib reads it, its body attached as it is.

    The feedparser would read the body line by line (most of an annotation's cost on a block of
    several hundred lines) only to store it unchanged: a single part's body needs no parsing, and
    ``get_payload(decode=True)`` still undoes its transfer encoding by the stdlib's own rules.
    """
    entity, _, start = header_block.read(data)
    # As the stdlib's BytesParser stores a body: ASCII with the other octets as surrogates
    # (decoded from a view: a slice would copy the part's body once more).
    entity.set_payload(str(memoryview(data)[start:], "ascii", "surrogateescape"))
    return entity


def _lowered_pieces(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(offset, lower-cased piece) over ``data``; each piece reaches len(name) - 1 octets into
    the next, so every boundary name starts in exactly one piece."""
    if len(data) <= _PIECE:
        yield 0, data.lower()  # one piece: no copy of it before the lower-cased one
        return
    view = memoryview(data)
    for start in range(0, len(data), _PIECE):
        yield start, bytes(view[start : start + _PIECE + len(_BOUNDARY_NAME) - 1]).lower()


def _boundaries(data: bytes) -> set[bytes]:
    found: set[bytes] = set()
    # bytes.lower() changes only A-Z: offsets in a piece are offsets in ``data``.
    for start, piece in _lowered_pieces(data):
        at = piece.find(_BOUNDARY_NAME)
        while at >= 0:
            if (match := _BOUNDARY_PARAM.match(data, start + at)) is not None:
                found.add(match.group(1) or match.group(2))
            at = piece.find(_BOUNDARY_NAME, at + 1)
    return found


def _has_delimiter(span: bytes, boundaries: set[bytes]) -> bool:
    """A line the stdlib's feedparser takes for a delimiter: "--" boundary, optional "--", blanks."""
    for match in _DASHES.finditer(span):
        start = match.start()
        if start and span[start - 1] not in b"\r\n":
            continue  # not at the start of a line
        token = match.group(1).rstrip(b" \t")
        if token in boundaries or (token.endswith(b"--") and token[:-2] in boundaries):
            return True
    return False


@functools.lru_cache(maxsize=256)
def _type_and_charset(content_type: str | None) -> tuple[str, str | None]:
    """What the stdlib reads from a Content-Type value: the type, and the charset parameter.

    Its parameter parser is most of what reading an edited part costs (about 20 us of the 40 us
    per part, measured on the minimal family DSN), and a human part's Content-Type is one of a few
    values per sending MTA, so each distinct value is read once by the stdlib itself.
    """
    entity = Message()
    if content_type is not None:
        entity["Content-Type"] = content_type
    return entity.get_content_type(), entity.get_content_charset()


def _content_type(part: Message) -> str:
    value = part.get("Content-Type")
    return _type_and_charset(None if value is None else str(value))[0]


def _decoded_text(part: Message) -> str:
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        raise ValidationFailed("edited part has no decodable body")
    value = part.get("Content-Type")
    charset = _type_and_charset(None if value is None else str(value))[1] or "us-ascii"
    try:
        return raw.decode(charset)
    except (LookupError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"edited part does not decode as {charset}: {exc}") from None


def _check_prefix(original: bytes, prefix: bytes) -> None:
    fields = list(header_block.parse(prefix).items())
    if len(fields) != 1 or fields[0][0].lower() != EXPLAINED_HEADER.lower() or not prefix.endswith(b"\n"):
        raise ValidationFailed("root does not start with X-Bouncegw-Explained")
    if original[:1] in (b" ", b"\t"):
        raise ValidationFailed("the input starts with a folded line that would join the added header")


def check_structure(
    original: bytes,
    output: bytes,
    prefix: bytes,
    edits: list[Edit],
    *,
    types: list[str],
    markers: dict[str, str],
) -> None:
    """Check the prefix and each edit (call after :func:`check_bytes`).

    ``types`` gives the content type the parser claimed for each edited part (aligned with
    ``edits``); ``markers`` maps text/plain and text/html to a string the block contains.
    """
    if not output.startswith(prefix) or len(types) != len(edits):
        raise ValidationFailed("output does not match the edits")
    _check_prefix(original, prefix)
    boundaries = _boundaries(original)
    for index, (edit, content_type) in enumerate(zip(edits, types, strict=True)):
        if edit.start > 0 and original[edit.start - 1 : edit.start] not in (b"\n", b"\r"):
            raise ValidationFailed(f"edit {index} does not start at a line")
        if edit.end < len(original) and original[edit.end : edit.end + 1] not in (b"\n", b"\r"):
            raise ValidationFailed(f"edit {index} does not end at a line end")
        before = original[edit.start : edit.end]
        if _has_delimiter(before, boundaries) or _has_delimiter(edit.replacement, boundaries):
            raise ValidationFailed(f"edit {index} spans or adds a boundary delimiter")
        new = _parse(edit.replacement)
        new_type = _content_type(new)
        if new_type.startswith("multipart/"):
            raise ValidationFailed(f"edit {index} is not a single part")
        if new_type != content_type:
            raise ValidationFailed(f"edit {index}: not the {content_type} part the parser found")
        if content_type not in markers:
            raise ValidationFailed(f"edit {index} ({content_type}) is not a human part")
        # Usually the edit keeps the part's header block byte for byte: then the old part has the
        # same fields, and reading them once more (a third of this check's cost) proves nothing.
        end = header_block.split(before)[1]
        if not edit.replacement.startswith(before[:end]) or header_block.split(edit.replacement)[1] != end:
            old = _parse(before)
            if _content_type(old) != content_type:
                raise ValidationFailed(f"edit {index}: not the {content_type} part the parser found")
            untouched_old = [(k.lower(), v) for k, v in old.items() if k.lower() not in _EDITABLE]
            untouched_new = [(k.lower(), v) for k, v in new.items() if k.lower() not in _EDITABLE]
            if untouched_old != untouched_new:
                raise ValidationFailed(f"edit {index}: headers other than charset/encoding changed")
        if markers[content_type] not in _decoded_text(new):
            raise ValidationFailed(f"edit {index}: the block is not in the decoded text")
