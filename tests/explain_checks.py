"""Independent checks on annotated output, shared by the explanation tests."""

from __future__ import annotations

import email
import re
from email import policy
from email.message import Message

from gateway.bounce.report import HumanPart

HEADER_RE = re.compile(rb"^X-Bouncegw-Explained: [^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*", re.IGNORECASE)


def strip_explained_header(output: bytes) -> bytes:
    match = HEADER_RE.match(output)
    assert match, output[:200]
    return output[match.end() :]


def assert_outside_identical(original: bytes, output: bytes, humans: tuple[HumanPart, ...]) -> None:
    """Outside the human parts' [headers_start, body_end) ranges, output == original (after the header)."""
    rest = strip_explained_header(output)
    ranges = sorted((h.headers_start, h.body_end) for h in humans)
    kept: list[bytes] = []
    position = 0
    for start, end in ranges:
        kept.append(original[position:start])
        position = end
    kept.append(original[position:])
    # The kept segments must appear in order, the first at the very start, the last at the very end.
    assert rest.startswith(kept[0])
    assert rest.endswith(kept[-1])
    cursor = len(kept[0])
    for segment in kept[1:-1]:
        found = rest.find(segment, cursor)
        assert found >= cursor, f"segment {segment[:60]!r} missing"
        cursor = found + len(segment)
    assert cursor <= len(rest) - len(kept[-1]) or len(kept) == 1


def parse(data: bytes) -> Message:
    return email.message_from_bytes(data, policy=policy.compat32)


def delivery_status_fields(data: bytes) -> list[list[tuple[str, str]]]:
    groups: list[list[tuple[str, str]]] = []
    for part in parse(data).walk():
        if part.get_content_type() == "message/delivery-status":
            for block in part.get_payload():
                groups.append(list(block.items()))
        elif part.get_content_type() == "message/global-delivery-status":
            # The stdlib reads RFC 6533's type as an encapsulated message: compare its text.
            payload = part.get_payload()
            items = payload if isinstance(payload, list) else [payload]
            groups.append([("raw", m.as_string() if isinstance(m, Message) else str(m)) for m in items])
    return groups


#: Parts the stdlib splits into sub-messages that are not MIME parts (field groups, RFC 6533 types).
OPAQUE = {"message/delivery-status", "message/global-delivery-status", "message/global-headers"}


def leaves(message: Message) -> list[Message]:
    """Leaf parts; unlike Message.walk(), a delivery-status part's field groups are not "parts"."""
    if message.is_multipart() and message.get_content_type() not in OPAQUE:
        return [leaf for sub in message.get_payload() for leaf in leaves(sub)]
    return [message]


def human_texts(data: bytes) -> dict[str, list[str]]:
    """Decoded text of every text/plain and text/html part."""
    texts: dict[str, list[str]] = {}
    for part in leaves(parse(data)):
        if part.get_content_type() in ("text/plain", "text/html"):
            raw = part.get_payload(decode=True)
            assert isinstance(raw, bytes)
            texts.setdefault(part.get_content_type(), []).append(
                raw.decode(part.get_content_charset() or "us-ascii")
            )
    return texts


def longest_line(data: bytes) -> int:
    return max(len(line.rstrip(b"\r")) for line in data.split(b"\n"))
