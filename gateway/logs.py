"""Logging setup: one JSON object per line (or readable text), never a message body.

Transaction lines come from the ``bouncegw.transaction`` logger with their
fields in ``extra``; the formatters put those fields into the output.

Log lines carry values a client or a bounce chose (HELO, addresses, a decoded Message-ID), and an
operator reads them in a terminal: both formatters write them through ``gateway.textsafe``, so an
escape sequence, a bidi override or a line break in a value is shown, never obeyed, and one record
is one line (a traceback keeps its own line breaks, each line escaped).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from gateway.textsafe import json_text, printable

# Attributes every LogRecord has; anything else on a record came from ``extra``.
# uvicorn adds "color_message" (its message with terminal colour codes): not for log files.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extra(record),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        # json.dumps escapes the C0 controls; json_text also C1, DEL and format characters.
        return json_text(json.dumps(entry, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        text = printable(self.formatMessage(record))
        fields = _extra(record)
        if fields:
            text += " " + " ".join(f"{k}={printable(str(v))}" for k, v in fields.items())
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            text += "\n" + "\n".join(printable(line) for line in trace.splitlines())
        return text


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiosmtpd logs every command at INFO (and lists AUTH mechanisms per connection).
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
