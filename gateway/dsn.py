"""Raw message bytes -> one normalised :class:`~gateway.report.BounceReport`.

Three ways a bounce arrives, tried in this order:

1. RFC 3464 ``multipart/report; report-type=delivery-status`` (or RFC 6533
   ``message/global-delivery-status``): the per-recipient groups of the
   delivery-status part are parsed here (flanker does not split them, and its
   ``bounce.detect`` mixes fields of different recipients).
2. A bounce without a machine-readable part (``format="text"``): Exchange's
   "Diagnostic information for administrators", Postfix/qmail "<rcpt>: ... said:",
   Exim's indented recipient lines; recipients and codes come from the text.
3. Anything else is "not a bounce".

MIME structure: a plainly well-formed message (what MTAs send) is split on the
boundaries its headers declare, which is ten times cheaper than a general parser;
anything unusual goes to flanker, and when flanker cannot parse the message
(RFC 6533 ``message/global-*`` types, broken structure, deep nesting) the
standard library's ``email`` package is the last path. Every node carries *byte*
offsets into the original input so that the human-readable parts can be edited
in place (architecture invariant 3).
"""

from __future__ import annotations

import array
import base64
import binascii
import email.parser
import email.policy
import email.utils
import functools
import html
import json
import logging
import quopri
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from typing import Final

from gateway import codes, header_block, textsafe

# flanker (last release 2019) imports the deprecated cgi and imghdr modules; their
# DeprecationWarnings are not ours to surface, and under "-W error" they would make
# every import fail and silently send every message down the stdlib path.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from flanker import mime
    from flanker.addresslib import address
from gateway.report import (
    FORMAT_RFC3464,
    FORMAT_RFC6533,
    FORMAT_TEXT,
    BounceReport,
    Evidence,
    HumanPart,
    OriginalMessage,
    RecipientReport,
)

log = logging.getLogger(__name__)

EXPLAINED_HEADER: Final = "X-Bouncegw-Explained"
_EVIDENCE_MAX: Final = 200

#: How many MIME levels (multipart and enclosed-message nesting) are read. Machine-written
#: bounces nest three or four levels; parts below this depth are not read (the report says
#: so: ``BounceReport.nesting_capped``) and what sits above it is still recognised.
MAX_DEPTH: Final = 50
#: flanker and the standard library recurse once or more per level and hit Python's recursion
#: limit at a few hundred levels: a message declaring more nested types than this is never
#: given to them, only to the iterative boundary walk.
RECURSIVE_PARSER_LIMIT: Final = 100


class ParseError(Exception):
    """The input cannot be parsed as a message at all (e.g. empty, or not bytes)."""


# ---------------------------------------------------------------------------
# A uniform view of the MIME tree, whichever library built it.


@dataclass(slots=True)
class _Node:
    ctype: str  # lower-cased "main/sub"
    params: dict[str, str]
    cte: str  # lower-cased Content-Transfer-Encoding
    headers_start: int | None  # byte offsets into the original input (None when unknown)
    body_start: int | None
    body_end: int | None
    children: list[_Node] = field(default_factory=list)
    enclosed: _Node | None = None  # message/rfc822 content
    payload: bytes | None = None  # decoded body when offsets are unknown (stdlib path)

    def walk(self, max_depth: int | None = None) -> Iterator[_Node]:
        """Every node in document order, at most ``max_depth`` levels below this one.

        Iterative (an explicit stack): a deep tree costs no Python recursion.
        """
        limit = MAX_DEPTH if max_depth is None else max_depth
        stack: list[tuple[_Node, int]] = [(self, 0)]
        while stack:
            node, depth = stack.pop()
            yield node
            if depth < limit:
                stack.extend((child, depth + 1) for child in reversed(node.children))


def _root_header_end(data: bytes) -> tuple[int, int]:
    """(end of the root header block, first body byte); RFC 5322 §2.1: headers, blank line, body."""
    if data.startswith((b"\r\n", b"\n")):
        return 0, 2 if data.startswith(b"\r\n") else 1
    found = header_block.empty_line(data)
    return (len(data), len(data)) if found is None else found


def _strip_final_break(data: bytes, start: int, end: int) -> int:
    """RFC 2046 §5.1.1: the line break before a boundary delimiter belongs to the delimiter."""
    if end - start >= 2 and data[end - 2 : end] == b"\r\n":
        return end - 2
    if end - start >= 1 and data[end - 1 : end] in (b"\n", b"\r"):
        return end - 1
    return end


def _decode_transfer(raw: bytes, cte: str) -> bytes:
    """Undo the Content-Transfer-Encoding (RFC 2045 §6); unknown encodings pass through."""
    if cte == "base64":
        cleaned = re.sub(rb"[^A-Za-z0-9+/=]", b"", raw)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4]
        try:
            return base64.b64decode(cleaned)
        except (binascii.Error, ValueError):
            return raw
    if cte == "quoted-printable":
        # A soft line break is "=" before the line break (RFC 2045 §6.7); quopri only
        # knows LF and CRLF, so CR-only files (old Mac mailboxes) need it spelled out.
        return quopri.decodestring(re.sub(rb"=\r(?!\n)", b"", raw))
    return raw


def _charset_decode(raw: bytes, charset: str | None) -> str:
    for cs in (charset, "utf-8"):
        if not cs:
            continue
        try:
            return raw.decode(cs)
        except (LookupError, UnicodeDecodeError):
            continue
    return raw.decode("latin-1")


class _Source:
    """The input bytes and the decoded text flanker saw, with offset conversion."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        #: The tree that was built stops at MAX_DEPTH: deeper parts were not read.
        self.capped = False
        self._delimiters: _Delimiters | None = None

    @functools.cached_property
    def text(self) -> str:
        # Decoded only when flanker needs it: a full copy of the message (up to 4x its size).
        return self.data.decode("utf-8", "surrogateescape")

    @functools.cached_property
    def is_ascii(self) -> bool:
        """One character per byte, so character offsets are byte offsets."""
        return self.data.isascii() or len(self.text) == len(self.data)

    def delimiters(self) -> _Delimiters:
        if self._delimiters is None:
            self._delimiters = _Delimiters(self.data)
        return self._delimiters

    def byte_offset(self, char_offset: int) -> int:
        if self.is_ascii:
            return char_offset
        return len(self.text[:char_offset].encode("utf-8", "surrogateescape"))

    def node_body(self, node: _Node) -> bytes:
        """The node's body with the transfer encoding undone."""
        if node.body_start is not None and node.body_end is not None:
            return _decode_transfer(self.data[node.body_start : node.body_end], node.cte)
        return node.payload or b""

    def node_text(self, node: _Node) -> str:
        """Decoded text with line ends normalised to LF (for scanning only, never for offsets)."""
        text = _charset_decode(self.node_body(node), node.params.get("charset"))
        return text.replace("\r\n", "\n").replace("\r", "\n")


