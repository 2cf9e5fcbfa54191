"""The MIME tree of a message, with byte offsets into the original input, whichever library built it.

Three builders, chosen by :func:`build_tree`:

1. A plainly well-formed message (what MTAs send) is split on the boundaries its headers declare
   (:func:`declared_tree`), which is ten times cheaper than a general parser.
2. Anything unusual goes to flanker (:func:`flanker_tree`).
3. When flanker cannot parse the message (RFC 6533 ``message/global-*`` types, broken structure)
   the standard library's ``email`` package is the last path (:func:`stdlib_tree`); a message
   nested deeper than either can recurse is split by the iterative boundary walk alone
   (:func:`walked_tree`).

Every node carries *byte* offsets into the original input so that the human-readable parts can
be edited in place: outside the edited parts the output stays byte-identical to the input.
The builders are public so that tests can hold one path's tree against another's.
"""

from __future__ import annotations

import array
import base64
import binascii
import email.parser
import email.policy
import email.utils
import functools
import logging
import quopri
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Final

from gateway import header_block

# flanker (last release 2019) imports the deprecated cgi and imghdr modules; their
# DeprecationWarnings are not ours to surface, and under "-W error" they would make
# every import fail and silently send every message down the stdlib path.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from flanker import mime as flanker_mime

log = logging.getLogger(__name__)

#: How many MIME levels (multipart and enclosed-message nesting) are read. Machine-written
#: bounces nest three or four levels; parts below this depth are not read (the report says
#: so: ``BounceReport.nesting_capped``) and what sits above it is still recognised.
MAX_DEPTH: Final = 50
#: flanker and the standard library recurse once or more per level and hit Python's recursion
#: limit at a few hundred levels: a message declaring more nested types than this is never
#: given to them, only to the iterative boundary walk.
RECURSIVE_PARSER_LIMIT: Final = 100


# ---------------------------------------------------------------------------
# A uniform view of the MIME tree, whichever library built it.


@dataclass(slots=True)
class Node:
    ctype: str  # lower-cased "main/sub"
    params: dict[str, str]
    cte: str  # lower-cased Content-Transfer-Encoding
    headers_start: int | None  # byte offsets into the original input (None when unknown)
    body_start: int | None
    body_end: int | None
    children: list[Node] = field(default_factory=list)
    payload: bytes | None = None  # decoded body when offsets are unknown (stdlib path)

    def walk(self, max_depth: int | None = None) -> Iterator[Node]:
        """Every node in document order, at most ``max_depth`` levels below this one.

        Iterative (an explicit stack): a deep tree costs no Python recursion.
        """
        limit = MAX_DEPTH if max_depth is None else max_depth
        stack: list[tuple[Node, int]] = [(self, 0)]
        while stack:
            node, depth = stack.pop()
            yield node
            if depth < limit:
                stack.extend((child, depth + 1) for child in reversed(node.children))


def _strip_final_break(data: bytes, start: int, end: int) -> int:
    """RFC 2046 §5.1.1: the line break before a boundary delimiter belongs to the delimiter."""
    if end - start >= 2 and data[end - 2 : end] == b"\r\n":
        return end - 2
    if end - start >= 1 and data[end - 1 : end] in (b"\n", b"\r"):
        return end - 1
    return end


_NOT_BASE64_RE: Final = re.compile(rb"[^A-Za-z0-9+/=]")
#: A quoted-printable soft line break before a bare CR.
_CR_SOFT_BREAK_RE: Final = re.compile(rb"=\r(?!\n)")
#: The transfer encodings :func:`_decode_transfer` undoes (any other leaves the body as it is).
_ENCODED: Final = ("base64", "quoted-printable")


def _decode_transfer(raw: bytes, cte: str) -> bytes:
    """Undo the Content-Transfer-Encoding (RFC 2045 §6); unknown encodings pass through."""
    if cte == "base64":
        cleaned = _NOT_BASE64_RE.sub(b"", raw)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4]
        try:
            return base64.b64decode(cleaned)
        except (binascii.Error, ValueError):
            return raw
    if cte == "quoted-printable":
        # A soft line break is "=" before the line break (RFC 2045 §6.7); quopri only
        # knows LF and CRLF, so CR-only files (old Mac mailboxes) need it spelled out.
        return quopri.decodestring(_CR_SOFT_BREAK_RE.sub(b"", raw))
    return raw


