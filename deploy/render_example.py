"""Write what a sender sees: an annotated Exchange Online bounce, as text, HTML and PNG.

Runs the real code path (``gateway.dsn.parse`` -> ``gateway.classify.classify``
-> ``gateway.explain.annotate``) on one of the built positives (Exchange Online
layout, 5.7.133 to a group) and writes into ``deploy/docs/``:

* ``explained-example.eml``  the annotated message as relayed;
* ``explained-example.txt``  its decoded text/plain part;
* ``explained-example.html`` its decoded text/html part;
* ``explained-example-html.png`` / ``explained-example-text.png`` with ``--png``
  (headless Chromium; Debian packages ``chromium``, ``fonts-noto-cjk`` and,
  to keep the images small, ``pngquant``).

Usage, from the repository root::

    PYTHONPATH=. .venv/bin/python deploy/render_example.py --png
"""

from __future__ import annotations

import argparse
import email
import html
import shutil
import subprocess
from datetime import UTC, datetime
from email import policy
from pathlib import Path

from gateway.classify import classify
from gateway.config import ExplainSettings
from gateway.dsn import parse
from gateway.explain import annotate
from tests.positives import POSITIVES

SAMPLE = "exo-qp-5.7.133"
DOCS = Path(__file__).resolve().parent / "docs"


def _parts(data: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in email.message_from_bytes(data, policy=policy.compat32).walk():
        kind = part.get_content_type()
        if kind in ("text/plain", "text/html") and kind not in found and part["Content-Type"]:
            raw = part.get_payload(decode=True)
            assert isinstance(raw, bytes)
            found[kind] = raw.decode(part.get_content_charset() or "us-ascii").replace("\r\n", "\n")
    return found


def _screenshot(page: Path, png: Path, height: int) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install -y chromium fonts-noto-cjk)")
    subprocess.run(  # noqa: S603 - fixed arguments, local file
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--hide-scrollbars",
            f"--screenshot={png}",
            f"--window-size=900,{height}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _shrink(*pngs: Path) -> None:
    """Quantise to a palette (Debian package ``pngquant``) so the README images stay small."""
    pngquant = shutil.which("pngquant")
    if pngquant is None:
        return
    for png in pngs:
        subprocess.run(  # noqa: S603 - fixed arguments, local file
            [
                pngquant,
                "--force",
                "--skip-if-larger",
                "--quality=70-95",
                "--output",
                str(png),
                "--",
                str(png),
            ],
            check=False,
            timeout=60,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", action="store_true", help="also render PNGs with headless Chromium")
    args = parser.parse_args()
    data = next(p.data for p in POSITIVES if p.name == SAMPLE)
    report = classify(parse(data))
    out = annotate(
        data,
        report,
        incident_ids=["01JH8Z3K4Q5R6S7T8V9W0XYZAB"],
        now=datetime(2025, 1, 6, 9, 30, tzinfo=UTC),
        settings=ExplainSettings(),
    )
    DOCS.mkdir(exist_ok=True)
    (DOCS / "explained-example.eml").write_bytes(out)
    parts = _parts(out)
    (DOCS / "explained-example.txt").write_text(parts["text/plain"], encoding="utf-8")
    html_page = DOCS / "explained-example.html"
    html_page.write_text(parts["text/html"], encoding="utf-8")
    if args.png:
        text_page = DOCS / "explained-example-text.html"
        text_page.write_text(
            '<!DOCTYPE html><html><head><meta charset="utf-8"></head>'
            '<body style="margin:12px;background:#fff"><pre style="font:12px/1.45 \'Noto Sans Mono CJK JP\','
            'monospace;white-space:pre-wrap">' + html.escape(parts["text/plain"]) + "</pre></body></html>",
            encoding="utf-8",
        )
        try:
            _screenshot(html_page, DOCS / "explained-example-html.png", 1440)
            _screenshot(text_page, DOCS / "explained-example-text.png", 1800)
        finally:
            text_page.unlink()
        _shrink(DOCS / "explained-example-html.png", DOCS / "explained-example-text.png")


if __name__ == "__main__":
    main()