# ---------------------------------------------------------------------------
# Boundary delimiters, found once per message.

#: "--", the rest of the line, and its line break (RFC 2046 section 5.1.1: a delimiter is "--",
#: the boundary, optional "--" for the close delimiter, transport padding, then the line end).
_DASH_LINE_RE: Final = re.compile(rb"--([^\r\n]*)(\r\n|\n|\r|)")


class _Delimiters:
    """Every line that starts with "--", indexed by the boundary it would delimit.

    Built in one pass over the message, so that splitting every multipart of a deeply nested
    message costs time linear in its size: searching each part's body for its own delimiters
    would scan the inner levels once per enclosing level. Entries are kept as flat integer
    arrays, which the garbage collector does not track (a tuple per line would make its
    collections grow with the number of lines).
    """

    __slots__ = ("_by_boundary",)

    def __init__(self, data: bytes) -> None:
        #: boundary -> [start, content end, line end, is close delimiter] * n, in input order.
        self._by_boundary: dict[bytes, array.array[int]] = {}
        by_boundary = self._by_boundary
        for m in _DASH_LINE_RE.finditer(data):
            start = m.start()
            if start and data[start - 1] not in b"\r\n":
                continue  # mid-line: not a delimiter
            token = m.group(1).rstrip(b" \t")
            content_end, line_end = m.end(1), m.end()
            entries = by_boundary.get(token)
            if entries is None:
                entries = by_boundary[token] = array.array("q")
            entries.extend((start, content_end, line_end, 0))
            if token.endswith(b"--"):
                closing = by_boundary.get(token[:-2])
                if closing is None:
                    closing = by_boundary[token[:-2]] = array.array("q")
                closing.extend((start, content_end, line_end, 1))

    def within(self, boundary: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, bool]]:
        """The delimiter lines of ``boundary`` that lie in ``data[start:end]``."""
        entries = self._by_boundary.get(boundary)
        if entries is None:
            return
        count = len(entries) // 4
        lo, hi = 0, count  # binary search for the first line at or after ``start``
        while lo < hi:
            mid = (lo + hi) // 2
            if entries[4 * mid] < start:
                lo = mid + 1
            else:
                hi = mid
        for i in range(4 * lo, 4 * count, 4):
            if entries[i + 1] > end:
                return
            yield entries[i], entries[i + 1], entries[i + 2], bool(entries[i + 3])


# ---------------------------------------------------------------------------
# Path 0: a plainly well-formed message, split on its declared boundaries.
#
# Most bounces are machine-made and well-formed. For those, building the tree needs only each
# part's header block and the delimiters its parent declares: flanker's tokenizer and its
# header parsing cost over a millisecond on a 5 KB DSN (more than everything else the
# gateway does with it), while this path costs a tenth of that. It gives up (None) on anything
# unusual, which then goes to flanker exactly as before: 8-bit octets, a header block with a
# defect, a repeated or unparseable Content-Type, RFC 2231 parameters, a multipart without its
# close delimiter, multipart/digest's implicit types, deep nesting.
# tests/test_parse_fast_paths.py checks that wherever it answers, it answers with flanker's tree.

#: A Content-Type value the standard library and flanker read alike: type/subtype, then parameters.
_PLAIN_CTYPE_RE: Final = re.compile(r"\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+/[A-Za-z0-9!#$%&'*+.^_`|~-]+\s*(?:;|$)")

#: A parameter name that is a plain RFC 2045 token (no RFC 2231 "*").
_PARAM_NAME_RE: Final = re.compile(r"[A-Za-z0-9!#$%&'+.^_`|~-]+")
#: The parameters of a part without Content-Type (text/plain; charset=us-ascii).
_IMPLICIT_PARAMS: Final = [("charset", "ascii")]


def _declared_tree(src: _Source, root: Message, max_depth: int) -> _Node | None:
    if not src.is_ascii or root.defects:
        return None
    _, body_start = _root_header_end(src.data)
    return _boundary_tree(src, root, body_start, max_depth, strict=True)


def _walked_tree(src: _Source, root: Message, max_depth: int) -> _Node:
    """The tree as the boundaries draw it, whatever else is unusual (the last path).

    For messages the recursive parsers cannot take (nested deeper than they can recurse):
    nothing is declined, defects are read past, and unclosed multiparts keep the parts found.
    """
    _, body_start = _root_header_end(src.data)
    tree = _boundary_tree(src, root, body_start, max_depth, strict=False)
    assert tree is not None  # the lenient walk never declines
    return tree


def _boundary_tree(
    src: _Source, root: Message, body_start: int, max_depth: int, *, strict: bool
) -> _Node | None:
    """Split on declared boundaries, level by level with an explicit stack (no recursion).

    ``strict``: give up (None) on anything that flanker might read differently. Nodes at
    ``max_depth`` are kept without their children, as flanker's path keeps them.
    """
    top = _boundary_node(root, 0, body_start, len(src.data), strict=strict)
    if top is None:
        return None
    capped = False
    stack: list[tuple[_Node, int]] = [(top, 0)]
    while stack:
        node, depth = stack.pop()
        if not node.ctype.startswith("multipart/"):
            continue
        if depth >= max_depth:
            capped = True
            continue
        boundary = node.params.get("boundary")
        if not boundary or node.ctype == "multipart/digest":
            if strict:
                return None
            continue
        assert node.body_start is not None and node.body_end is not None
        spans, closed = _multipart_spans(src, node.body_start, node.body_end, boundary)
        if strict and (not closed or not spans):
            return None
        for start, stop in spans:
            child_bs = _header_block_end(src.data, start, stop)
            child_headers = header_block.parse(src.data[start : max(start, child_bs)])
            if strict and child_headers.defects:
                return None
            child = _boundary_node(child_headers, start, child_bs, stop, strict=strict)
            if child is None:
                return None
            node.children.append(child)
            stack.append((child, depth + 1))
    src.capped = capped
    return top


