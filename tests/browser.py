"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by playwright.

Playwright is told the browser's path, so ``playwright install`` (a download) is never needed.
Without Chromium the test is skipped, and fails under CI (``CI=true``), like the other real parts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator

from playwright.async_api import Browser, async_playwright

from tests.conftest import need

CHROMIUM = os.environ.get("BOUNCEGW_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    need(os.access(CHROMIUM, os.X_OK), f"Chromium not found at {CHROMIUM} (Debian package chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            await browser.close()
