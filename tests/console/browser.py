"""A real Chromium for the console's tests, driven by Playwright.

Debian's ``chromium`` package (``make chromium``), never ``playwright install``:
nothing is downloaded when tests run. A missing browser fails the tests with
the command that installs it; they are never skipped.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from tests.api_helpers import TOKENS

TIMEOUT_MS = 45_000
"""Every wait of a browser test (the machine running them may be loaded)."""
VIEWPORT = {"width": 1366, "height": 860}
"""A laptop screen."""


def chromium_path() -> str:
    """The chromium executable, or a failure saying how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    if found is None:
        pytest.fail(
            "chromium is not installed: run `make chromium` (Debian's chromium package); "
            "the console's browser tests need a real browser",
            pytrace=False,
        )
    return found


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium for one test."""
    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox"], timeout=TIMEOUT_MS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Browser) -> Page:
    """A page in a context of its own (its own cookies: one person)."""
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    return await context.new_page()


async def sign_in(page: Page, url: str, who: str, *, then: str = "/console/") -> None:
    """Sign ``who`` in through the sign-in page, landing on ``then``."""
    await page.goto(f"{url}{then}")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("API token").fill(TOKENS[who])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#identity")).to_have_text(who)


async def reload_until_visible(page: Page, locator: Locator) -> None:
    """Reload ``page`` until ``locator`` shows (lists come from Temporal's visibility
    store, which lags the runs a little), at most ``TIMEOUT_MS``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_MS / 1000
    while await locator.count() == 0 and loop.time() < deadline:
        await asyncio.sleep(0.5)
        await page.reload()
    await expect(locator).to_be_visible()
