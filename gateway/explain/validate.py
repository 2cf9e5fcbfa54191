"""Check an annotated message before it leaves: never relay damaged output.

Two independent checks. The byte check proves that outside the edited ranges
the output is the input (plus the one prepended header). The structural check
re-parses both with the standard library (a different parser from the one that
found the offsets) and compares part by part: same tree, same headers, same
delivery-status groups (RFC 3464 section 2.1 / RFC 6533), same payloads, except
for the edited human parts, whose decoded text must now contain the block.
"""

from __future__ import annotations

import email
from email import policy
from email.message import Message

from gateway.explain.splice import Edit

#: Headers an edit may change on an edited part (charset switch, 7bit -> QP, non-MIME root).
_EDITABLE = {"content-type", "content-transfer-encoding", "mime-version"}


class ValidationFailed(ValueError):
    """The annotated message differs from the original where it must not."""


def check_bytes(original: bytes, output: bytes, prefix: bytes, edits: list[Edit]) -> None:
    if not output.startswith(prefix):
        raise ValidationFailed("the prepended header is missing")
    rest = output[len(prefix) :]
    position_in = 0
    position_out = 0
    for edit in sorted(edits, key=lambda e: e.start):
        length = edit.start - position_in
        if rest[position_out : position_out + length] != original[position_in : edit.start]:
            raise ValidationFailed(f"bytes before offset {edit.start} changed")
        position_out += length + len(edit.replacement)
        position_in = edit.end
    if rest[position_out:] != original[position_in:]:
        raise ValidationFailed("bytes after the last edited part changed")


def _parse(data: bytes) -> Message:
    return email.message_from_bytes(data, policy=policy.compat32)


def _leaf_payload(part: Message) -> object:
    payload = part.get_payload()
    if isinstance(payload, list):
        # message/delivery-status: one header block per group; compare their fields.
        return [list(block.items()) if isinstance(block, Message) else block for block in payload]
    return payload


def _decoded_text(part: Message) -> str:
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        raise ValidationFailed("edited part has no decodable body")
    charset = part.get_content_charset() or "us-ascii"
    try:
        return raw.decode(charset)
    except (LookupError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"edited part does not decode as {charset}: {exc}") from None


def check_structure(original: bytes, output: bytes, *, markers: dict[str, str], edited: int) -> None:
    """Compare both parses; ``markers`` maps text/plain and text/html to a string the block contains."""
    before = list(_parse(original).walk())
    after = list(_parse(output).walk())
    if len(before) != len(after):
        raise ValidationFailed(f"part count changed: {len(before)} -> {len(after)}")
    changed = 0
    for index, (old, new) in enumerate(zip(before, after, strict=True)):
        old_items = list(old.items())
        new_items = list(new.items())
        if index == 0:
            if not new_items or new_items[0][0].lower() != "x-bouncegw-explained":
                raise ValidationFailed("root does not start with X-Bouncegw-Explained")
            new_items = new_items[1:]
        if old.get_content_type() != new.get_content_type():
            raise ValidationFailed(f"part {index} changed type")
        if old.preamble != new.preamble or old.epilogue != new.epilogue:
            raise ValidationFailed(f"part {index}: preamble or epilogue changed")
        if old.is_multipart():
            if old_items != new_items:
                raise ValidationFailed(f"part {index}: headers changed")
            continue
        if old_items == new_items and _leaf_payload(old) == _leaf_payload(new):
            continue
        changed += 1
        content_type = new.get_content_type()
        if content_type not in markers:
            raise ValidationFailed(f"part {index} ({content_type}) changed but is not a human part")
        untouched_old = [(k.lower(), v) for k, v in old_items if k.lower() not in _EDITABLE]
        untouched_new = [(k.lower(), v) for k, v in new_items if k.lower() not in _EDITABLE]
        if untouched_old != untouched_new:
            raise ValidationFailed(f"part {index}: headers other than charset/encoding changed")
        if markers[content_type] not in _decoded_text(new):
            raise ValidationFailed(f"part {index}: the block is not in the decoded text")
    if changed != edited:
        raise ValidationFailed(f"{changed} parts changed, {edited} edited")
