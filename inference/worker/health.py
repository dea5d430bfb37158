"""Redis health as the worker sees it: what is wrong now (for the log and /healthz), and the backoff while it lasts.

The worker rides out a Redis that is away (`BusDown`) or up and refusing writes (`WritesRefused`): events and acks
wait in the outbox, and every retry waits longer, up to REDIS_RETRY_MAX_S. Any other failure is a bug and raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from chatbus import BusDown, NotAnswering, PasswordRefused, WritesRefused

log = logging.getLogger(__name__)

REDIS_RETRY_S = 0.5
REDIS_RETRY_MAX_S = 8.0  # backoff cap while Redis stays unreachable or refuses writes
NOT_REACHED = "not reached yet"  # /healthz says 503 until Redis answered once
# What the loop rides out: Redis away, or up and refusing writes (each can pass).
REDIS_TROUBLE = (BusDown, WritesRefused)


def trouble(exc: BusDown | WritesRefused) -> str:
    """What is wrong with Redis, for the log and /healthz ("refuses writes (OOM)", "unreachable"…)."""
    if isinstance(exc, WritesRefused):
        return f"refuses writes ({exc.reason})"
    if isinstance(exc, PasswordRefused):
        return "refuses the password"
    return "not answering" if isinstance(exc, NotAnswering) else "unreachable"


class RedisHealth:
    """The problem with Redis now (None: none), said once when it starts and once when it ends."""

    def __init__(self) -> None:
        self.problem: str | None = NOT_REACHED
        self._retry_s = REDIS_RETRY_S

    def troubled(self, exc: BusDown | WritesRefused, holding: int) -> None:
        """Note what is wrong; said once while it stays the same."""
        problem = trouble(exc)
        if problem != self.problem:
            log.warning("redis %s: holding %d questions, retrying with backoff", problem, holding)
            self.problem, self._retry_s = problem, REDIS_RETRY_S

    def seen_by(self, exc: WritesRefused, what: str) -> None:
        """A background task found Redis refusing writes: /healthz says so until a write goes through."""
        if self.problem is None:
            self.problem = trouble(exc)
            log.warning("redis %s (seen by %s)", self.problem, what)

    def recovered(self) -> None:
        """A call went through."""
        if self.problem == NOT_REACHED:
            log.info("redis reached")
        elif self.problem:
            log.info("redis usable again (was: %s)", self.problem)
        self.problem = None

    async def back_off(self, stop: asyncio.Event | None = None) -> None:
        """Wait before the next try (or until `stop` is set), each wait twice the last, up to REDIS_RETRY_MAX_S."""
        if stop is None:
            await asyncio.sleep(self._retry_s)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._retry_s)
        self._retry_s = min(self._retry_s * 2, REDIS_RETRY_MAX_S)

    async def until_usable(self, call: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
        """Retry `call` until Redis takes it. `stop` (SIGTERM/SIGINT) ends the wait at once, even while a connection
        attempt hangs (a firewall dropping packets, a host that accepts and never answers)."""
        while not stop.is_set():
            attempt = asyncio.ensure_future(call())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({attempt, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not attempt.done():
                log.info("stopped while waiting for redis")
                attempt.cancel()
                await asyncio.wait({attempt}, timeout=1)
                return
            try:
                attempt.result()
                self.recovered()
                return
            except REDIS_TROUBLE as exc:
                self.troubled(exc, 0)
            await self.back_off(stop)