def _boundary_node(headers: Message, hs: int, bs: int, end: int, *, strict: bool) -> _Node | None:
    """One part from its header block (children are added by the caller)."""
    raw_ctype = headers.get("Content-Type")
    if strict:
        if len(headers.get_all("Content-Type", [])) > 1:
            return None
        if raw_ctype is not None and not _PLAIN_CTYPE_RE.match(str(raw_ctype)):
            return None
    if raw_ctype is None:
        params = _IMPLICIT_PARAMS  # RFC 2045 §5.2, as flanker spells it
    else:
        params = [(name, value) for name, value in (headers.get_params() or [])[1:] if name]
        plain = all(_PARAM_NAME_RE.fullmatch(name) and isinstance(value, str) for name, value in params)
        if strict and not plain:
            # RFC 2231 parameters (the stdlib returns them as tuples) flanker decodes its own
            # way; a name that is no token is a folding accident the two parsers read differently.
            return None
        if not plain:
            params = [(name, email.utils.collapse_rfc2231_value(value)) for name, value in params]
    return _Node(
        ctype=headers.get_content_type().lower(),
        params={name.lower(): str(value) for name, value in params},
        cte=str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower(),
        headers_start=hs,
        body_start=bs,
        body_end=max(end, bs),
    )


# ---------------------------------------------------------------------------
# Path 1: flanker.


def _flanker_body_end(data: bytes, body_start: int, end: int) -> int:
    """Where the body ends: before the line break that precedes the next delimiter.

    flanker's part end sometimes falls just before the delimiter's "--" and
    sometimes before its line break; normalise both to RFC 2046 §5.1.1's meaning.
    """
    if data.startswith(b"--", end):
        return max(body_start, _strip_final_break(data, body_start, end))
    if data.startswith(b"\n", end) and end > body_start and data[end - 1 : end] == b"\r":
        return end - 1
    return max(body_start, end)


def _flanker_tree(src: _Source, max_depth: int) -> _Node:
    root = mime.from_string(src.text)
    return _from_flanker(src, root, 0, max_depth)


def _from_flanker(src: _Source, part: object, depth: int, max_depth: int) -> _Node:
    ct = part.content_type  # type: ignore[attr-defined]
    container = part._container  # type: ignore[attr-defined]
    hs: int | None = None
    bs: int | None = None
    be: int | None = None
    if hasattr(container, "_load_headers"):
        container._load_headers()
        hs = src.byte_offset(container.start)
        bs = src.byte_offset(container._body_start)
        be = _flanker_body_end(src.data, bs, src.byte_offset(container.end + 1))
    cte_header = part.headers.get("Content-Transfer-Encoding")  # type: ignore[attr-defined]
    cte = str(cte_header.value if cte_header is not None else "7bit").strip().lower()
    node = _Node(
        ctype=f"{ct.main}/{ct.sub}".lower(),
        params={str(k).lower(): str(v) for k, v in ct.params.items()},
        cte=cte,
        headers_start=hs,
        body_start=bs,
        body_end=be,
    )
    if depth >= max_depth:
        return node
    for child in part.parts:  # type: ignore[attr-defined]
        node.children.append(_from_flanker(src, child, depth + 1, max_depth))
    if not node.children and node.ctype.startswith("multipart/"):
        node.children = _recovered_children(src, node, depth, max_depth)
    return node


# ---------------------------------------------------------------------------
# Path 2: the standard library (RFC 6533 types, broken structure), with byte
# offsets found by splitting the bytes on the boundaries ourselves.


def _split_multipart(src: _Source, start: int, end: int, boundary: str) -> list[tuple[int, int]]:
    """Spans (part start, part end) of a multipart body (RFC 2046 §5.1.1)."""
    return _multipart_spans(src, start, end, boundary)[0]


def _multipart_spans(src: _Source, start: int, end: int, boundary: str) -> tuple[list[tuple[int, int]], bool]:
    """Spans of a multipart body's parts, and whether its close delimiter was found."""
    data = src.data
    spans: list[tuple[int, int]] = []
    prev: int | None = None
    key = boundary.encode("utf-8", "surrogateescape")
    for line_start, _content_end, line_end, closing in src.delimiters().within(key, start, end):
        if prev is not None:
            spans.append((prev, _strip_final_break(data, prev, line_start)))
        if closing:
            return spans, True
        prev = min(line_end, end)
    if prev is not None:
        spans.append((prev, end))
    return spans, False


def _header_block_end(data: bytes, start: int, end: int) -> int:
    """First body byte of a part starting at ``start`` (just after the blank line)."""
    if data.startswith((b"\r\n",), start):
        return start + 2
    if data.startswith((b"\n", b"\r"), start):
        return start + 1
    # The blank line ending the headers may be the delimiter's own line break (a part
    # with headers and an empty body): look two bytes past the part's end for it.
    found = header_block.empty_line(data, start, min(len(data), end + 2))
    return end if found is None else found[1]


def _stdlib_tree(src: _Source, max_depth: int) -> _Node:
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(src.data)
    return _from_stdlib(src, msg, 0, len(src.data), 0, max_depth)


def _from_stdlib(
    src: _Source, msg: Message, hs: int | None, end: int | None, depth: int, max_depth: int
) -> _Node:
    bs = be = None
    if hs is not None and end is not None:
        bs = _header_block_end(src.data, hs, end)
        be = max(end, bs)
    node = _Node(
        ctype=msg.get_content_type().lower(),
        params={k.lower(): str(v) for k, v in (msg.get_params() or [])[1:]},
        cte=str(msg.get("Content-Transfer-Encoding", "7bit")).strip().lower(),
        headers_start=hs,
        body_start=bs,
        body_end=be,
    )
    if depth >= max_depth:
        return node
    payload = msg.get_payload()
    if msg.is_multipart() and node.ctype.startswith("multipart/") and isinstance(payload, list):
        boundary = msg.get_boundary()
        spans: list[tuple[int, int]] = []
        if boundary and bs is not None and be is not None:
            spans = _split_multipart(src, bs, be, boundary)
        aligned = len(spans) == len(payload)
        for i, sub in enumerate(payload):
            if not isinstance(sub, Message):
                continue
            s, e = spans[i] if aligned else (None, None)
            node.children.append(_from_stdlib(src, sub, s, e, depth + 1, max_depth))
    elif node.ctype.startswith("multipart/"):
        node.children = _recovered_children(src, node, depth, max_depth)
    elif bs is None and not msg.is_multipart():
        raw = msg.get_payload(decode=True)
        node.payload = raw if isinstance(raw, bytes) else None
    return node


#: A delimiter-looking line: "--" + a boundary (RFC 2046 §5.1.1: 1-70 characters) and an
#: optional closing "--".
_DELIMITER_LINE_RE: Final = re.compile(rb"(?:^|(?<=[\r\n]))--([!-~]{1,70}?)(--)?[ \t]*(?=\r\n|\n|\r|\Z)")


