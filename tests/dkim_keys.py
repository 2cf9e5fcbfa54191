"""Test signing keys: an RSA key in a PEM file and the DKIM key record that publishes it (RFC 6376
section 3.6.1), for the DKIM re-signing and ARC sealing tests."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def make_key(path: Path) -> tuple[Path, bytes]:
    """Write a 2048-bit RSA key to ``path``; return it with its ``v=DKIM1`` TXT record."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