def charset_decode(raw: bytes, charset: str | None) -> str:
    for cs in (charset, "utf-8"):
        if not cs:
            continue
        try:
            return raw.decode(cs)
        except (LookupError, UnicodeDecodeError):
            continue
    return raw.decode("latin-1")


class Source:
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

    @functools.cached_property
    def _root(self) -> tuple[Message, int, int]:
        return header_block.read(self.data)

    @property
    def root_headers(self) -> Message:
        """The root header block (:func:`gateway.header_block.read`). Read once: the parser and
        the tree builders both need it or where it ends (on Exchange's 6.5 KB root block finding
        its end costs 14 us, reading it 30 us)."""
        return self._root[0]

    @property
    def header_end(self) -> int:
        """Where the root header block ends (0 when the message opens with the empty line)."""
        return self._root[1]

    @property
    def body_start(self) -> int:
        """The root's first body byte."""
        return self._root[2]

    def delimiters(self) -> _Delimiters:
        if self._delimiters is None:
            self._delimiters = _Delimiters(self.data)
        return self._delimiters

    def byte_offset(self, char_offset: int) -> int:
        if self.is_ascii:
            return char_offset
        return len(self.text[:char_offset].encode("utf-8", "surrogateescape"))

    def node_body(self, node: Node) -> bytes:
        """The node's body with the transfer encoding undone."""
        if node.body_start is not None and node.body_end is not None:
            return _decode_transfer(self.data[node.body_start : node.body_end], node.cte)
        return node.payload or b""

    def enclosed_headers(self, node: Node) -> Message:
        """The header block of the entity in a node's body (a returned message, or its headers).

        Without a transfer encoding to undo, it is read where it is in the input: the body (the
        whole returned message) is not copied for the few fields read from its head.
        """
        if node.body_start is None or node.body_end is None or node.cte in _ENCODED:
            return header_block.read(self.node_body(node))[0]
        return header_block.read(self.data, node.body_start, node.body_end)[0]

    def node_text(self, node: Node) -> str:
        """Decoded text with line ends normalised to LF (for scanning only, never for offsets)."""
        text = charset_decode(self.node_body(node), node.params.get("charset"))
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


def declared_tree(src: Source, root: Message, max_depth: int) -> Node | None:
    if not src.is_ascii or root.defects:
        return None
    body_start = src.body_start
    return _boundary_tree(src, root, body_start, max_depth, strict=True)


def walked_tree(src: Source, root: Message, max_depth: int) -> Node:
    """The tree as the boundaries draw it, whatever else is unusual (the last path).

    For messages the recursive parsers cannot take (nested deeper than they can recurse):
    nothing is declined, defects are read past, and unclosed multiparts keep the parts found.
    """
    body_start = src.body_start
    tree = _boundary_tree(src, root, body_start, max_depth, strict=False)
    assert tree is not None  # the lenient walk never declines
    return tree


def _boundary_tree(
    src: Source, root: Message, body_start: int, max_depth: int, *, strict: bool
) -> Node | None:
    """Split on declared boundaries, level by level with an explicit stack (no recursion).

    ``strict``: give up (None) on anything that flanker might read differently. Nodes at
    ``max_depth`` are kept without their children, as flanker's path keeps them.
    """
    top = _boundary_node(root, 0, body_start, len(src.data), strict=strict)
    if top is None:
        return None
    capped = False
    stack: list[tuple[Node, int]] = [(top, 0)]
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
            kind = _block_type(src.data[start : max(start, child_bs)], strict=strict)
            if kind is None:
                return None
            child = kind.node(start, child_bs, stop)
            node.children.append(child)
            stack.append((child, depth + 1))
    src.capped = capped
    return top


#: RFC 2046 section 5.1.1's bchars, which the standard library's parameter parser hands back as
#: written (no quote, backslash or semicolon); unquoted, no space either.
_BCHARS: Final = r"0-9A-Za-z'()+_,\-./:=?"
#: The boundary parameter of a Content-Type value, quoted or not, when it is one of those.
_BOUNDARY_PARAM: Final = re.compile(
    rf';\s*boundary\s*=\s*(?:"([{_BCHARS} ]{{1,70}})"|([{_BCHARS}]{{1,70}}))\s*(?=;|$)',
    re.IGNORECASE,
)
#: What a boundary is replaced with while the rest of the value is read (bchars only).
_BOUNDARY_STANDIN: Final = "boundary-stand-in"


