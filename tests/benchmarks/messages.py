"""The benchmark's messages: ordinary text mail of a given size and a padded family DSN.

Each message is a template with a :data:`SEQ` token in its Message-ID. The Python load
generator replaces it per message, so every family DSN is a distinct bounce (bouncegw's incident
fingerprint is the bounce's bytes, RFC 5322 section 3.6.4 asks for unique Message-IDs anyway);
files handed to smtp-source get a fixed value.
"""

from __future__ import annotations

from pathlib import Path

SEQ = b"@@SEQ@@"
KIB = 1024

_LINE = b"The quick brown fox jumps over the lazy dog while the relay hop measures itself."


def _pad_lines(size: int, prefix: bytes = b"") -> bytes:
    """Body text of about ``size`` bytes in lines well under RFC 5321's 1000-octet limit."""
    line = prefix + _LINE[: 76 - len(prefix)] + b"\r\n"
    return line * max(1, size // len(line))


def ordinary(size: int) -> bytes:
    """A plain-text message of about ``size`` bytes (headers included), CRLF line ends."""
    headers = (
        b"From: Sender <sender@bench.example>\r\n"
        b"To: Recipient <rcpt@bench.example>\r\n"
        b"Subject: Benchmark message\r\n"
        b"Date: Mon, 2 Jun 2025 01:02:03 +0000\r\n"
        b"Message-ID: <" + SEQ + b"@bench.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="us-ascii"\r\n'
        b"Content-Transfer-Encoding: 7bit\r\n\r\n"
    )
    return headers + _pad_lines(size - len(headers))


def family(size: int = 5 * KIB, name: str = "exo-qp-5.7.133") -> bytes:
    """An Exchange Online 5.7.133 NDR from ``tests.positives``, padded inside the returned message."""
    from tests.positives import POSITIVES

    data = next(p.data for p in POSITIVES if p.name == name)
    head, sep, rest = data.partition(b"Message-ID: <")
    assert sep, "the positive has no Message-ID to vary"
    data = head + sep + SEQ + b"-" + rest
    # The padding goes into the returned message's body (a message/rfc822 part): it only makes
    # the bounce bigger, like a real returned message does, without touching the report parts.
    anchor = b"Hello, please find the report.\r\n"
    assert anchor in data, "the positive's returned message changed"
    return data.replace(anchor, anchor + _pad_lines(max(0, size - len(data))), 1)


def write_for_smtp_source(path: Path, data: bytes) -> Path:
    """Write ``data`` for ``smtp-source -F``, which appends CRLF to each line it reads."""
    path.write_bytes(data.replace(SEQ, b"static").replace(b"\r\n", b"\n"))
    return path
