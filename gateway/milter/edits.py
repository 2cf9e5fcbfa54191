"""The message as the milter sees it, and the annotated message as milter actions.

The MTA hands a milter the header fields one by one (name and value) and the body in
chunks; the relay sees the same message as one byte string. :func:`assemble` rebuilds that
string (CRLF line ends, as on the wire, RFC 5321 section 2.3.8), so the processing steps run
on exactly the bytes the relay would have received, and :func:`actions` turns what they
produced back into what the protocol can say:

- the body (everything after the blank line) is replaced whole (SMFIR_REPLBODY): the MTA
  then carries exactly the bytes the relay would have sent, including the untouched parts;
- header fields put above the original ones (``X-Bouncegw-Explained``, a DKIM or ARC
  signature) are inserted at the top (SMFIR_INSHEADER, index 0 upwards, in order);
- a field changed in place (a single-part bounce whose Content-Type charset or
  Content-Transfer-Encoding the explanation changed) is changed by name and occurrence
  (SMFIR_CHGHEADER);
- fields added after the original ones (Content-Transfer-Encoding, MIME-Version for a bounce
  that was not MIME) are appended (SMFIR_ADDHEADER).

Anything else (a field removed, reordered or renamed) cannot be said with these actions:
:class:`Unexpressible` is raised and the caller lets the message continue untouched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kilter.protocol import messages as m

from gateway.milter.protocol import CHUNK

CRLF = b"\r\n"
_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")


class Unexpressible(ValueError):
    """The annotated header block differs from the original in a way milter actions cannot say."""


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    value: bytes  # everything after the colon, folding kept, line ends CRLF, no final CRLF


def header_line(name: str, value: bytes, *, leading_space: bool) -> bytes:
    """One header field as it stood in the message, from the MTA's name and value.

    Folded values come with bare LF between lines from Postfix and Sendmail (their queue
    files store LF); on the wire the lines end in CRLF. Without the leading-space option the
    MTA has removed the space after the colon: it is put back (RFC 5322 section 2.2 form).
    """
    value = value.replace(CRLF, b"\n").replace(b"\n", CRLF)
    if not leading_space:
        value = b" " + value
    return name.encode("ascii") + b":" + value + CRLF


def assemble(header_lines: Sequence[bytes], body: bytes) -> bytes:
    """The message as the relay would have received it: the header block, a blank line, the body."""
    return b"".join(header_lines) + CRLF + body


def split(message: bytes) -> tuple[bytes, bytes]:
    """(header block with its final CRLF, body) at the first blank line."""
    if message.startswith(CRLF):
        return b"", message[2:]
    at = message.find(CRLF + CRLF)
    if at < 0:
        return message, b""
    return message[: at + 2], message[at + 4 :]


def fields(block: bytes) -> list[Field]:
    """The header block's fields in order; :class:`Unexpressible` for a line that is not one."""
    out: list[Field] = []
    for line in block.split(CRLF)[:-1] if block.endswith(CRLF) else block.split(CRLF):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] = Field(out[-1].name, out[-1].value + CRLF + line)
            continue
        match = _NAME.match(line)
        if match is None:
            raise Unexpressible(f"header line without a field name: {line[:40]!r}")
        name = match.group(1).decode("ascii")
        out.append(Field(name, line[line.index(b":") + 1 :]))
    return out


def _value(field: Field) -> bytes:
    # Actions carry folded values with bare LF, as the MTA sent them (see header_line).
    return field.value.replace(CRLF, b"\n")


def header_actions(original: bytes, annotated: bytes) -> list[m.Message]:
    """The header actions that turn header block ``original`` into ``annotated``."""
    before = fields(original)
    after = fields(annotated)
    extra = len(after) - len(before)
    if extra < 0:
        raise Unexpressible("the annotated header block has fewer fields")
    # The fields put on top: the smallest prefix after which every original field follows,
    # by name and in order (values may differ, then the field was changed in place).
    for top in range(extra + 1):
        rest = after[top : top + len(before)]
        if all(a.name.lower() == b.name.lower() for a, b in zip(rest, before, strict=True)):
            break
    else:
        raise Unexpressible("the original header fields are not kept in order")
    edits: list[m.Message] = [
        m.InsertHeader(index, field.name, _value(field)) for index, field in enumerate(after[:top])
    ]
    seen: dict[str, int] = {}
    for old, new in zip(before, after[top : top + len(before)], strict=True):
        key = old.name.lower()
        seen[key] = seen.get(key, 0) + 1
        if old.value != new.value:
            # SMFIR_CHGHEADER's index is the occurrence of that name, from 1 (libmilter's
            # smfi_chgheader).
            edits.append(m.ChangeHeader(seen[key], old.name, _value(new)))
    edits.extend(m.AddHeader(field.name, _value(field)) for field in after[top + len(before) :])
    return edits


def actions(original: bytes, annotated: bytes) -> list[m.Message]:
    """Every action that turns message ``original`` into ``annotated`` (headers, then body)."""
    old_headers, old_body = split(original)
    new_headers, new_body = split(annotated)
    edits = header_actions(old_headers, new_headers) if new_headers != old_headers else []
    if new_body != old_body:
        edits.extend(m.ReplaceBody(new_body[at : at + CHUNK]) for at in range(0, len(new_body), CHUNK))
        if not new_body:
            edits.append(m.ReplaceBody(b""))
    return edits
