"""When two copies of a bounce are the same bounce: the digest that keys its incidents.

An incident's fingerprint (``storage.incidents.fingerprint``) is this digest plus the failed
recipient, and the database keeps one row per fingerprint. Two kinds of copy must meet there:

- an upstream MTA retrying a DATA that got 4xx sends the same queue file again;
- ``bouncegw scan`` reads the bounce from the mailbox it was finally delivered to, where the
  delivering MTA prepended trace fields (``Return-Path``, ``Delivered-To``, ``Received``, RFC 5321
  section 4.4) and the mailbox format may have turned CRLF into LF.

So the digest covers what delivery does not change: the root ``Message-ID`` and ``Date`` fields
(RFC 5322 section 3.6) and the body after the root header block, with CRLF line ends (the form
it had on the wire) and without mbox quoting: a body line that starts ``From `` is written to an
mbox file as ``>From `` (RFC 4155 section 2: mboxo quotes it, mboxrd quotes ``>From `` lines
once more), and a reader cannot tell a quote from a ``>`` the sender wrote, so every body line
is read with the ``>``s before a ``From `` taken away. The body of a DSN carries the per-message
details (arrival dates, queue ids, the returned message), so distinct bounces do not share it.
"""

from __future__ import annotations

import hashlib
import re

from gateway import header_block
from gateway.bounce.report import RootIdentity

_LINE_END_RE = re.compile(rb"\r?\n")
#: The ">"s an mbox writer may have put before "From " at a line start (see the module's text).
_MBOX_QUOTES_RE = re.compile(rb"(?m)^>+(?=From )")


def bounce_digest(data: bytes, root: RootIdentity | None = None) -> str:
    """sha256 (hex) of the bounce's identity fields and body, as they were on the wire.

    ``root``: what the parser read of ``data``'s root header block (``BounceReport.root_identity``),
    so that a large root block (Exchange Online writes 5-14 KB of them) is not read twice;
    without it the block is read here. Both give the same digest
    (``tests/test_identity.py`` compares them over the corpus).
    """
    if root is None:
        end = header_block.empty_line(data)
        if end is None:  # no header block at all: the bytes are all there is
            return hashlib.sha256(data).hexdigest()
        fields = header_block.parse(data[: end[0]])
        root = RootIdentity(fields.get("message-id"), fields.get("date"), end[1])
    digest = hashlib.sha256()
    for value in (root.message_id, root.date):
        digest.update(" ".join((value or "").split()).encode("utf-8", "surrogateescape"))
        digest.update(b"\x00")
    start = root.body_start
    body = memoryview(data)[start:]
    # A body with a bare LF (seen on the wire from sloppy MTAs) is hashed as its CRLF form, the
    # form a mailbox copy gets back through as_on_the_wire(); one with a quoted "From " line is
    # hashed unquoted. The usual all-CRLF body without one is hashed in place, not copied.
    bare_lf = body.nbytes and data.count(b"\n", start) != data.count(b"\r\n", start)
    quoted = data.find(b">From ", start) >= 0
    if bare_lf or quoted:
        copy = body.tobytes()
        if quoted:
            copy = _MBOX_QUOTES_RE.sub(b"", copy)
        digest.update(as_on_the_wire(copy) if bare_lf else copy)
    else:
        digest.update(body)
    return digest.hexdigest()


def as_on_the_wire(data: bytes) -> bytes:
    """A mailbox copy with CRLF line ends, as SMTP carried it (RFC 5321 section 2.3.8)."""
    return _LINE_END_RE.sub(b"\r\n", data)