def _recovered_children(src: _Source, node: _Node, depth: int, max_depth: int) -> list[_Node]:
    """Parts of a multipart whose declared boundary does not match its body.

    Real bounces carry a boundary parameter that differs from the delimiter lines
    (sendmail rewriting a queue id), or that sits on an unfolded line so that no
    parser sees it. The delimiter actually used is the first "--token" line that
    recurs (or is closed with "--token--"); RFC 2046 §5.1.1 delimiter rules then apply.
    """
    if node.body_start is None or node.body_end is None or depth >= max_depth:
        return []
    seen: dict[bytes, int] = {}
    closed: set[bytes] = set()
    boundary: bytes | None = None
    for m in _DELIMITER_LINE_RE.finditer(src.data, node.body_start, node.body_end):
        token = m.group(1)
        if not any(chr(c).isalnum() for c in token):
            continue  # a ruler line of dashes, not a delimiter
        if m.group(2):
            closed.add(token)
        else:
            seen[token] = seen.get(token, 0) + 1
        if seen.get(token, 0) >= 2 or (token in closed and token in seen):
            boundary = token
            break
    if boundary is None:
        return []
    children: list[_Node] = []
    for s, e in _split_multipart(
        src, node.body_start, node.body_end, boundary.decode("utf-8", "surrogateescape")
    ):
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(src.data[s:e])
        children.append(_from_stdlib(src, msg, s, e, depth + 1, max_depth))
    return children


# ---------------------------------------------------------------------------
# Headers.


def _decoded(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    try:
        text = str(make_header(decode_header(text)))
    except Exception:  # a broken encoded-word keeps its raw text
        log.debug("undecodable header %r", text[:80])
    return " ".join(text.split()) or None


def _clip(text: str) -> str:
    return textsafe.clip(text, _EVIDENCE_MAX)


# ---------------------------------------------------------------------------
# Delivery-status groups (RFC 3464 §2.1-2.3; RFC 6533 §3 for the utf-8 types).

_FIELD_RE: Final = re.compile(r"^([A-Za-z0-9-]+)[ \t]*:[ \t]*(.*)$")
_RECIPIENT_FIELDS: Final = frozenset({"final-recipient", "original-recipient"})
_UTF8_ESCAPE_RE: Final = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def _groups(text: str) -> list[dict[str, str]]:
    """Split a delivery-status body into field groups (blank-line separated, folded lines joined)."""
    groups: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in re.split(r"\r\n|\n|\r", text):
        if not line.strip():
            if current:
                groups.append(current)
            current, last = {}, None
            continue
        if line[:1] in (" ", "\t") and last is not None:
            current[last] += " " + line.strip()
            continue
        m = _FIELD_RE.match(line)
        if m:
            last = m.group(1).lower()
            # Some MTAs (AOL) omit the blank line between recipient groups: a second
            # recipient field in one group starts the next recipient (RFC 3464 §2.3).
            if last in _RECIPIENT_FIELDS and last in current:
                groups.append(current)
                current = {}
            # RFC 3464 fields appear once per group; keep the first.
            current.setdefault(last, m.group(2).strip())
    if current:
        groups.append(current)
    return groups


def _typed_value(value: str | None) -> str | None:
    """Strip the "type;" prefix of address-type, mta-name-type and diagnostic-type fields."""
    if value is None:
        return None
    if ";" in value:
        kind, rest = value.split(";", 1)
        if re.fullmatch(r"\s*[A-Za-z0-9-]+\s*", kind):
            value = rest
    return value.strip() or None


#: local@domain with a dot-atom local part (RFC 5322 §3.2.3) and LDH domain labels, no IDNA.
_ATOM: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL: Final = r"(?!xn--)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PLAIN_ADDRESS_RE: Final = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")


def _address(value: str | None) -> str | None:
    """An addr-spec from a typed address field, via flanker (no network: addr_spec_only)."""
    raw = _typed_value(value)
    if raw is None:
        return None
    # RFC 6533 §3: utf-8-addr-xtext/unitext may carry \x{HEX} escapes.
    raw = _UTF8_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), raw)
    raw = raw.strip().strip("<>").strip()
    if not raw:
        return None
    if _PLAIN_ADDRESS_RE.fullmatch(raw):
        # What flanker makes of a plain dot-atom address (it lower-cases the domain), without
        # its parser: most DSNs name nothing else. IDNA ("xn--") labels go to flanker.
        local, _, domain = raw.rpartition("@")
        return f"{local}@{domain.lower()}"
    try:
        parsed = address.parse(raw, addr_spec_only=True)
    except Exception:  # flanker's parser on odd input; keep the raw text
        parsed = None
    if parsed is not None:
        return str(parsed.address)
    return raw


def _status(value: str | None) -> str | None:
    if not value:
        return None
    m = codes.STATUS_RE.search(value)
    return ".".join(m.groups()) if m else None


def _recipients_from_groups(groups: list[dict[str, str]]) -> tuple[str | None, list[RecipientReport]]:
    reporting_mta: str | None = None
    recipients: list[RecipientReport] = []
    for group in groups:
        if "reporting-mta" in group and reporting_mta is None:
            reporting_mta = _typed_value(group["reporting-mta"])
        if "final-recipient" not in group and "original-recipient" not in group:
            continue
        diagnostic = _typed_value(group.get("diagnostic-code"))
        reported = status = _status(group.get("status"))
        detailed = _status(diagnostic)
        # Many MTAs write a generic Status (5.0.0, 4.4.7) next to the remote server's own
        # reply; the reply's code is the precise one when both are of the same class.
        if detailed and (status is None or (detailed[0] == status[0] and detailed != status)):
            status = detailed
        final = _address(group.get("final-recipient"))
        original = _address(group.get("original-recipient"))
        recipients.append(
            RecipientReport(
                recipient=final or original,
                original_recipient=original,
                action=(group.get("action") or "").strip().lower() or None,
                status=status,
                reported_status=reported,
                diagnostic=diagnostic,
                remote_mta=_typed_value(group.get("remote-mta")),
                last_attempt=group.get("last-attempt-date"),
            )
        )
    return reporting_mta, recipients


# ---------------------------------------------------------------------------
# Text bounces (no delivery-status part).

_ADDR: Final = r"[^\s<>()\[\]\"',;:@]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"

