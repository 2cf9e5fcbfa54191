"""Log lines carry values a client or a bounce chose: shown, never obeyed by the operator's terminal."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.logs import JsonFormatter, TextFormatter

#: An OSC title change, a screen clear, C1 CSI, a bidi override and a forged second log line.
HOSTILE = "id\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\nfake 2026-01-01 INFO bouncegw: ok"
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


def record(exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    rec = logging.LogRecord(
        "bouncegw.transaction", logging.INFO, __file__, 1, "relayed %s", (HOSTILE,), exc_info
    )
    rec.bounce_id = HOSTILE
    rec.helo = HOSTILE
    return rec


@pytest.mark.parametrize("exc", [False, True])
def test_text_lines_show_hostile_values_escaped(exc: bool) -> None:
    line = TextFormatter().format(record(exc))
    assert not any(ch in line for ch in RAW)
    assert "pwned" in line and "evil" in line  # shown, escaped
    head = line.split("\n", 1)[0]
    assert "bounce_id=" in head and "helo=" in head  # the forged line break stayed inside the record
    if exc:
        assert "Traceback" in line and "ValueError" in line


def test_json_lines_keep_the_values_and_nothing_live() -> None:
    line = JsonFormatter().format(record(exc=True))
    assert "\n" not in line and not any(ch in line for ch in RAW)
    entry = json.loads(line)
    assert entry["bounce_id"] == HOSTILE and entry["helo"] == HOSTILE  # the same data for a reader
    assert entry["msg"] == f"relayed {HOSTILE}"