def content_type(value: str | None) -> tuple[str, tuple[tuple[str, str | tuple[str, str, str]], ...]]:
    """``Message.get_content_type()`` and ``get_params()`` for a part whose Content-Type is ``value``.

    Both read only the first Content-Type field (compat32 hands its value back unchanged: the
    header blocks read here hold no surrogates), so the standard library computes them once
    per distinct value. Its parameter parser was about a third of building the tree (50 us of
    230 us for the minimal family DSN). Leaf parts' values (``text/plain; charset="utf-8"``)
    recur from bounce to bounce; a multipart's boundary is new in every bounce, so a value with
    one plain boundary parameter is read with the boundary replaced by a stand-in (what the
    parser returns for it does not depend on it: bchars come back as written) and the boundary
    put back: 48 of the 200 us parsing the minimal family DSN took when every bounce's
    multiparts were read afresh (``tests/test_parse_fast_paths.py`` compares with the stdlib).
    """
    if value is None or (found := _plain_boundary(value)) is None:
        return _read_content_type(value)
    start, end, boundary = found
    ctype, params = _read_content_type(value[:start] + _BOUNDARY_STANDIN + value[end:])
    return ctype, tuple((k, boundary if k == "boundary" else v) for k, v in params)


def _plain_boundary(value: str) -> tuple[int, int, str] | None:
    """(start, end, text) of the boundary in ``value`` when it is the only parameter named so
    and plain bchars; else None."""
    if value.lower().count("boundary") != 1 or (match := _BOUNDARY_PARAM.search(value)) is None:
        return None
    group = 1 if match.group(1) is not None else 2
    return match.start(group), match.end(group), match.group(group)


@functools.lru_cache(maxsize=1024)
def _read_content_type(value: str | None) -> tuple[str, tuple[tuple[str, str | tuple[str, str, str]], ...]]:
    """:func:`content_type`, by the standard library."""
    entity = Message()
    if value is not None:
        entity.set_raw("Content-Type", value)
    return entity.get_content_type(), tuple(entity.get_params() or ())


@dataclass(frozen=True, slots=True)
class _PartType:
    """What a part's header block says about it: its node without offsets."""

    ctype: str
    params: tuple[tuple[str, str], ...]
    cte: str

    def node(self, hs: int, bs: int, end: int) -> Node:
        return Node(
            ctype=self.ctype,
            params=dict(self.params),
            cte=self.cte,
            headers_start=hs,
            body_start=bs,
            body_end=max(end, bs),
        )


def _boundary_node(headers: Message, hs: int, bs: int, end: int, *, strict: bool) -> Node | None:
    """One part from its header block (children are added by the caller)."""
    kind = _part_type(headers.raw_items(), strict=strict)
    return kind.node(hs, bs, end) if kind is not None else None


#: Part header blocks up to this size are remembered by :func:`_block_type`.
_REMEMBERED_BLOCK: Final = 1024


def _block_type(block: bytes, *, strict: bool) -> _PartType | None:
    """The type of a part with this header block (None: ``strict`` and not plain).

    A part's header block ("Content-Type: text/plain; charset=utf-8" and its encoding) recurs
    from bounce to bounce of one MTA, so the few short ones are remembered: reading each costs
    a header block parse and the stdlib's parameter parser (about 4 us a part, 5 parts in the
    minimal family DSN); looking one up costs a hash of its bytes.
    """
    if len(block) > _REMEMBERED_BLOCK:
        return _read_block_type(block, strict)
    return _remembered_block_type(block, strict)


def _read_block_type(block: bytes, strict: bool) -> _PartType | None:
    """:func:`_block_type`, read from the block."""
    headers = header_block.parse(block)
    if strict and headers.defects:
        return None
    return _part_type(headers.raw_items(), strict=strict)


_remembered_block_type = functools.lru_cache(maxsize=1024)(_read_block_type)


