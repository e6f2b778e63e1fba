"""Waiting for a state, not for a time: a test that synchronises with a sleep fails on a machine
slow enough; one that waits for what it needs only takes longer there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(condition: Callable[[], bool], what: str = "the condition", timeout: float = 10.0) -> None:
    """Returns once ``condition()`` holds, yielding to the event loop (and so to whatever it
    waits for: a worker thread's callbacks, a queued task) meanwhile; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come within {timeout} s")
        await asyncio.sleep(0.001)