#: Where a recipient address stands in MTA-written text (pattern per MTA style).
_TEXT_RECIPIENT_RES: Final[tuple[re.Pattern[str], ...]] = (
    # Postfix / qmail / Courier: "<rcpt>: host ... said:" or "<rcpt>:" on its own line.
    re.compile(r"^[ \t]*<(?P<rcpt>" + _ADDR + r")>[ \t]*:", re.MULTILINE),
    # OpenSMTPD: "rcpt: 550 5.1.1 ..." at the start of a line.
    re.compile(r"^(?P<rcpt>" + _ADDR + r"):[ \t]+[245]\d\d\b", re.MULTILINE),
    # Exim, Exchange ("Diagnostic information for administrators"), sendmail, bulleted
    # lists ("   * rcpt"): an address alone on a line.
    re.compile(
        r"^[ \t]*(?:[*\-][ \t]+)?[<\"]?(?:mailto:)?(?P<rcpt>" + _ADDR + r")[>\"]?"
        r"(?:[ \t]*<mailto:[^>\s]*>)?[ \t]*:?[ \t]*$",
        re.MULTILINE,
    ),
    # sendmail: ">>> rcpt <rcpt>" / ">>> RCPT To:<rcpt>".
    re.compile(
        r"^[ \t]*>>>[ \t]*(?:RCPT To:)?[ \t]*<?(?P<rcpt>" + _ADDR + r")>?", re.MULTILINE | re.IGNORECASE
    ),
    # Exchange 2003: "    'rcpt' on 1/2/2003 ..." (quoted) or "    rcpt on 1/2/2003 ...".
    re.compile(r"^[ \t]*[<']?(?P<rcpt>" + _ADDR + r")[>']?[ \t]+on[ \t]", re.MULTILINE),
    # "RCPT TO:<rcpt>" in a quoted SMTP dialogue.
    re.compile(r"RCPT[ \t]+TO:[ \t]*<?(?P<rcpt>" + _ADDR + r")>?", re.IGNORECASE),
    # "Could not be delivered to: <rcpt>", "delivery to <rcpt> failed", MailFoundry's
    # "Unable to deliver message to: <rcpt>".
    re.compile(
        r"(?:deliver(?:ed|ing|y)?(?:[ \t]+(?:your[ \t]+)?(?:mail|message))?|sent|send)"
        r"[ \t]+to:?[ \t]*<(?P<rcpt>" + _ADDR + r")>",
        re.IGNORECASE,
    ),
    # Zoho and others: "rcpt Invalid Address, ..." at the very start of a line; x1-style
    # "rcpt [Connection timed out]" and "rcpt (reason)".
    re.compile(r"^(?P<rcpt>" + _ADDR + r")[ \t]+[A-Z\[(]", re.MULTILINE),
    # Labelled lines: "Failed recipient: rcpt", "Recipient address: rcpt", "Original-Recipient: rfc822;rcpt",
    # "The following recipients returned permanent errors: rcpt".
    re.compile(
        r"(?:(?:failed|invalid|unknown|bad)?[ \t]*recipient(?:[ \t]+address)?"
        r"|Final-Recipient|Original-Recipient|(?:permanent|temporary) errors?"
        r"|Failed address|Address)[ \t]*:[ \t]*(?:rfc822[ \t]*;[ \t]*)?<?(?P<rcpt>" + _ADDR + r")>?",
        re.IGNORECASE,
    ),
)

#: Where the returned original message starts: nothing after it is diagnostic text.
_TEXT_CUT_RE: Final = re.compile(
    r"^[ \t-]*(?:Original message headers:|-+ ?Original message|Original message follows"
    r"|-*[ \t]*Below this line is a copy of the message|-*[ \t]*This is a copy of (?:the|your) message"
    # sendmail opens with "The original message was received at ...": not a cut.
    r"|-*[ \t]*The (?:original message(?! was received)|header of the original message)"
    r"|-*[ \t]*Returned message"
    r"|-*[ \t]*Original Message|Message headers follow|-*[ \t]*Unsent Message below"
    r"|-*[ \t]*Undelivered Message Headers|Below is a copy of the original message)",
    re.IGNORECASE | re.MULTILINE,
)

#: An SMTP failure reply code (RFC 5321 §4.2.1: 4yz transient, 5yz permanent).
_FAILURE_REPLY_RE: Final = re.compile(r"(?<![\d.])([45]\d\d)[ -]")


def _failure_status(text: str) -> str | None:
    """The first 4.x.x / 5.x.x code in MTA text: quoted SMTP dialogues also carry 2.x.x successes."""
    for m in codes.STATUS_RE.finditer(text):
        if m.group(1) in "45":
            return ".".join(m.groups())
    return None


def _clean_html(text: str) -> str:
    text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>", "\n", text)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _text_recipients(text: str, skip: set[str]) -> list[RecipientReport]:
    """Recipients and their codes from MTA-written text (first code after each recipient)."""
    cut = _TEXT_CUT_RE.search(text)
    if cut is not None and cut.start() > 0:
        text = text[: cut.start()]
    hits: list[tuple[int, int, str]] = []
    for pattern in _TEXT_RECIPIENT_RES:
        for m in pattern.finditer(text):
            hits.append((m.start("rcpt"), m.end(), m.group("rcpt")))
    hits.sort()
    seen: dict[str, RecipientReport] = {}
    for i, (_pos, end, rcpt) in enumerate(hits):
        addr = rcpt.strip(".").lower()
        if addr in skip:
            continue
        nxt = len(text)
        for later in hits[i + 1 :]:
            if later[2].strip(".").lower() != addr:
                nxt = later[0]
                break
        block = text[end : min(nxt, end + 2000)]
        status = _failure_status(block)
        line = next(
            (ln.strip() for ln in block.splitlines() if _failure_status(ln) or _FAILURE_REPLY_RE.search(ln)),
            None,
        )
        report = seen.get(addr)
        if report is None:
            seen[addr] = RecipientReport(
                recipient=rcpt.strip("."),
                action="failed",
                status=status,
                reported_status=status,
                diagnostic=_clip(line) if line else None,
            )
        elif report.status is None and status is not None:
            report.status = report.reported_status = status
            report.diagnostic = _clip(line) if line else report.diagnostic
    return list(seen.values())


_DSN_FIELD_IN_TEXT_RE: Final = re.compile(r"^[ \t]*Final-Recipient[ \t]*:", re.IGNORECASE | re.MULTILINE)


def _text_dsn_recipients(text: str) -> list[RecipientReport]:
    """RFC 3464 per-recipient fields found in plain text (a report whose MIME structure broke)."""
    if not _DSN_FIELD_IN_TEXT_RE.search(text):
        return []
    lines = [ln.strip() for ln in text.split("\n")]
    _mta, recipients = _recipients_from_groups(_groups("\n".join(lines)))
    return [r for r in recipients if r.recipient]


def _is_generic(status: str | None) -> bool:
    """X.0.0 (RFC 3463 §3.1 "other undefined status") says nothing the text may not say better."""
    return status is None or status.endswith(".0.0")


