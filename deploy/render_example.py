"""Write what a sender sees: an annotated Exchange Online bounce, as text, HTML and PNG.

Runs the real code path (``gateway.bounce.parse.parse`` -> ``gateway.explain.annotate``) on one
of the built positives (Exchange Online layout, 5.7.133 to a group) and writes into
``deploy/docs/``:

* ``explained-example.eml``  the annotated message as relayed;
* ``explained-example.txt``  its decoded text/plain part;
* ``explained-example.html`` its decoded text/html part;
* ``explained-example-html.png`` / ``explained-example-text.png`` with ``--png``
  (headless Chromium; Debian packages ``chromium``, ``fonts-noto-cjk`` and,
  to keep the images small, ``pngquant``);
* ``variants/<variant>.txt``: the text block of every variant (both languages), so a
  reviewer can read all the advice; a test checks these files equal what this renders now.

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

from gateway.bounce.parse import parse
from gateway.config import ExplainSettings
from gateway.explain import annotate, render
from tests.advice_reports import NOW, VARIANTS, report
from tests.positives import POSITIVES

SAMPLE = "exo-qp-5.7.133"
DOCS = Path(__file__).resolve().parent / "docs"
VARIANT_DOCS = DOCS / "variants"
#: The recipient shown in each variant's example (the sender is the original's From).
VARIANT_ADDRESS = {
    "organization": "info@contoso.example",
    "group": "sales-team@contoso.example",
    "microsoft365_group": "project-x@contoso.example",
    "mailbox": "hanako.suzuki@contoso.example",
    "public_folder": "orders-pf@contoso.example",
    "mail_user": "partner.liaison@contoso.example",
    "legacy": "somu@contoso.example",
    "sender_not_allowed": "board@contoso.example",
}


def variant_texts() -> dict[str, str]:
    """The text block of each variant (en, then ja), as the gateway renders it now."""
    return {
        variant: render.render(
            report(variant, VARIANT_ADDRESS[variant]),
            incident_ids=["01JH8Z3K4Q5R6S7T8V9W0XYZAB"],
            now=NOW,
            settings=ExplainSettings(),
        ).text
        for variant in VARIANTS
    }


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


def explained_example() -> bytes:
    """The annotated example bounce, as relayed."""
    data = next(p.data for p in POSITIVES if p.name == SAMPLE)
    return annotate(
        data,
        parse(data),
        incident_ids=["01JH8Z3K4Q5R6S7T8V9W0XYZAB"],
        now=datetime(2025, 1, 6, 9, 30, tzinfo=UTC),
        settings=ExplainSettings(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", action="store_true", help="also render PNGs with headless Chromium")
    args = parser.parse_args()
    out = explained_example()
    DOCS.mkdir(exist_ok=True)
    VARIANT_DOCS.mkdir(exist_ok=True)
    for variant, text in variant_texts().items():
        (VARIANT_DOCS / f"{variant}.txt").write_text(text, encoding="utf-8")
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
