"""Optional DKIM re-signing after the edit (RFC 6376).

Adding the block changes the body, so a signature made upstream of bouncegw no
longer verifies (its ``bh=`` body hash fails). Either bouncegw sits *before*
the signing MTA (Postfix -> bouncegw -> signing relay), or it signs again here
with the domain's key: the new ``DKIM-Signature`` is prepended above
``X-Bouncegw-Explained`` and covers it. The original, now broken signature is
left in place (removing it would change another header); verifiers only need
one valid signature (RFC 6376 section 6.1).
"""

from __future__ import annotations

import re

import dkim as dkimpy

from gateway.bounce.report import EXPLAINED_HEADER
from gateway.config import ExplainSettings
from gateway.explain.headers import root_headers
from gateway.explain.splice import line_ending
from gateway.header_block import FIELD_NAME_BYTES

_FIELD = re.compile(b"^(" + FIELD_NAME_BYTES + rb")[ \t]*:", re.MULTILINE)

#: Headers covered by the new signature: dkimpy's recommended set plus ours.
SIGNED_HEADERS: tuple[bytes, ...] = (*dkimpy.DKIM.SHOULD, EXPLAINED_HEADER.lower().encode("ascii"))


class SigningError(RuntimeError):
    """The key could not be read or dkimpy refused to sign."""


def enabled(settings: ExplainSettings) -> bool:
    return settings.dkim_key_file is not None


def resign(data: bytes, settings: ExplainSettings) -> bytes:
    """Prepend a fresh DKIM-Signature (relaxed/relaxed, rsa-sha256; the key file is PEM)."""
    if settings.dkim_key_file is None or settings.dkim_selector is None or settings.dkim_domain is None:
        raise SigningError("DKIM re-signing is not configured")
    try:
        key = settings.dkim_key_file.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read DKIM key {settings.dkim_key_file}: {exc.strerror}") from None
    # Sign only the listed headers the message has (an absent one would be "oversigned").
    present = {m.lower() for m in _FIELD.findall(root_headers(data))}
    include = [name for name in SIGNED_HEADERS if name in present]
    try:
        signature = dkimpy.sign(
            data,
            settings.dkim_selector.encode("ascii"),
            settings.dkim_domain.encode("ascii"),
            key,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=b"rsa-sha256",
            include_headers=include,
            linesep=line_ending(data),
        )
    except dkimpy.DKIMException as exc:
        raise SigningError(f"DKIM signing failed: {exc}") from None
    if not isinstance(signature, bytes) or not signature.startswith(b"DKIM-Signature:"):
        raise SigningError("dkimpy returned no signature")
    return signature + data
