"""Seeded mutations of real bounces: byte flips, truncation, header duplication, boundary damage,
charset and transfer-encoding damage. Each takes a ``random.Random`` and the bytes, and returns bytes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from tests.corpus_table import CORPUS

Mutation = Callable[[random.Random, bytes], bytes]

_BOUNDARY = re.compile(rb'boundary="?([^";\r\n]+)"?', re.IGNORECASE)
_CHARSET = re.compile(rb'charset="?([A-Za-z0-9_.:-]+)"?', re.IGNORECASE)
_CTE = re.compile(rb"(Content-Transfer-Encoding:[ \t]*)([A-Za-z0-9-]+)", re.IGNORECASE)


def corpus_samples() -> list[bytes]:
    """Every corpus message (tests/corpus), with CRLF line ends as on the SMTP wire."""
    out = []
    for path in sorted(CORPUS.rglob("*")):
        if path.is_file() and path.suffix not in {".tsv", ".txt"}:
            data = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            out.append(data.replace(b"\n", b"\r\n"))
    return out


def byte_flips(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if buf:
            # NUL, 8-bit, CR, LF and ordinary bytes alike
            buf[rng.randrange(len(buf))] = rng.choice([0, 0x0D, 0x0A, 0x2E, rng.randrange(256)])
    return bytes(buf)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randint(1, max(1, len(data) - 1))]


def duplicate_headers(rng: random.Random, data: bytes) -> bytes:
    lines = data.split(b"\r\n")
    headers = [i for i, line in enumerate(lines) if re.match(rb"[A-Za-z-]+:", line)]
    if not headers:
        return data
    for _ in range(rng.randint(1, 4)):
        i = rng.choice(headers)
        lines[i:i] = [lines[i]] * rng.randint(1, 3)
        headers = [j for j, line in enumerate(lines) if re.match(rb"[A-Za-z-]+:", line)]
    return b"\r\n".join(lines)


def damage_boundaries(rng: random.Random, data: bytes) -> bytes:
    found = _BOUNDARY.findall(data)
    if not found:
        return byte_flips(rng, data)
    boundary = rng.choice(found)
    damaged = {
        0: boundary[:-1],  # one character short
        1: boundary.swapcase(),
        2: boundary + b"x",
        3: b"",
    }[rng.randrange(4)]
    marker = b"--" + boundary
    choice = rng.randrange(3)
    if choice == 0:  # every delimiter, or only the closing one, or one in the middle
        return data.replace(marker, b"--" + damaged)
    if choice == 1:
        return data.replace(marker + b"--", marker)
    where = data.find(marker, rng.randrange(len(data)))
    return data if where < 0 else data[:where] + b"--" + damaged + data[where + len(marker) :]


def damage_charsets(rng: random.Random, data: bytes) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        bogus = rng.choice([b"x-no-such-charset", b"utf-7", b"iso-2022-jp", b"", b"utf-8\x00", b"big5"])
        return _CHARSET.sub(b'charset="' + bogus + b'"', data, count=rng.randint(1, 3))
    if choice == 1:
        bogus = rng.choice([b"base64", b"quoted-printable", b"7bit", b"8bit", b"x-uuencode", b"binary"])
        return _CTE.sub(lambda m: m.group(1) + bogus, data, count=rng.randint(1, 3))
    # invalid UTF-8, lone surrogates, an ISO-2022-JP escape, a stray "=" or bad base64 quantum
    junk = rng.choice([b"\xff\xfe", b"\xed\xa0\x80", b"\x1b$B", b"=\r\n=ZZ", b"====", b"\xc3"])
    at = rng.randrange(len(data)) if data else 0
    return data[:at] + junk + data[at:]


MUTATIONS: dict[str, Mutation] = {
    "byte_flips": byte_flips,
    "truncate": truncate,
    "duplicate_headers": duplicate_headers,
    "damage_boundaries": damage_boundaries,
    "damage_charsets": damage_charsets,
}


def mutate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One to three mutations in a row; returns their names and the result."""
    names = rng.sample(sorted(MUTATIONS), rng.randint(1, 3))
    for name in names:
        data = MUTATIONS[name](rng, data)
    return "+".join(names), data
