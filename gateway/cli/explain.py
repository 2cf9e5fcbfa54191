"""``bouncegw explain [--json | --summary] FILE...``: what bouncegw would do with bounce files.

Without options each family bounce is printed as bouncegw would relay it, with
the explanation block in place, using the configured templates and languages
(``--config``): the way to preview a template change. ``--summary`` prints one
line per recipient instead. With ``--json`` each file yields exactly one JSON
object on its own line. A file that cannot be read or parsed yields an error
(``{"file": ..., "error": ...}`` with ``--json``) and makes the exit status
non-zero once the whole batch has been processed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from gateway.bounce.report import BounceReport
from gateway.cli.common import cli, config_option, settings_from
from gateway.textsafe import json_text, printable


def load_and_parse(path: Path | str) -> BounceReport:
    """Read ``path``, parse and classify it (OSError / ParseError propagate)."""
    from gateway.bounce.parse import parse

    return parse(Path(path).read_bytes())


def report_json(path: str, report: BounceReport) -> dict[str, Any]:
    return {
        "file": path,
        "is_bounce": report.is_bounce,
        "format": report.format,
        "reporting_mta": report.reporting_mta,
        "microsoft_evidence": bool(report.microsoft_evidence),
        "nesting_capped": report.nesting_capped,
        "recipients": [
            {
                "recipient": r.recipient,
                "status": r.status,
                "reported_status": r.reported_status,
                "action": r.action,
                "diagnostic": r.diagnostic,
                "category": r.category,
                "variant": r.variant,
                "evidence": [{"source": e.source, "text": e.text} for e in r.evidence],
            }
            for r in report.recipients
        ],
    }


def _summary(path: str, report: BounceReport) -> str:
    if not report.is_bounce:
        return f"{path}: not a bounce"
    lines = [f"{path}: {report.format} bounce from {report.reporting_mta or '?'}"]
    for r in report.recipients:
        family = f" -> {r.category}/{r.variant}" if r.category else ""
        lines.append(f"  {r.recipient} {r.action or '?'} {r.status or '?'}{family}")
    # Every value here comes from the bounce: nothing in it may drive the terminal.
    return "\n".join(printable(line) for line in lines)


@cli.command("explain")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, one per line.")
@click.option("--summary", is_flag=True, help="One line per recipient instead of the annotated message.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=str))
def explain(config_file: Path | None, as_json: bool, summary: bool, files: tuple[str, ...]) -> None:
    """Show how bouncegw reads bounce FILES, or the annotated message it would relay."""
    from datetime import UTC, datetime

    from gateway.bounce.parse import ParseError
    from gateway.explain import ExplainError, annotate

    settings = settings_from(config_file) if not (as_json or summary) else None
    failed = False
    for path in files:
        try:
            report = load_and_parse(path)
        except (OSError, ParseError) as exc:
            failed = True
            message = f"{type(exc).__name__}: {exc}"
            if as_json:
                click.echo(json_text(json.dumps({"file": path, "error": message}, ensure_ascii=False)))
            else:
                click.echo(printable(f"{path}: error: {message}"), err=True)
            continue
        if as_json:
            click.echo(json_text(json.dumps(report_json(path, report), ensure_ascii=False)))
        elif summary or settings is None:
            click.echo(_summary(path, report))
        elif not report.family:
            click.echo(f"{path}: no recipient in the 5.7.12 family; bouncegw relays it unchanged", err=True)
        else:
            try:
                annotated = annotate(
                    Path(path).read_bytes(),
                    report,
                    incident_ids=None,
                    now=datetime.now(UTC),
                    settings=settings.explain,
                )
            except ExplainError as exc:
                failed = True
                click.echo(
                    printable(f"{path}: cannot annotate ({exc}); bouncegw would relay the original"), err=True
                )
                continue
            sys.stdout.buffer.write(annotated)
            sys.stdout.buffer.flush()
    if failed:
        sys.exit(1)
