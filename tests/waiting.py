"""The one way tests wait: for a condition the system under test reaches by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def until(check: Callable[[], Awaitable[bool]], limit_s: float = 15.0) -> None:
    """Wait until ``check()`` is true (not for time to pass).

    Polls every 10 ms; fails with TimeoutError after ``limit_s``. An exception raised by
    ``check`` ends the wait with that exception.
    """
    async with asyncio.timeout(limit_s):
        while not await check():  # noqa: ASYNC110 - the condition lives in another component
            await asyncio.sleep(0.01)
