"""The small HTTP listener both sides open for Prometheus and probes (`/metrics`, `/healthz`): the worker's
(`inference.metrics`) and the chat adapters' (`bot.metrics`). aiohttp behind the connection guard
(`runtime.http_guard`), on a port that may be held already (several workers on one host): then the next free one
of `next_free` after it, said in the log."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from runtime.http_guard import ConnectionGuard

log = logging.getLogger(__name__)

KEEPALIVE_TIMEOUT_S = 15.0  # an idle keep-alive connection is closed after this
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PortsTaken(Exception):
    """`port` (and the `next_free` after it) are held by other processes."""

    def __init__(self, host: str, port: int, next_free: int) -> None:
        tried = f"ports {port}-{port + next_free} are" if next_free else f"port {port} is"
        super().__init__(f"{tried} in use on {host}")


@dataclass(frozen=True)
class Endpoint:
    """A running HTTP listener (aiohttp behind the connection guard)."""

    runner: web.AppRunner
    listener: asyncio.Server
    port: int

    async def cleanup(self) -> None:
        """Stop listening, then close the application."""
        self.listener.close()
        await self.listener.wait_closed()
        await self.runner.cleanup()


async def serve(
    host: str, port: int, routes: dict[str, Handler], *, next_free: int = 0, role: str = "worker"
) -> Endpoint:
    """Serve GET `routes` on `port`, or the first free one of the `next_free` after it (another `role` process on
    the host holds it); PortsTaken when none is."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
    await runner.setup()
    assert runner.server is not None
    guard = ConnectionGuard()
    for candidate in range(port, min(port + next_free, 65535) + 1):
        try:
            listener = await guard.serve(runner.server, host, candidate)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                await runner.cleanup()
                raise
            continue
        if candidate != port:
            log.warning("metrics port %d is in use (another %s on this host?): serving on %d", port, role, candidate)
        log.info("serving %s on %s:%d", " and ".join(routes), host, candidate)
        return Endpoint(runner, listener, candidate)
    await runner.cleanup()
    raise PortsTaken(host, port, next_free)
