"""``bouncegw explain [--json] FILE...``: parse and classify bounce files offline.

With ``--json`` each file yields exactly one JSON object on its own line; a file
that cannot be read or parsed yields ``{"file": ..., "error": ...}`` and makes the
exit status non-zero once the whole batch has been processed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from gateway.cli.common import cli
from gateway.report import BounceReport


def load_and_parse(path: Path | str) -> BounceReport:
    """Read ``path``, parse and classify it (OSError / ParseError propagate)."""
    from gateway.classify import classify
    from gateway.dsn import parse

    data = Path(path).read_bytes()
    return classify(parse(data))


def report_json(path: str, report: BounceReport) -> dict[str, Any]:
    return {
        "file": path,
        "is_bounce": report.is_bounce,
        "format": report.format,
        "reporting_mta": report.reporting_mta,
        "microsoft_evidence": bool(report.microsoft_evidence),
        "recipients": [
            {
                "recipient": r.recipient,
                "status": r.status,
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
    return "\n".join(lines)


@cli.command("explain")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, one per line.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=str))
def explain(as_json: bool, files: tuple[str, ...]) -> None:
    """Parse bounce FILES and show each recipient's status and family classification."""
    from gateway.dsn import ParseError

    failed = False
    for path in files:
        try:
            report = load_and_parse(path)
        except (OSError, ParseError) as exc:
            failed = True
            message = f"{type(exc).__name__}: {exc}"
            if as_json:
                click.echo(json.dumps({"file": path, "error": message}, ensure_ascii=False))
            else:
                click.echo(f"{path}: error: {message}", err=True)
            continue
        if as_json:
            click.echo(json.dumps(report_json(path, report), ensure_ascii=False))
        else:
            click.echo(_summary(path, report))
    if failed:
        sys.exit(1)
