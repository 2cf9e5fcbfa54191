"""A cheap "could this be a family bounce?" check, run before any MIME parsing.

Ordinary mail must cost microseconds: only the root header block is looked at
for bounce signs, and the body is searched by one bytes regex for the family's
codes and Exchange resolver tokens (derived from the family table in
``gateway.bounce.family``, so a code added there is seen here too). The check is conservative: when in doubt
(a bounce-like message whose body is base64, so the code cannot be seen) it
answers True and lets the parser decide.
"""

from __future__ import annotations

import re
from typing import Final

from gateway import header_block
from gateway.bounce import family

#: Root header signs of a bounce (RFC 3464 report, RFC 3834 Auto-Submitted, null
#: Return-Path per RFC 5321 §4.5.5, daemon senders, Exchange/Exim markers, subjects).
_HEADER_SIGN_RE: Final = re.compile(
    rb"^(?:return-path:[ \t]*<>|content-type:[ \t]*multipart/report"
    rb"|auto-submitted:[ \t]*auto-(?:replied|generated)"
    rb"|x-failed-recipients:|x-ms-exchange-message-is-ndr:"
    rb"|(?:from|sender):[^\r\n]*(?:mailer-daemon|postmaster|mail delivery)"
    rb"|subject:[^\r\n]*(?:undeliver|delivery status notification|delivery (?:has )?fail|failure notice"
    rb"|returned mail|non-?delivery|could not be delivered|mail delivery))",
    re.IGNORECASE | re.MULTILINE,
)

#: The body is searched this much at a time: one regular-expression call holds the GIL for
#: its whole run, so a worker thread searching tens of megabytes of near-misses in one call
#: would stall the event loop just the same (about 40 ms per MB).
_PIECE: Final = 64 * 1024
#: Pieces overlap by more than the longest match, so a match that starts in one piece ends
#: inside that piece's search: a code or token of the family table with a soft break between
#: every character is a few hundred octets at most (tests/test_prefilter_pieces.py checks it),
#: and the base64 header cannot run past its line (1,000 octets, RFC 5321 4.5.3.1.6).
_OVERLAP: Final = 1024

#: A base64 body part (the code may hide inside it).
_BASE64_RE: Final = re.compile(rb"content-transfer-encoding:[ \t]*base64", re.IGNORECASE)


#: Every header sign above contains one of these (lower-cased) words.
_HEADER_WORDS: Final = (
    b"<>",
    b"multipart/report",
    b"auto-submitted",
    b"x-failed-recipients",
    b"x-ms-exchange-message-is-ndr",
    b"daemon",
    b"postmaster",
    b"delivery",
    b"undeliver",
    b"failure",
    b"returned mail",
    b"=?",
)

#: An RFC 2047 encoded Subject (Japanese NDR subjects come this way).
_ENCODED_SUBJECT_RE: Final = re.compile(
    rb"^subject:([^\r\n]*=\?[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE
)
_DECODED_SUBJECT_RE: Final = re.compile(
    r"undeliver|delivery status notification|delivery (?:has )?fail|non-?delivery|配信不能|配信できません"
    r"|配送エラー|エラー|不達|送信できません|未配達|返送",
    re.IGNORECASE,
)


def _encoded_subject_sign(head: bytes) -> bool:
    m = _ENCODED_SUBJECT_RE.search(head)
    if m is None:
        return False
    from email.header import decode_header, make_header

    try:
        subject = str(make_header(decode_header(m.group(1).decode("ascii", "replace"))))
    except Exception:  # undecodable: be conservative
        return True
    return bool(_DECODED_SUBJECT_RE.search(subject))


def _split(data: bytes) -> tuple[bytes, memoryview]:
    """(root header block, body), the body a view into ``data``, not a copy (a message can be
    tens of megabytes)."""
    end, body = header_block.split(data)
    return data[:end], memoryview(data)[body:]


def might_be_bounce_headers(head: bytes) -> bool:
    """False only when a message with this root header block cannot be a bounce.

    The milter asks this at the end of the headers, before the MTA sends the body.
    """
    lowered = head.lower()
    # Substring tests first: they reject ordinary mail without running a regex.
    for word in _HEADER_WORDS:
        if word in lowered:
            break
    else:
        return False
    return bool(_HEADER_SIGN_RE.search(head)) or _encoded_subject_sign(head)


def might_be_family_bounce(data: bytes) -> bool:
    """False only when ``data`` cannot be a bounce carrying the family's codes."""
    head, body = _split(data)
    if not might_be_bounce_headers(head):
        return False
    # The family's whole codes and resolver tokens, as the family table defines them
    # (gateway.bounce.family.Family.body_re; quoted-printable soft breaks allowed inside).
    if _search(family.FAMILY.body_re, body):
        return True
    # Bounce-looking but no visible code: a base64 part may hide it; let the parser decide.
    return _search(_BASE64_RE, data)


def _search(pattern: re.Pattern[bytes], data: bytes | memoryview) -> bool:
    """``pattern.search(data)``, a piece at a time (search(data, pos, endpos) still sees the
    octet before ``pos`` for a look-behind)."""
    return any(pattern.search(data, pos, pos + _PIECE + _OVERLAP) for pos in range(0, len(data), _PIECE))


__all__ = ["might_be_bounce_headers", "might_be_family_bounce"]