def _refine_from_text(recipients: list[RecipientReport], text: str) -> None:
    """Fill generic statuses from the notification text when the report leaves them vague.

    OpenSMTPD writes "Status: 5.0.0" with no Diagnostic-Code, while its human part
    quotes the remote reply ("rcpt: 550 5.1.1 ..."). Only a code of the same class
    replaces the report's (the report stays authoritative on temporary vs permanent).
    """
    vague = [r for r in recipients if _is_generic(r.status) and not (r.diagnostic and _status(r.diagnostic))]
    if not vague or not text:
        return
    found = {(t.recipient or "").lower(): t for t in _text_recipients(text, set())}
    for r in vague:
        t = found.get((r.recipient or "").lower())
        if t is None or t.status is None:
            continue
        if r.status is None or r.status[0] == t.status[0]:
            r.status = t.status
            r.diagnostic = r.diagnostic or t.diagnostic


def _json_notification(text: str) -> tuple[bool, list[RecipientReport]] | None:
    """An Amazon SES event notification (JSON body, possibly inside an SNS envelope).

    Returns (is_bounce, recipients), or None when the text is not such a notification.
    """
    start = text.find("{")
    if start < 0 or text[:start].strip() or "notificationType" not in text:
        return None
    try:
        doc, _ = json.JSONDecoder(strict=False).raw_decode(text, start)
        if isinstance(doc, dict) and isinstance(doc.get("Message"), str):  # SNS envelope
            doc = json.loads(doc["Message"], strict=False)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    rule = codes.JSON_NOTIFICATIONS.get(str(doc.get("notificationType")))
    section = doc.get(rule.section) if rule is not None else None
    if rule is None or not isinstance(section, dict):
        return None
    response = str(section.get(rule.response, "")) if rule.response else ""
    recipients: list[RecipientReport] = []
    for item in section.get(rule.recipients) or []:
        entry = item if isinstance(item, dict) else {"emailAddress": item}
        diagnostic = _typed_value(str(entry.get("diagnosticCode") or response)) or None
        status = _status(str(entry.get("status") or "")) or _status(diagnostic)
        recipients.append(
            RecipientReport(
                recipient=str(entry.get("emailAddress") or "") or None,
                action=str(entry.get("action") or rule.action),
                status=status,
                reported_status=status,
                diagnostic=diagnostic,
                remote_mta=_typed_value(str(section.get("reportingMTA") or "")) or None,
            )
        )
    return rule.is_bounce and bool(recipients), recipients


def _original_to(src: _Source, nodes: list[_Node]) -> list[str]:
    """Addresses in the To: of the returned message (message/rfc822 or its headers)."""
    for node in nodes:
        if node.ctype not in ("message/rfc822", "text/rfc822-headers", "message/global"):
            continue
        body = src.node_body(node)
        hdr_end, _ = _root_header_end(body)
        to = _decoded(header_block.parse(body[:hdr_end]).get("To"))
        if to:
            return list(dict.fromkeys(re.findall(_ADDR, to)))
    return []


# ---------------------------------------------------------------------------
# Is it a bounce at all?


def _is_daemon(value: str | None) -> bool:
    return bool(value) and bool(codes.DAEMON_RE.search(value or ""))


# ---------------------------------------------------------------------------
# Human-readable parts.

_HUMAN_TYPES: Final = ("text/plain", "text/html")


def _human_nodes(node: _Node, max_depth: int, depth: int = 0) -> list[_Node]:
    """text/plain and text/html under a human-readable node (alternative, related, mixed)."""
    if node.ctype in _HUMAN_TYPES:
        return [node]
    if not node.ctype.startswith("multipart/") or depth >= max_depth:
        return []
    found: list[_Node] = []
    if node.ctype in ("multipart/mixed", "multipart/report"):
        # Only the leading text of a mixed part is the notice; later ones are attachments.
        # In a report only the first part is human-readable (RFC 6522 §3); text after it
        # is the returned message or headers.
        return _human_nodes(node.children[0], max_depth, depth + 1) if node.children else []
    for child in node.children:
        found.extend(_human_nodes(child, max_depth, depth + 1))
    return found


def _human_part(src: _Source, node: _Node) -> HumanPart | None:
    if node.headers_start is None or node.body_start is None or node.body_end is None:
        return None
    charset = node.params.get("charset")
    return HumanPart(
        content_type=node.ctype,
        charset=charset.lower() if charset else None,
        transfer_encoding=node.cte,
        headers_start=node.headers_start,
        body_start=node.body_start,
        body_end=node.body_end,
    )


# ---------------------------------------------------------------------------
# Original message (message/rfc822, text/rfc822-headers, message/global-headers).


def _original(src: _Source, node: _Node) -> OriginalMessage | None:
    body = src.node_body(node)
    if not body:
        return None
    hdr_end, _ = _root_header_end(body)
    headers = header_block.parse(body[:hdr_end])
    if not any(headers.get(h) for h in ("Message-ID", "From", "Subject", "Date")):
        return None
    return OriginalMessage(
        message_id=_decoded(headers.get("Message-ID")),
        sender=_decoded(headers.get("From")),
        subject=_decoded(headers.get("Subject")),
        date=_decoded(headers.get("Date")),
        content_language=_decoded(headers.get("Content-Language")),
        charset=_original_charset(headers.get("Content-Type"), headers.get("Subject"), headers.get("From")),
    )


#: A charset parameter (RFC 2045 section 5.1) and an RFC 2047 encoded word's charset.
_CHARSET_PARAM: Final = re.compile(r";\s*charset\s*=\s*\"?([^\s\";]+)", re.IGNORECASE)
_ENCODED_WORD_CHARSET: Final = re.compile(r"=\?([^?*\s]+)(?:\*[^?]*)?\?[BbQq]\?")


def _original_charset(content_type: object, *encoded: object) -> str | None:
    """The original's charset, read from header values the parser already holds (cheap)."""
    found = _CHARSET_PARAM.search(str(content_type or ""))
    if found is None:
        found = next((m for v in encoded if v and (m := _ENCODED_WORD_CHARSET.search(str(v)))), None)
    return found.group(1).lower()[:40] if found else None


# ---------------------------------------------------------------------------
# Microsoft evidence.


