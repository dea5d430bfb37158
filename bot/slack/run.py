"""The Slack process: `kullm slack` (or `python -m bot slack`), over Socket Mode or, with SLACK_MODE=http, an
HTTP listener behind the connection guard with Slack's signature checked first; a missing or rejected token is
said in one line with where to find it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import AdapterMetrics
from bot.process import load_settings
from bot.settings import SlackSettings
from bot.slack.app import KullmSlack
from chatbus import Bus
from runtime.exits import EXIT_CONFIG, EXIT_OK
from runtime.http_guard import ConnectionGuard
from runtime.signals import on_stop_signal

log = logging.getLogger(__name__)


CONNECTION_CHECK_S = 5.0  # Socket Mode: how often whether the connection is up is looked at
HTTP_KEEPALIVE_TIMEOUT_S = 15.0  # HTTP mode: an idle keep-alive connection is closed after this


SLACK_APPS = "https://api.slack.com/apps"


SLACK_MISSING = {
    "SLACK_BOT_TOKEN": "your app → OAuth & Permissions → Bot User OAuth Token (xoxb-…)",
    "SLACK_APP_TOKEN": "your app → Basic Information → App-Level Tokens, with the connections:write scope (xapp-…)",
    "SLACK_SIGNING_SECRET": "your app → Basic Information → App Credentials → Signing Secret",
}


def web_client(settings: SlackSettings) -> AsyncWebClient:
    """The Web API client: rate-limited calls (429) are retried after Retry-After."""
    assert settings.slack_bot_token is not None
    kwargs: dict[str, Any] = {"token": settings.slack_bot_token.get_secret_value()}
    if settings.slack_api_base:
        kwargs["base_url"] = settings.slack_api_base
    client = AsyncWebClient(**kwargs)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=5))
    return client


def http_app(kullm: KullmSlack, port: int) -> web.Application:
    """The aiohttp application of HTTP mode: bolt's, behind a gate that refuses what Slack never sends.

    bolt parses a body before it checks its signature, so a malformed unsigned body made it fail
    with a 500. The gate checks the signature first (401 for unsigned, forged or stale requests) and
    answers an undecodable body 400; only then does bolt see the request.
    """
    secret = kullm.settings.slack_signing_secret
    verifier = SignatureVerifier(secret.get_secret_value() if secret else "")

    @web.middleware
    async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return web.Response(status=400, text="the request body is not UTF-8")
        if not verifier.is_valid_request(text, dict(request.headers)):
            return web.Response(status=401, text="invalid request signature")
        try:
            response: web.StreamResponse = await handler(request)
        except ValueError:  # a signed body bolt cannot parse
            return web.Response(status=400, text="malformed request body")
        return response

    app = kullm.app.web_app(path="/slack/events", port=port)
    app.middlewares.append(gate)
    return app


def run_slack() -> int:
    """Start the Slack adapter (Socket Mode by default, HTTP with SLACK_MODE=http) until SIGTERM/SIGINT."""
    settings = load_settings(SlackSettings)
    if settings is None:
        return EXIT_CONFIG
    needed = ["SLACK_BOT_TOKEN", "SLACK_APP_TOKEN" if settings.slack_mode == "socket" else "SLACK_SIGNING_SECRET"]
    for variable in needed:
        if getattr(settings, variable.lower()) is None:
            log.error(_token_error(variable))
            return EXIT_CONFIG
    return asyncio.run(_serve(settings))


def _token_error(variable: str, problem: str = "is not set") -> str:
    return f"{variable} {problem}. Find it at {SLACK_APPS} → {SLACK_MISSING[variable]} and put it in .env."


async def _serve(settings: SlackSettings) -> int:
    client = web_client(settings)
    try:
        identity = await client.auth_test()
    except SlackApiError as exc:
        log.error(_token_error("SLACK_BOT_TOKEN", f"was rejected ({exc.response.get('error')})"))
        return EXIT_CONFIG
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    kullm = KullmSlack(settings, bus, client, str(identity.get("team_id") or ""))
    stop = asyncio.Event()
    on_stop_signal(stop.set)
    kullm.relay.start()
    kullm.knowledge.start()
    metrics = AdapterMetrics("slack")
    endpoint = await metrics.serve(settings)
    try:
        if settings.slack_mode == "socket":
            return await _serve_socket_mode(kullm, str(identity.get("user")), stop, metrics)
        await _serve_http(kullm, stop, metrics)
        return EXIT_OK
    finally:
        metrics.set_connected(False)
        if endpoint is not None:
            await endpoint.cleanup()
        await kullm.knowledge.close()
        await kullm.relay.close()
        await bus.aclose()


async def _serve_socket_mode(kullm: KullmSlack, name: str, stop: asyncio.Event, metrics: AdapterMetrics) -> int:
    assert kullm.settings.slack_app_token is not None
    handler = AsyncSocketModeHandler(kullm.app, kullm.settings.slack_app_token.get_secret_value())
    try:
        connect: Callable[[], Awaitable[None]] = handler.connect_async  # slack_bolt leaves it unannotated
        await connect()
    except SlackApiError as exc:
        log.error(_token_error("SLACK_APP_TOKEN", f"was rejected ({exc.response.get('error')})"))
        return EXIT_CONFIG
    log.info("connected to Slack as %s (Socket Mode)", name)
    while not stop.is_set():  # whether the connection is up (slack_sdk reconnects by itself), for /metrics
        metrics.set_connected(await handler.client.is_connected())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CONNECTION_CHECK_S)
    close: Callable[[], Awaitable[None]] = handler.close_async
    await close()
    return EXIT_OK


async def _serve_http(kullm: KullmSlack, stop: asyncio.Event, metrics: AdapterMetrics) -> None:
    settings = kullm.settings
    runner = web.AppRunner(http_app(kullm, settings.slack_http_port), keepalive_timeout=HTTP_KEEPALIVE_TIMEOUT_S)
    await runner.setup()
    assert runner.server is not None
    listener = await ConnectionGuard().serve(runner.server, settings.slack_http_host, settings.slack_http_port)
    log.info("serving Slack events on %s:%d/slack/events", settings.slack_http_host, settings.slack_http_port)
    metrics.set_connected(True)  # HTTP mode holds no connection: Slack reaches it while it serves
    await stop.wait()
    listener.close()
    await runner.cleanup()
