"""The incident console in headless Chromium, against a gateway that relayed real family bounces.

A gateway (ephemeral ports, admin token set) relays bounces built by ``tests/positives.py`` and
ordinary mail to one of their refusing recipients, on SQLite and on PostgreSQL. The browser signs
in with the token (HTTP Basic), reads the problems view, filters and sorts it by clicking, opens an
incident, downloads the note for the recipient's admin as .eml and the view as CSV, and reads the
trends page and the Japanese page. What each page must show is computed from the incidents the
API returns, never written down here.

``BOUNCEGW_CONSOLE_SCREENSHOT=deploy/docs/console.png`` also writes the README's screenshot.
"""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import io
import os
import smtplib
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page

from gateway.app import Gateway
from gateway.console import i18n
from storage.db import upgrade
from tests.browser import chromium
from tests.conftest import GatewayFactory
from tests.positives import POSITIVES
from tests.recording_server import RecordingServer

pytest_plugins = ["tests.storage_fixtures"]

TOKEN = "console-s3cret"
OURS = ("alice@fabrikam.example", "bob@fabrikam.example", "carol@tailspin.example")
#: Mail to a refusing recipient after its bounce: the evidence that makes it quiet.
FOLLOW_UPS = 3
ORDINARY = (
    b"From: Bob <bob@fabrikam.example>\r\nTo: {rcpt}\r\nSubject: follow-up\r\n"
    b"Message-ID: <follow-{n}@fabrikam.example>\r\n\r\nHello again.\r\n"
)
SCREENSHOT = os.environ.get("BOUNCEGW_CONSOLE_SCREENSHOT")


