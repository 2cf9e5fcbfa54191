"""Explain a 5.7.12-family bounce to its reader: add a bilingual block, touch nothing else.

The pipeline calls :func:`annotate` with the raw bytes and the parsed,
classified :class:`~gateway.bounce.report.BounceReport`. The block is rendered from
Jinja2 templates (:mod:`.render`), spliced into each human-readable part at the
parser's byte offsets (:mod:`.splice`), one ``X-Bouncegw-Explained`` header is
prepended (:mod:`.headers`), and the result is checked against the original
(:mod:`.validate`) before it is returned, optionally re-signed with DKIM
(:mod:`.dkim`). Any problem raises :class:`ExplainError` (or a subclass of
ValueError/RuntimeError from a step): the caller then relays the original bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.bounce.report import HUMAN_CONTENT_TYPES, BounceReport
from gateway.config import ExplainSettings
from gateway.explain import dkim, headers, render, splice, validate

__all__ = ["AlreadyExplained", "ExplainError", "TooLarge", "annotate"]

#: Part types that get the block: the human-readable ones the parser lists.
HUMAN_TYPES = frozenset(HUMAN_CONTENT_TYPES)

#: Largest human-readable part the block is spliced into. Editing a part decodes, re-encodes
#: and checks it, several copies of it at once; real notices are tens of kilobytes, so a larger
#: one (typically a text bounce that quotes a whole message) is relayed as it came.
MAX_PART_SIZE = 1024 * 1024


class ExplainError(Exception):
    """The bounce could not be annotated; relay the original."""


class AlreadyExplained(ExplainError):
    """The bounce already carries X-Bouncegw-Explained (never explain twice)."""


class TooLarge(ExplainError):
    """The annotated bounce would exceed the size limit the upstream was promised."""


def annotate(
    data: bytes,
    report: BounceReport,
    *,
    incident_ids: Sequence[str] | None,
    now: datetime,
    settings: ExplainSettings,
    max_size: int | None = None,
) -> bytes:
    """Return ``data`` with the explanation block added; raise on any failure.

    ``incident_ids`` is aligned with ``report.family`` (None or empty when
    nothing was recorded). The output differs from ``data`` only by the
    prepended header line (plus a DKIM-Signature when re-signing is configured)
    and inside the human-readable parts listed in ``report.human_parts``.
    An output longer than ``max_size`` octets raises :class:`TooLarge` before
    it is assembled.
    """
    if report.already_explained or headers.already_explained(data):
        raise AlreadyExplained("the message already carries X-Bouncegw-Explained")
    if not report.family:
        raise ExplainError("no recipient in the family: nothing to explain")
    parts = [p for p in report.human_parts if p.content_type in HUMAN_TYPES]
    if not parts:
        raise ExplainError("the report lists no human-readable part")
    for part in parts:
        if part.body_end - part.headers_start > MAX_PART_SIZE:
            size = part.body_end - part.headers_start
            raise TooLarge(
                f"a {part.content_type} part of {size} octets (parts over {MAX_PART_SIZE} stay as they are)"
            )
    try:
        rendered = render.render(report, incident_ids=incident_ids, now=now, settings=settings)
        edits = [splice.edit_part(data, part, rendered) for part in parts]
        # The header names the incidents the block explains (a header of thousands of ids
        # would outgrow what MTAs keep of one header field, e.g. Postfix's header_size_limit).
        explained_ids = incident_ids[: settings.max_recipients_explained] if incident_ids else None
        prefix = headers.header_line(report, explained_ids, splice.line_ending(data))
        size = len(prefix) + len(data) + sum(len(e.replacement) - (e.end - e.start) for e in edits)
        if max_size is not None and size > max_size:
            raise TooLarge(f"the annotated bounce would be {size} octets, over the limit of {max_size}")
        output = splice.apply(data, edits, prefix=prefix)
        validate.check_bytes(data, output, prefix, edits)
        validate.check_structure(
            data,
            output,
            prefix,
            edits,
            types=[part.content_type for part in parts],
            markers={
                "text/plain": rendered.text.split("\n", 2)[1],
                "text/html": 'class="bouncegw-explained"',
            },
        )
        if dkim.enabled(settings):
            output = dkim.resign(output, settings)
            if max_size is not None and len(output) > max_size:
                raise TooLarge(f"the signed bounce would be {len(output)} octets, over {max_size}")
    except ExplainError:
        raise
    except Exception as exc:
        raise ExplainError(f"{type(exc).__name__}: {exc}") from exc
    return output
