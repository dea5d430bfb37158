"""What both stand-ins do to listen: an aiohttp app on a free port, and polling for a condition they bring about."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from testkit.polling import eventually

T = TypeVar("T")


async def listen(app: web.Application, bind: str) -> tuple[web.AppRunner, int]:
    """Serve `app` on `bind` at a free port; the runner (to clean up) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, bind, 0).start()
    return runner, runner.addresses[0][1]


async def wait_for(predicate: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll `predicate` every 0.02 s until it is truthy; return its value or raise AssertionError."""
    found = await eventually(predicate, timeout, what="stand-in condition")
    assert found is not None
    return found
