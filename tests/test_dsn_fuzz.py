"""Property tests: the parser never lets anything but ParseError out, and stays bounded."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.bounce.parse import ParseError, parse
from tests.corpus_table import samples
from tests.positives import POSITIVES

#: Built samples and corpus samples of every collection's first rows (a missing corpus file fails
#: here, loudly, rather than leaving the fuzzing with fewer seeds).
SEEDS = [p.data for p in POSITIVES[:10]] + [s.path.read_bytes() for s in samples()[:40:4]]


def mutate(data: bytes, seed: int, n: int) -> bytes:
    rng = random.Random(seed)
    buf = bytearray(data)
    for _ in range(n):
        op = rng.randrange(4)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            del buf[pos : pos + rng.randrange(1, 40)]
        elif op == 1:
            buf[pos:pos] = rng.choice(
                [
                    b"--",
                    b"\r\n",
                    b"\n\n",
                    b"Content-Type: multipart/mixed; boundary=x\r\n",
                    b"=\r\n",
                    b"\xff\xfe",
                    b";",
                ]
            )
        elif op == 2 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        else:
            buf[pos:pos] = buf[rng.randrange(len(buf) + 1) :][: rng.randrange(1, 200)]
    return bytes(buf)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(SEEDS))), st.integers(0, 2**32), st.integers(1, 12))
def test_mutated_samples_never_raise(index: int, seed: int, n: int) -> None:
    data = mutate(SEEDS[index], seed, n)
    try:
        report = parse(data)
    except ParseError:
        return
    for hp in report.human_parts:
        assert 0 <= hp.headers_start <= hp.body_start <= hp.body_end <= len(data)


def test_one_megabyte_input() -> None:
    body = b"".join(b"line %d with 550 5.7.133 noise and text\r\n" % i for i in range(25000))
    data = b"Return-Path: <>\r\nFrom: MAILER-DAEMON@example.org\r\nSubject: Undeliverable\r\n\r\n" + body
    assert len(data) > 1_000_000
    report = parse(data)
    # A daemon's notice under a bounce subject that names no recipient: a text bounce with nothing
    # to explain, its one human part the whole megabyte (read linearly, not given up on).
    assert (report.is_bounce, report.format, report.recipients, report.family) == (True, "text", [], [])
    assert [(hp.content_type, hp.body_end) for hp in report.human_parts] == [("text/plain", len(data))]


def test_500_nested_multiparts_is_bounded() -> None:
    head = b"From: MAILER-DAEMON@example.org\r\nSubject: Undeliverable\r\nMIME-Version: 1.0\r\n"
    parts = []
    for i in range(500):
        parts.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    tail = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(500)))
    data = head + b"".join(parts) + b"Content-Type: text/plain\r\n\r\n550 5.7.133 x\r\n" + tail
    try:
        report = parse(data, max_depth=50)
    except ParseError:
        return
    assert len(report.human_parts) <= 2


def test_empty_input_is_parse_error() -> None:
    try:
        parse(b"")
    except ParseError:
        return
    raise AssertionError("empty input must raise ParseError")
