"""Put the rendered block into one human-readable part, editing only that part's bytes.

The rest of the message is never re-serialised (flanker and the stdlib rewrite
ancestors' headers, boundaries, preamble and epilogue): the parser recorded
where each human part sits (:class:`gateway.bounce.report.HumanPart`), and this module
returns a replacement for exactly ``data[headers_start:body_end]``.

Encoding policy (RFC 2045 sections 6 and 2.7-2.8, RFC 5322 section 2.1.1):

* the body is decoded from its Content-Transfer-Encoding and charset, the block
  is added, and it is encoded again with the same charset when that charset can
  carry the block (ISO-2022-JP can carry Japanese); otherwise the part becomes
  UTF-8 and only its Content-Type ``charset`` parameter changes;
* base64 stays base64 and quoted-printable stays quoted-printable; a 7bit part
  that now needs 8-bit octets or lines over 998 octets becomes
  quoted-printable (its Content-Transfer-Encoding header is set accordingly);
  an 8bit part stays 8bit while its lines fit in 998 octets.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from dataclasses import dataclass
from typing import TypeVar

from gateway.bounce.report import HUMAN_CONTENT_TYPES, HumanPart
from gateway.explain.render import BlockLines, Filled, Line, Rendered
from gateway.header_block import field_name, raw_fields

#: RFC 5322 section 2.1.1: a line is at most 998 octets, excluding CRLF.
MAX_LINE = 998
#: RFC 2045 section 6.8: encoded base64 lines are at most 76 characters.
BASE64_LINE = 76

_BODY_TAG = re.compile(r"""<body(?:\s(?:[^>"']|"[^"]*"|'[^']*')*)?>""", re.IGNORECASE)
_META_CHARSET = re.compile(r"""(<meta\s[^>]*?charset\s*=\s*["']?)([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_CHARSET_PARAM = re.compile(rb"""(;\s*charset\s*=\s*)("[^"]*"|[^\s;()"]+)""", re.IGNORECASE)
_CHARSET_2231 = re.compile(rb";\s*charset\*", re.IGNORECASE)


_K = TypeVar("_K")
_V = TypeVar("_V")


class SpliceError(ValueError):
    """The part cannot be edited safely (unknown encoding or charset, undecodable body, ...)."""


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace ``data[start:end]`` with ``replacement``."""

    start: int
    end: int
    replacement: bytes
    #: What was done, for logs and tests: e.g. ("charset->utf-8", "cte->quoted-printable").
    changes: tuple[str, ...] = ()


def line_ending(raw: bytes) -> bytes:
    """The line ending the given bytes use (CRLF on the wire, often LF in files)."""
    lf = raw.find(b"\n")
    return b"\r\n" if lf > 0 and raw[lf - 1 : lf] == b"\r" else b"\n"


def _decode_transfer(body: bytes, cte: str) -> bytes:
    if cte == "base64":
        try:
            # Strict alphabet once line breaks are gone: junk means the part is not what it claims.
            return base64.b64decode(b"".join(body.split()), validate=True)
        except binascii.Error as exc:
            raise SpliceError(f"base64 body does not decode: {exc}") from None
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)
    if cte in ("7bit", "8bit", "binary", ""):
        return body
    raise SpliceError(f"unknown Content-Transfer-Encoding {cte!r}")


def _codec(charset: str) -> str:
    try:
        return codecs.lookup(charset).name
    except LookupError:
        raise SpliceError(f"unknown charset {charset!r}") from None


def _pieces(text: str, part: HumanPart, rendered: Rendered, newline: str) -> tuple[str, str, str]:
    """(before, block, after): the new text is ``before + block + after`` with the block's LF line
    breaks (it ends with one, :func:`gateway.explain.render._tidy`) made ``newline``."""
    if part.content_type == "text/html":
        match = _BODY_TAG.search(text)
        # No <body> tag (a fragment): the block goes first.
        at = match.end() if match else 0
        return text[:at] + newline, rendered.html, text[at:]
    return "", rendered.text, newline + text


def _join(pieces: tuple[str, str, str], newline: str) -> str:
    before, block, after = pieces
    return before + block.replace("\n", newline) + after


def _longest_line(raw: bytes) -> int:
    return max((len(line.rstrip(b"\r")) for line in raw.split(b"\n")), default=0)


def _base64(raw: bytes, newline: bytes) -> bytes:
    encoded = base64.b64encode(raw)
    return newline.join(encoded[i : i + BASE64_LINE] for i in range(0, len(encoded), BASE64_LINE))


def _b2a_qp(raw: bytes) -> bytes:
    return binascii.b2a_qp(raw, quotetabs=False, istext=True, header=False)


#: The block's lines as quoted-printable, by CRLF breaks then by line: see :func:`qp_of_pieces`.
#: (A dict per kind of break, so a look-up hashes only the line: a few dozen per bounce.)
_QP_LINES: dict[bool, dict[str, bytes]] = {False: {}, True: {}}
_QP_LINES_MAX = 4096
#: Longer lines are encoded every time (the block has none; they would only bloat the cache).
_QP_LINE_CACHED = 400
#: A cached block's lines as quoted-printable, by (its lines, CRLF breaks): see :func:`_qp_plan`.
#: A few skeletons serve nearly every bounce; each entry holds about 20 KB.
_QP_PLANS: dict[tuple[BlockLines, bool], _QPPlan | None] = {}
_QP_PLANS_MAX = 64


def _uniform(text: str, newline: str) -> bool:
    """Every line break in ``text`` is ``newline``, and no CR stands alone."""
    if newline == "\r\n":
        return text.count("\r") == text.count("\n") == text.count("\r\n")
    return "\r" not in text


def _bounded(cache: dict[_K, _V], limit: int) -> dict[_K, _V]:
    if len(cache) > limit:
        # Annotation also runs on worker threads: dict operations are atomic, and an entry
        # missing after a concurrent clear is only computed again.
        cache.clear()
    return cache


def _qp_lines(lines: list[str], crlf: bool) -> list[bytes]:
    """Lines of the block, each with its break, as quoted-printable (cached by the line's text)."""
    cache = _bounded(_QP_LINES[crlf], _QP_LINES_MAX)
    ending = b"\r\n" if crlf else b"\n"
    out = []
    for line in lines:
        encoded = cache.get(line)
        if encoded is None:
            encoded = _b2a_qp(line.encode("utf-8") + ending)
            if len(line) <= _QP_LINE_CACHED:
                cache[line] = encoded
        out.append(encoded)
    return out


@dataclass(frozen=True, slots=True)
class _QPPlan:
    """A cached block as quoted-printable: ``runs[i]`` (lines without a value, encoded and
    joined) comes before ``lines[i]`` (a line with values, to fill and encode per bounce)."""

    runs: tuple[bytes, ...]  # one more than lines: the lines after the last line with values
    lines: tuple[Line, ...]


def _qp_plan(lines: BlockLines, crlf: bool) -> _QPPlan | None:
    """A cached block's lines as quoted-printable, once per skeleton; None when the block does
    not end with a line break (:func:`qp_of_pieces` then splits it)."""
    key = (lines, crlf)
    cache = _bounded(_QP_PLANS, _QP_PLANS_MAX)
    try:
        return cache[key]
    except KeyError:
        pass
    *body, last = lines.lines
    plan = None
    if last == "":
        runs: list[bytes] = []
        with_values: list[Line] = []
        run: list[str] = []  # lines without a value since the last line with one
        for line in body:
            if isinstance(line, str):
                run.append(line)
            else:
                runs.append(b"".join(_qp_lines(run, crlf)))
                with_values.append(line)
                run = []
        runs.append(b"".join(_qp_lines(run, crlf)))
        plan = _QPPlan(tuple(runs), tuple(with_values))
    cache[key] = plan
    return plan


def _filled_qp(filled: Filled, crlf: bool) -> list[bytes] | None:
    """The block's lines as quoted-printable from its skeleton's plan: only the lines holding
    this bounce's values are encoded (through the line cache); None without a plan, or when a
    value holds a line break (the block is then split into lines)."""
    plan = _qp_plan(filled.lines, crlf)
    if plan is None:
        return None
    values = filled.values
    lines = [line.fill(values) for line in plan.lines]
    if any("\n" in line for line in lines):
        return None
    out = [b""] * (2 * len(plan.runs) - 1)
    out[0::2] = plan.runs
    out[1::2] = _qp_lines(lines, crlf)
    return out


def qp_of_pieces(pieces: tuple[str, str, str], newline: str, lines: Filled | None = None) -> bytes | None:
    """``b2a_qp`` of the UTF-8 of :func:`_join` (pieces), the block's lines not encoded again.

    b2a_qp costs about 4 us per KB: 37 us for the 9.7 KB text block and 58 us for the 13 KB HTML
    one, most of annotating the minimal family DSN; the block's lines are the same from one
    bounce to the next but for its few values. b2a_qp (CPython's binascii) encodes each line on
    its own (soft breaks, and the escaping of trailing whitespace and of a lone "."), given two
    things decided for the whole text: CRLF or LF output breaks, after the text's first line
    break, and, before a soft break at a line's end, which break follows. So when every break is
    ``newline`` and the text before the block ends with one (None otherwise: the caller encodes
    the whole), that text, each of the block's lines and the text after it are encoded apart and
    joined; text after the block without a break of its own gets its soft breaks in the text's
    style ("=" is always escaped, so "=" before LF is only ever a soft break).

    ``lines``, when the render cache made the block, is the block as its skeleton's lines and
    the bounce's values: the lines without a value are then encoded once per skeleton
    (:func:`_qp_plan`), and a bounce only looks up its few lines with values.
    ``tests/test_splice.py`` compares this with b2a_qp of the joined text on generated pieces.
    """
    before, block, after = pieces
    if before and not before.endswith("\n"):
        return None  # the block starts a line
    if not (_uniform(before, newline) and _uniform(after, newline) and "\r" not in block):
        return None
    if block and not block.endswith("\n"):
        return None  # the block ends with a line break
    # Text without any line break is encoded with LF soft breaks.
    crlf = newline == "\r\n" and bool(block or "\n" in before or "\n" in after)
    out = [_b2a_qp(before.encode("utf-8"))] if before else []
    encoded_block = _filled_qp(lines, crlf) if lines is not None else None
    if encoded_block is None:
        encoded_block = _qp_lines(block.split("\n")[:-1], crlf)
    out += encoded_block
    if after:
        encoded = _b2a_qp(after.encode("utf-8"))
        out.append(encoded.replace(b"=\n", b"=\r\n") if crlf and "\n" not in after else encoded)
    return b"".join(out)


def _crlf_breaks(encoded: bytes, newline: bytes) -> bytes:
    # b2a_qp keeps hard line breaks as found (CRLF when the text uses CRLF) and
    # adds soft breaks so no encoded line exceeds 76 characters (RFC 2045 6.7).
    if newline == b"\r\n" and b"\r\n" not in encoded:
        encoded = encoded.replace(b"\n", b"\r\n")
    return encoded


def _with_charset(field: bytes, charset: bytes) -> bytes:
    if _CHARSET_2231.search(field):
        raise SpliceError("RFC 2231 charset parameter: not edited")
    if _CHARSET_PARAM.search(field):
        return _CHARSET_PARAM.sub(lambda m: m.group(1) + charset, field, count=1)
    value = field.rstrip(b"\r\n")
    ending = field[len(value) :]
    value = value.rstrip()
    separator = b" " if value.endswith(b";") else b"; "
    return value + separator + b"charset=" + charset + ending


def _edit_headers(
    block: bytes, part: HumanPart, *, charset: bytes | None, cte: bytes | None, newline: bytes
) -> bytes:
    """Set the charset parameter and/or the transfer encoding; every other byte stays."""
    fields, tail = raw_fields(block)
    names = [field_name(f) for f in fields]
    if charset is not None:
        if b"content-type" in names:
            i = names.index(b"content-type")
            fields[i] = _with_charset(fields[i], charset)
        else:
            # RFC 2045 section 5.2: no Content-Type means text/plain; us-ascii.
            ct = part.content_type.encode("ascii")
            fields.append(b"Content-Type: " + ct + b"; charset=" + charset + newline)
            names.append(b"content-type")
    if cte is not None:
        line = b"Content-Transfer-Encoding: " + cte + newline
        if b"content-transfer-encoding" in names:
            fields[names.index(b"content-transfer-encoding")] = line
        else:
            fields.append(line)
            names.append(b"content-transfer-encoding")
    if part.headers_start == 0 and b"mime-version" not in names and (charset or cte):
        # A bounce that is not MIME at all: its root headers are the part's headers,
        # and the new charset / encoding only mean something under MIME-Version.
        fields.append(b"MIME-Version: 1.0" + newline)
    if not tail:
        tail = newline
    return b"".join(fields) + tail


def _carried(codec: str, block: str) -> bool | None:
    """Whether the part's charset can carry the block, when the block alone tells: UTF-8 carries
    any text, ASCII only ASCII text, and the rest of the part's text came in that charset. None
    for other charsets: the joined text is encoded to find out. (Text with a lone surrogate,
    which sanitise() keeps out of every block, still fails: when its UTF-8 is made.)"""
    if codec == "utf-8":
        return True
    if codec == "ascii":
        return block.isascii()
    return None


def edit_part(data: bytes, part: HumanPart, rendered: Rendered) -> Edit:
    """The replacement for one human part: block added, encodings kept valid."""
    if not 0 <= part.headers_start <= part.body_start <= part.body_end <= len(data):
        raise SpliceError(f"offsets out of order or out of range: {part}")
    if part.content_type not in HUMAN_CONTENT_TYPES:
        raise SpliceError(f"not a human-readable type: {part.content_type}")
    header_block = data[part.headers_start : part.body_start]
    body = data[part.body_start : part.body_end]
    newline = line_ending(header_block or data)
    cte = (part.transfer_encoding or "7bit").lower()
    codec = _codec(part.charset or "us-ascii")
    decoded = _decode_transfer(body, cte)
    try:
        text = decoded.decode(codec)
    except UnicodeDecodeError as exc:
        raise SpliceError(f"body is not valid {codec}: {exc.reason}") from None
    text_newline = "\r\n" if "\r\n" in text else ("\n" if "\n" in text else newline.decode())
    html = part.content_type == "text/html"
    block, lines = (rendered.html, rendered.html_lines) if html else (rendered.text, rendered.text_lines)
    pieces = _pieces(text, part, rendered, text_newline)

    changes: list[str] = []
    new_charset: bytes | None = None
    # The new text in its charset, made only when needed: the quoted-printable of UTF-8 text
    # is made from its pieces (see qp_of_pieces), never from the whole text.
    raw: bytes | None = None
    carried = _carried(codec, block)
    if carried is None:
        try:
            raw = _join(pieces, text_newline).encode(codec)
            carried = True
        except UnicodeEncodeError:
            carried = False
    if not carried:
        # The part's charset cannot carry the block (us-ascii, iso-8859-x and Japanese).
        if html:
            # The part becomes UTF-8: a <meta> naming the old charset would contradict it.
            text = _META_CHARSET.sub(lambda m: m.group(1) + "utf-8", text)
            pieces = _pieces(text, part, rendered, text_newline)
        codec = "utf-8"
        new_charset = b"utf-8"
        changes.append("charset->utf-8")

    def whole() -> bytes:
        nonlocal raw
        if raw is None:
            raw = _join(pieces, text_newline).encode(codec)
        return raw

    def quoted_printable() -> bytes:
        # UTF-8 is stateless: its pieces encode apart as they do joined (ISO-2022-JP's escapes do not).
        encoded = qp_of_pieces(pieces, text_newline, lines) if codec == "utf-8" else None
        return _crlf_breaks(_b2a_qp(whole()) if encoded is None else encoded, newline)

    new_cte: bytes | None = None
    if cte == "base64":
        trailing = body[len(body.rstrip(b"\r\n")) :]
        new_body = _base64(whole(), newline) + trailing
    elif cte == "quoted-printable":
        new_body = quoted_printable()
    elif cte == "binary":
        new_body = whole()
    else:
        eight_bit_ok = cte == "8bit"
        if not eight_bit_ok and codec == "utf-8" and not block.isascii():
            fits = False  # 7bit cannot carry the UTF-8 of non-ASCII text: known without encoding it
        else:
            fits = (eight_bit_ok or whole().isascii()) and _longest_line(whole()) <= MAX_LINE
        if fits:
            new_body = whole()
        else:
            new_body = quoted_printable()
            new_cte = b"quoted-printable"
            changes.append(f"cte:{cte or '7bit'}->quoted-printable")

    headers = header_block
    if new_charset is not None or new_cte is not None:
        headers = _edit_headers(header_block, part, charset=new_charset, cte=new_cte, newline=newline)
    return Edit(part.headers_start, part.body_end, headers + new_body, tuple(changes))


def apply(data: bytes, edits: list[Edit], *, prefix: bytes = b"") -> bytes:
    """``prefix`` and the original bytes with non-overlapping edits spliced in.

    The pieces of ``data`` are memoryview slices, so the output is the only new copy of the
    message (slicing bytes would copy each piece once more before joining).
    """
    view = memoryview(data)
    out: list[bytes | memoryview] = [prefix]
    position = 0
    for edit in sorted(edits, key=lambda e: e.start):
        if edit.start < position:
            raise SpliceError("human parts overlap")
        out.append(view[position : edit.start])
        out.append(edit.replacement)
        position = edit.end
    out.append(view[position:])
    return b"".join(out)
