"""Independent checks of a report's human-readable part offsets (the stdlib reads each part)."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import quopri

from gateway.bounce.report import BounceReport, HumanPart


def check_human_parts(data: bytes, report: BounceReport, *, strict_charset: bool = True) -> None:
    """Offsets are exact: header block + blank line, and a body that decodes as the part's content."""
    for hp in report.human_parts:
        check_human_part(data, hp, strict_charset=strict_charset)


def check_human_part(data: bytes, hp: HumanPart, *, strict_charset: bool = True) -> None:
    assert 0 <= hp.headers_start <= hp.body_start <= hp.body_end <= len(data)
    block = data[hp.headers_start : hp.body_start]
    # A part without header lines is just its blank line; CR-only files (old Mac
    # mailboxes in the corpus) end that line with a bare CR.
    assert block.endswith((b"\r\n\r\n", b"\n\n", b"\r\r")) or block in (b"\r\n", b"\n", b"\r")
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(block)
    if hp.headers_start > 0:  # a part, not the whole message: its own Content-Type
        # Compare the type token only: a Content-Type that forgets the ";" before its
        # parameters ("text/plain\n   charset=...") is read by the stdlib as one long
        # type, while the offsets themselves are right.
        assert headers.get_content_type().split()[0] == hp.content_type
    assert (headers.get("Content-Transfer-Encoding") or "7bit").strip().lower() == hp.transfer_encoding
    # The body ends where the delimiter's line break starts, or at the end of the input.
    tail = data[hp.body_end :]
    empty_at_delimiter = hp.body_start == hp.body_end and tail.startswith(b"--")
    assert tail == b"" or empty_at_delimiter or tail.startswith((b"\r\n--", b"\n--", b"\r--")), tail[:20]
    raw = data[hp.body_start : hp.body_end]
    if hp.transfer_encoding == "base64":
        decoded = base64.b64decode(b"".join(raw.split()), validate=strict_charset)
    elif hp.transfer_encoding == "quoted-printable":
        decoded = quopri.decodestring(raw)
    else:
        decoded = raw
    if strict_charset and hp.charset:
        decoded.decode(hp.charset)
