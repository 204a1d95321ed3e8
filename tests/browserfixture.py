"""Shared parts of the headless-browser tests (Debian's chromium driven by Playwright in a
child process): where the browser is, how it is launched, and what a page must not do."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Page

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


def watch(
    page: Page, requests: list[str], errors: list[str], *, refusals_expected: bool = False
) -> None:
    """Record every URL the page asks for and every script error, CSP violation or
    console error it raises. With ``refusals_expected`` the browser's own line for each
    4xx answer ("Failed to load resource") is not an error: the refusal is the point."""

    def on_console(m: ConsoleMessage) -> None:
        expected = refusals_expected and m.text.startswith("Failed to load resource")
        if m.type == "error" and not expected:
            errors.append(f"console: {m.text}")

    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", on_console)