def _microsoft_evidence(
    root: Message, report: BounceReport, texts: list[tuple[str, str]]
) -> tuple[Evidence, ...]:
    found: list[Evidence] = []
    # Words the family table names as Microsoft's own (e.g. the UnifiedGroupAgent of 5.7.193).
    evidence_re = codes.FAMILY.evidence_re
    for name in root:
        if codes.MICROSOFT_HEADER_RE.match(name):
            found.append(Evidence(f"header:{name}", _clip(str(root.get(name, "")))))
            break
    if report.reporting_mta and codes.MICROSOFT_HOST_RE.search(report.reporting_mta):
        found.append(Evidence("delivery-status:Reporting-MTA", _clip(report.reporting_mta)))
    for r in report.recipients:
        if r.remote_mta and codes.MICROSOFT_HOST_RE.search(r.remote_mta):
            found.append(Evidence("delivery-status:Remote-MTA", _clip(r.remote_mta)))
        if r.diagnostic:
            m = codes.MICROSOFT_TOKEN_RE.search(r.diagnostic) or (
                evidence_re.search(r.diagnostic) if evidence_re is not None else None
            )
            if m:
                found.append(Evidence("delivery-status:Diagnostic-Code", _clip(m.group(0))))
    for source, text in texts:
        # Case-insensitive regular expressions crawl through kilobytes of notice text; in ASCII
        # text a lower-cased substring test says first whether there is anything to find.
        lowered = text.lower() if text.isascii() else None
        m = codes.MICROSOFT_TOKEN_RE.search(text) if lowered is None or "resolver." in lowered else None
        if (
            m is None
            and evidence_re is not None
            and (lowered is None or any(w in lowered for w in codes.FAMILY.evidence_words))
        ):
            m = evidence_re.search(text)
        if m:
            found.append(Evidence(source, _clip(m.group(0))))
        for label, phrases, pattern in codes.MICROSOFT_TEXT_PATTERNS:
            if lowered is not None and not any(phrase in lowered for phrase in phrases):
                continue
            m = pattern.search(text)
            if m:
                found.append(Evidence(f"{source}:{label}", _clip(m.group(0))))
                break
    # Keep one entry per (source, text).
    return tuple(dict.fromkeys(found))


# ---------------------------------------------------------------------------
# Entry point.


def parse(data: bytes, *, max_depth: int = MAX_DEPTH, envelope_sender: str | None = None) -> BounceReport:
    """Parse raw message bytes into a BounceReport (classification fields left empty).

    ``envelope_sender`` is the SMTP MAIL FROM when known ("" for the null sender of
    RFC 5321 section 4.5.5); without it, a ``Return-Path: <>`` header says the same.

    Raises :class:`ParseError` only when the input is not a message at all;
    anything else yields a report (``is_bounce=False`` when nothing was recognised).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ParseError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.strip():
        raise ParseError("empty message")
    try:
        return _parse(data, max_depth, envelope_sender, _MAX_ENCLOSED)
    except RecursionError as exc:
        raise ParseError("message nesting too deep") from exc
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the parser must never let an error through
        log.debug("parse failed", exc_info=True)
        raise ParseError(f"cannot parse message: {type(exc).__name__}") from exc


def _build_tree(src: _Source, root: Message, max_depth: int) -> _Node:
    """The declared structure when it is plain; else flanker; the stdlib when flanker fails.

    A message nested deeper than the recursive parsers can go is split by the iterative
    boundary walk alone (it stops at ``max_depth``).
    """
    if _cr_only(src.data):
        # CR-only line ends (old Mac mailboxes): flanker does not split on a bare CR.
        if _deeply_nested(src.data):
            return _walked_tree(src, root, max_depth)
        return _stdlib_tree(src, max_depth)
    tree = _declared_tree(src, root, max_depth)
    if tree is not None and not _tree_suspicious(tree):
        return tree
    if _deeply_nested(src.data):
        return _walked_tree(src, root, max_depth)
    src.capped = False
    try:
        tree = _flanker_tree(src, max_depth)
    except RecursionError:
        tree = None
    except Exception:  # flanker raises many types on broken input
        log.debug("flanker could not parse; using the stdlib", exc_info=True)
        tree = None
    if tree is not None and not _tree_suspicious(tree):
        return tree
    try:
        return _stdlib_tree(src, max_depth)
    except RecursionError:
        return tree if tree is not None else _walked_tree(src, root, max_depth)


#: A Content-Type that opens a level of nesting (a multipart, or an enclosed message).
_NESTING_TYPE_RE: Final = re.compile(rb"(?:multipart|message)/", re.IGNORECASE)


def _deeply_nested(data: bytes) -> bool:
    """More nesting types named than the recursive parsers can safely recurse through.

    Counts every occurrence, header or not: an overcount only sends a message to the
    iterative walk, which reads every message.
    """
    found = _NESTING_TYPE_RE.finditer(data)
    # any() stops at the first count past the limit: the rest of the message is not scanned.
    return any(count > RECURSIVE_PARSER_LIMIT for count, _ in enumerate(found, 1))


def _cr_only(data: bytes) -> bool:
    return b"\n" not in data[:65536] and b"\r" in data


def _tree_suspicious(tree: _Node) -> bool:
    """flanker silently drops a report's machine-readable part on a mistyped boundary."""
    if tree.ctype == "multipart/report":
        return not any(
            n.ctype.endswith("delivery-status") or n.ctype == "message/feedback-report" for n in tree.walk()
        )
    return False


#: How many gateway wrappings (a notice with the NDR attached as message/rfc822) are opened.
_MAX_ENCLOSED: Final = 2


