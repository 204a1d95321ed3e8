"""Shared helpers for the officer-console tests: sign in with the daemon's one-time link."""

from __future__ import annotations

import re

import aiohttp


async def signed_in(http: aiohttp.ClientSession, link: str, person: str = "Insp. Bianchi") -> str:
    """Sign in through the one-time ``link`` as ``person``; returns the console's base URL."""
    base = link.split("/login/")[0]
    async with http.get(link) as resp:
        token = re.search(r'name="token" value="([^"]+)"', await resp.text())
    assert token is not None
    async with http.post(base + "/login", data={"token": token.group(1), "person": person}) as resp:
        assert resp.status == 200
    return base


def csrf_of(page: str) -> str:
    """The CSRF token of a console page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)
