"""The blocking-call guard itself must work, or every async test proves less than it says."""

from __future__ import annotations

import asyncio
import time

import pytest
from blockbuster import BlockingError


async def test_blocking_sleep_on_the_loop_fails() -> None:
    with pytest.raises(BlockingError):
        time.sleep(0.001)  # noqa: ASYNC251 - the point of the test


async def test_blocking_file_read_on_the_loop_fails(tmp_path: object) -> None:
    with pytest.raises(BlockingError), open(__file__, "rb") as fh:  # noqa: ASYNC230
        fh.read()


async def test_the_same_work_in_a_thread_is_fine() -> None:
    await asyncio.to_thread(time.sleep, 0.001)