def _parse(data: bytes, max_depth: int, envelope_sender: str | None, enclosed_left: int) -> BounceReport:
    src = _Source(data)
    hdr_end, _ = _root_header_end(data)
    root = header_block.parse(data[:hdr_end])
    report = BounceReport(
        is_bounce=False, message_id=_decoded(root.get("Message-ID")), date=_decoded(root.get("Date"))
    )
    report.already_explained = root.get(EXPLAINED_HEADER) is not None

    tree = _build_tree(src, root, max_depth)
    report.nesting_capped = src.capped
    enclosed_evidence: tuple[Evidence, ...] = ()
    nodes = list(tree.walk(max_depth=max_depth))

    status_nodes = [
        n for n in nodes if n.ctype in ("message/delivery-status", "message/global-delivery-status")
    ]
    is_report = tree.ctype == "multipart/report"
    texts: list[tuple[str, str]] = []

    # Human-readable parts: the first subpart of a report; otherwise the leading text.
    human: list[_Node] = []
    if is_report and tree.children:
        human = _human_nodes(tree.children[0], max_depth)
    elif tree.ctype in _HUMAN_TYPES:
        human = [tree]
    elif tree.ctype.startswith("multipart/") and tree.children:
        first = tree.children[0]
        human = _human_nodes(first, max_depth)
    for i, node in enumerate(human):
        text = src.node_text(node)
        if node.ctype == "text/html":
            text = _clean_html(text)
        texts.append((f"text:{node.ctype}#{i}", text))
    if not tree.children and tree.ctype.startswith("multipart/"):
        # A multipart whose delimiters cannot be found at all: its body is still
        # the MTA's text (scanned for recipients; never annotated).
        texts.append(("text:body", _charset_decode(src.node_body(tree), None)))

    for node in status_nodes:
        text = src.node_body(node).decode("utf-8", "replace")
        mta, recipients = _recipients_from_groups(_groups(text))
        report.reporting_mta = report.reporting_mta or mta
        report.recipients.extend(recipients)
        if report.format is None:
            report.format = FORMAT_RFC6533 if node.ctype.startswith("message/global") else FORMAT_RFC3464

    for node in nodes:
        if node.ctype in (
            "message/rfc822",
            "text/rfc822-headers",
            "message/global-headers",
            "message/global",
        ):
            report.original = _original(src, node)
            if report.original is not None:
                break

    subject = _decoded(root.get("Subject")) or ""
    sender = " ".join(str(root.get(h, "")) for h in ("From", "Sender"))
    return_path = str(root.get("Return-Path", "")).strip()
    # The null reverse-path: from the envelope when known, else from Return-Path (written at
    # delivery). A non-null Return-Path wins over a null envelope: a stored message re-sent.
    header_null = return_path in ("<>", "") and root.get("Return-Path") is not None
    if envelope_sender is not None:
        null_sender = envelope_sender == "" and (root.get("Return-Path") is None or header_null)
    else:
        null_sender = header_null
    daemon = _is_daemon(sender) or root.get("X-Failed-Recipients") is not None
    # Exim marks its own bounces "Auto-Submitted: auto-replied", so the header alone
    # does not make a vacation reply (RFC 3834 §5).
    auto_reply = not daemon and (
        bool(codes.AUTO_REPLY_SUBJECT_RE.search(subject))
        or str(root.get("Auto-Submitted", "")).lower().startswith("auto-replied")
    )
    forwarded = bool(codes.FORWARD_RE.match(subject)) and not null_sender and not _is_daemon(sender)

    if report.format is not None:
        failing = [
            r
            for r in report.recipients
            if (r.action or "").startswith(codes.FAILING_ACTIONS) or (r.status or "").startswith(("4", "5"))
        ]
        report.is_bounce = bool(failing) or (
            not report.recipients and bool(codes.BOUNCE_SUBJECT_RE.search(subject))
        )
        if not report.recipients:
            report.recipients = _text_recipients("\n".join(t for _, t in texts), set())
        else:
            _refine_from_text(report.recipients, "\n".join(t for _, t in texts))
        if not report.is_bounce:
            report.format = None
    elif (
        enclosed_left
        and null_sender
        and not forwarded
        and not auto_reply
        and (
            inner := _enclosed_bounce(
                src, root, tree, subject, sender, max_depth, enclosed_left - 1, report.nesting_capped
            )
        )
        is not None
    ):
        # A relaying gateway's notice with the NDR attached: the NDR says who failed and why;
        # the gateway's notice stays the human part (the attachment is never edited).
        report.is_bounce, report.format = True, inner.format
        report.recipients, report.reporting_mta = inner.recipients, inner.reporting_mta
        report.original = inner.original
        report.nesting_capped = inner.nesting_capped
        enclosed_evidence = inner.microsoft_evidence
    elif (notification := _json_notification("\n".join(t for _, t in texts))) is not None:
        report.is_bounce, report.recipients = notification
        report.format = FORMAT_TEXT if report.is_bounce else None
    elif not forwarded and not auto_reply and not any(n.ctype == "message/feedback-report" for n in nodes):
        bounce_headers = root.get("X-Failed-Recipients") is not None or _is_daemon(sender) or null_sender
        body_text = "\n".join(t for _, t in texts)
        subject_hit = bool(codes.BOUNCE_SUBJECT_RE.search(subject))
        failure_hit = bool(codes.FAILURE_TEXT_RE.search(body_text[:20000]))
        if (bounce_headers and (subject_hit or failure_hit)) or (subject_hit and failure_hit):
            skip = {a.lower() for a in re.findall(_ADDR, sender)}
            # A delivery-status block pasted into the text (broken MIME, PMDF) is still
            # the MTA's own per-recipient record: prefer it to wording heuristics.
            recipients = _text_dsn_recipients(body_text) or _text_recipients(body_text, skip)
            failed = [a.strip() for a in str(root.get("X-Failed-Recipients", "")).split(",") if "@" in a]
            known = {r.recipient.lower() for r in recipients if r.recipient}
            for addr in failed:
                if addr.lower() not in known:
                    recipients.append(RecipientReport(recipient=addr, action="failed"))
            if not recipients and subject_hit and failure_hit:
                # Japanese carrier notices (au/KDDI) name no recipient in the text; the
                # returned message's To: is who it failed for.
                recipients = [RecipientReport(recipient=a, action="failed") for a in _original_to(src, nodes)]
            if recipients or bounce_headers:
                report.is_bounce = True
                report.format = FORMAT_TEXT
                report.recipients = recipients

    if report.is_bounce:
        report.human_parts = tuple(hp for hp in (_human_part(src, n) for n in human) if hp is not None)
        report.microsoft_evidence = tuple(
            dict.fromkeys(_microsoft_evidence(root, report, texts) + enclosed_evidence)
        )
    return report


#: Root header signs that a machine, not a person, wrote the notice around an attached NDR.
_MACHINE_NOTICE_HEADERS: Final = ("X-MS-Exchange-Message-Is-Ndr", "X-Failed-Recipients")


def _enclosed_bounce(
    src: _Source,
    root: Message,
    tree: _Node,
    subject: str,
    sender: str,
    max_depth: int,
    enclosed_left: int,
    capped: bool,
) -> BounceReport | None:
    """The NDR a relaying gateway attached to its own short notice, if this is such a message.

    The layout: null sender, ``multipart/mixed``, the gateway's notice first, the NDR as a
    ``message/rfc822`` part of the root. The notice must look machine-written (a daemon
    sender, Auto-Submitted, a bounce subject or Exchange's NDR header): a person forwarding
    an NDR writes neither the null sender nor these, and stays a non-bounce.
    """
    if tree.ctype != "multipart/mixed" or len(tree.children) < 2 or capped:
        return None
    if codes.FORWARD_RE.match(subject):
        return None  # "Fw: Undeliverable: ...": a person passing an NDR on
    if tree.children[0].ctype.startswith("message/"):
        return None  # no notice of its own: not a gateway's wrapping
    machine = (
        _is_daemon(sender)
        or str(root.get("Auto-Submitted", "")).lower().startswith("auto-")
        or bool(codes.BOUNCE_SUBJECT_RE.search(subject))
        or any(root.get(h) is not None for h in _MACHINE_NOTICE_HEADERS)
    )
    if not machine:
        return None
    for child in tree.children[1:]:
        if child.ctype not in ("message/rfc822", "message/global"):
            continue
        inner = _parse(src.node_body(child), max(1, max_depth - 1), "", enclosed_left)
        if inner.is_bounce and inner.recipients:
            return inner
    return None


__all__ = ["EXPLAINED_HEADER", "MAX_DEPTH", "ParseError", "parse"]
