"""The API process: `kullm api` (or `python -m bot api`), behind the shared connection guard, until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from bot.api.app import Api
from bot.api.settings import ApiSettings
from bot.process import load_settings
from chatbus import Bus
from runtime.exits import EXIT_CONFIG, EXIT_OK
from runtime.http_guard import ConnectionGuard, descriptor_cap
from runtime.signals import on_stop_signal

log = logging.getLogger(__name__)
KEEPALIVE_TIMEOUT_S = 15.0


def main() -> int:
    """`kullm api` (same as `python -m bot api`)."""
    settings = load_settings(ApiSettings)
    if settings is None:
        return EXIT_CONFIG
    return asyncio.run(_serve(settings))


async def _serve(settings: ApiSettings) -> int:
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    api = Api(bus, settings)
    runner = web.AppRunner(api.app(), access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
    await runner.setup()
    assert runner.server is not None
    guard = ConnectionGuard(
        header_timeout_s=settings.api_header_timeout_s, max_connections=descriptor_cap(settings.api_max_connections)
    )
    listener = await guard.serve(runner.server, settings.api_host, settings.api_port)
    log.info("OpenAI-compatible API on http://%s:%d/v1", settings.api_host, settings.api_port)
    stop = asyncio.Event()
    on_stop_signal(stop.set)
    try:
        await stop.wait()
    finally:
        listener.close()
        await runner.cleanup()
        await bus.aclose()
    return EXIT_OK