def _part_type(fields: Iterable[tuple[str, str]], *, strict: bool) -> _PartType | None:
    """A part's type from its header fields (None: ``strict`` and not plain)."""
    # One pass over the fields (each Message.get scans them all, lower-casing every name).
    ctypes: list[str] = []
    raw_cte: str | None = None
    for name, value in fields:
        lowered = name.lower()
        if lowered == "content-type":
            ctypes.append(value)
        elif lowered == "content-transfer-encoding" and raw_cte is None:
            raw_cte = value
    raw_ctype = ctypes[0] if ctypes else None
    if strict:
        if len(ctypes) > 1:
            return None
        if raw_ctype is not None and not _PLAIN_CTYPE_RE.match(raw_ctype):
            return None
    ctype, all_params = content_type(raw_ctype)
    params: list[tuple[str, str | tuple[str, str, str]]]
    if raw_ctype is None:
        params = list(_IMPLICIT_PARAMS)  # RFC 2045 §5.2, as flanker spells it
    else:
        params = [(name, value) for name, value in all_params[1:] if name]
        plain = all(_PARAM_NAME_RE.fullmatch(name) and isinstance(value, str) for name, value in params)
        if strict and not plain:
            # RFC 2231 parameters (the stdlib returns them as tuples) flanker decodes its own
            # way; a name that is no token is a folding accident the two parsers read differently.
            return None
        if not plain:
            params = [(name, email.utils.collapse_rfc2231_value(value)) for name, value in params]
    return _PartType(
        ctype=ctype.lower(),
        params=tuple({name.lower(): str(value) for name, value in params}.items()),
        cte=(raw_cte if raw_cte is not None else "7bit").strip().lower(),
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


def flanker_tree(src: Source, max_depth: int) -> Node:
    root = flanker_mime.from_string(src.text)
    return _from_flanker(src, root, 0, max_depth)


def _from_flanker(src: Source, part: object, depth: int, max_depth: int) -> Node:
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
    node = Node(
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


def _split_multipart(src: Source, start: int, end: int, boundary: str) -> list[tuple[int, int]]:
    """Spans (part start, part end) of a multipart body (RFC 2046 §5.1.1)."""
    return _multipart_spans(src, start, end, boundary)[0]


def _multipart_spans(src: Source, start: int, end: int, boundary: str) -> tuple[list[tuple[int, int]], bool]:
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


def stdlib_tree(src: Source, max_depth: int) -> Node:
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(src.data)
    return _from_stdlib(src, msg, 0, len(src.data), 0, max_depth)


def _from_stdlib(
    src: Source, msg: Message, hs: int | None, end: int | None, depth: int, max_depth: int
) -> Node:
    bs = be = None
    if hs is not None and end is not None:
        bs = _header_block_end(src.data, hs, end)
        be = max(end, bs)
    node = Node(
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


def _recovered_children(src: Source, node: Node, depth: int, max_depth: int) -> list[Node]:
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
    children: list[Node] = []
    for s, e in _split_multipart(
        src, node.body_start, node.body_end, boundary.decode("utf-8", "surrogateescape")
    ):
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(src.data[s:e])
        children.append(_from_stdlib(src, msg, s, e, depth + 1, max_depth))
    return children


def build_tree(src: Source, root: Message, max_depth: int) -> Node:
    """The declared structure when it is plain; else flanker; the stdlib when flanker fails.

    A message nested deeper than the recursive parsers can go is split by the iterative
    boundary walk alone (it stops at ``max_depth``).
    """
    if cr_only(src.data):
        # CR-only line ends (old Mac mailboxes): flanker does not split on a bare CR.
        if _deeply_nested(src.data):
            return walked_tree(src, root, max_depth)
        return stdlib_tree(src, max_depth)
    tree = declared_tree(src, root, max_depth)
    if tree is not None and not _tree_suspicious(tree):
        return tree
    if _deeply_nested(src.data):
        return walked_tree(src, root, max_depth)
    src.capped = False
    try:
        tree = flanker_tree(src, max_depth)
    except RecursionError:
        tree = None
    except Exception:  # flanker raises many types on broken input
        log.debug("flanker could not parse; using the stdlib", exc_info=True)
        tree = None
    if tree is not None and not _tree_suspicious(tree):
        return tree
    try:
        return stdlib_tree(src, max_depth)
    except RecursionError:
        return tree if tree is not None else walked_tree(src, root, max_depth)


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


def cr_only(data: bytes) -> bool:
    return data.find(b"\n", 0, 65536) < 0 and b"\r" in data


def _tree_suspicious(tree: Node) -> bool:
    """flanker silently drops a report's machine-readable part on a mistyped boundary."""
    if tree.ctype == "multipart/report":
        return not any(
            n.ctype.endswith("delivery-status") or n.ctype == "message/feedback-report" for n in tree.walk()
        )
    return False