def _send(port: int, sender: str, rcpts: list[str], data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(sender, rcpts, data)


def _incidents(base: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{base}/api/v1/incidents", params={"limit": 1000}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _relay_bounces(app: Gateway) -> str:
    """Relay the positives' bounces and follow-up mail; return the recipient that went quiet."""
    port = app.listener.port
    for i, positive in enumerate(POSITIVES[:24]):
        await asyncio.to_thread(_send, port, "", [OURS[i % len(OURS)]], positive.data)
    quiet = POSITIVES[0].expected[0][0].lower()
    for n in range(FOLLOW_UPS):
        data = ORDINARY.replace(b"{rcpt}", quiet.encode()).replace(b"{n}", str(n).encode())
        await asyncio.to_thread(_send, port, OURS[1], [quiet], data)
    await app.traffic.flush()  # what the watch writes every few seconds, now
    return quiet


async def _rows(page: Page) -> list[str]:
    return [
        text.strip() for text in await page.locator("table.problems tbody td.recipient > a").all_inner_texts()
    ]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_console_in_chromium(
    database: str,
    request: pytest.FixtureRequest,
    hop: RecordingServer,
    make_gateway: GatewayFactory,
) -> None:
    overrides: dict[str, Any] = {"admin.api_token": TOKEN}
    if database == "postgresql":
        url: str = request.getfixturevalue("pg_schema_url")
        await asyncio.to_thread(upgrade, url)
        overrides["database.url"] = url
    async with chromium() as browser:
        app = await make_gateway(hop.address, overrides)
        quiet = await _relay_bounces(app)
        base = f"http://127.0.0.1:{app.http_port}"
        incidents = await asyncio.to_thread(_incidents, base)
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for item in incidents:
            groups[(item["failed_recipient"], item["variant"])].append(item)
        assert len(groups) > 5

        # Without the token: the sign-in challenge a browser answers with its password dialog.
        denied = await asyncio.to_thread(httpx.get, f"{base}/console/problems")
        assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Basic ")

        context = await browser.new_context(
            http_credentials={"username": "admin", "password": TOKEN},
            locale="en-GB",
            viewport={"width": 1366, "height": 768},
            accept_downloads=True,
        )
        page = await context.new_page()
        await page.goto(f"{base}/console/problems")
        assert sorted(await _rows(page)) == sorted(r for r, _ in groups)
        # the recipient that got mail after its bounce is quiet, with the evidence
        quiet_row = page.locator("table.problems tbody tr", has=page.locator(f"text={quiet}"))
        assert await quiet_row.locator(".badge").inner_text() == i18n.text("quiet", "en")
        evidence = i18n.text("quiet_evidence", "en").format(count=FOLLOW_UPS)
        assert evidence in await quiet_row.locator(".evidence").inner_text()
        assert await page.locator("table.problems .badge.active").count() == len(groups) - 1

        if SCREENSHOT:
            await page.screenshot(path=SCREENSHOT, full_page=True)

        # every form control has a label, every image-like chart a text alternative
        unlabelled = await page.evaluate(
            "[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
            ".filter(e => e.labels.length === 0).map(e => e.name)"
        )
        assert unlabelled == []
        assert await page.locator("svg[role=img]:not([aria-label]):not([aria-labelledby])").count() == 0

        # keyboard: the first Tab reaches the skip link
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == i18n.text("skip", "en")

        # filter by kind: the form puts it in the URL, the table follows
        variant = max({v for _, v in groups}, key=lambda v: sum(1 for _, w in groups if w == v))
        await page.select_option("#f-variant", variant)
        await page.get_by_role("button", name=i18n.text("apply", "en")).click()
        await page.wait_for_url(f"**variant={variant}**")
        assert sorted(await _rows(page)) == sorted(r for r, v in groups if v == variant)

        # sort by bounces: a click on the header, the largest first
        await page.get_by_role("link", name=i18n.text("bounces", "en")).click()
        await page.wait_for_url("**sort=bounces**")
        counts = [
            int(c) for c in await page.locator("table.problems tbody td.num:nth-child(5)").all_inner_texts()
        ]
        assert counts == sorted(counts, reverse=True)
        assert counts == sorted((len(v) for (r, w), v in groups.items() if w == variant), reverse=True)

        # the CSV of this view
        async with page.expect_download() as download_info:
            await page.locator(".exports a", has_text="CSV").first.click()
        download = await download_info.value
        rows = list(csv.DictReader(io.StringIO(Path(await download.path()).read_text(encoding="utf-8"))))
        assert [int(r["bounces"]) for r in rows] == counts
        assert {r["variant"] for r in rows} == {variant}

        # one incident: the fields, the explanation, the note for the recipient's admin
        first = rows[0]["recipient"]
        await page.get_by_role("link", name=i18n.text("open", "en").format(recipient=first)).click()
        await page.wait_for_url("**/console/incidents/**")
        assert first in await page.locator("h1").inner_text()
        note_en = await page.locator("#note-en").input_value()
        assert first in note_en and "Steps for the administrator" in note_en
        assert first in await page.locator("pre.block").inner_text()
        async with page.expect_download() as download_info:
            await page.get_by_role(
                "link", name=i18n.text("download_eml", "en").format(lang="English")
            ).click()
        download = await download_info.value
        assert download.suggested_filename.endswith("-en.eml")
        message = email.message_from_bytes(
            Path(await download.path()).read_bytes(), policy=email.policy.default
        )
        assert message["To"] == f"postmaster@{first.rpartition('@')[2]}"
        assert first in message["Subject"] and first in message.get_content()

        # trends: a bar per day and kind, the top domains
        await page.get_by_role("link", name=i18n.text("trends", "en")).first.click()
        await page.wait_for_url("**/console/trends**")
        assert await page.locator("svg.chart rect").count() >= 2
        domains = await page.locator("table.domains tbody th").all_inner_texts()
        assert set(domains) == {str(i["recipient_domain"]) for i in incidents if i["variant"] == variant}

        # Japanese, from the browser's language
        ja = await browser.new_context(
            http_credentials={"username": "admin", "password": TOKEN}, locale="ja-JP"
        )
        ja_page = await ja.new_page()
        await ja_page.goto(f"{base}/console/problems")
        assert await ja_page.locator("h1").inner_text() == i18n.text("problems", "ja")
        assert i18n.text("quiet", "ja") in await ja_page.locator("table.problems").inner_text()
        await ja.close()
        await context.close()
