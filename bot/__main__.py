"""`python -m bot discord|slack` (also `kullm discord|slack`): run a chat adapter."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any, TypeVar

from pydantic import ValidationError

from bot.settings import ClientSettings, DiscordSettings, SlackSettings

log = logging.getLogger("bot")
_S = TypeVar("_S", bound=ClientSettings)

PORTAL = "https://discord.com/developers/applications"
MISSING_TOKEN = (
    "DISCORD_TOKEN is not set. Create a bot in the Discord developer portal ({portal}) → your application → "
    "Bot → Reset Token, and put the token in .env as DISCORD_TOKEN=..."
)
BAD_TOKEN = "Discord rejected DISCORD_TOKEN. Reset it in {portal} → your application → Bot → Reset Token."
NO_INTENT = (
    "Discord refused the MESSAGE CONTENT intent, which this bot needs to read questions. Enable it in {portal} "
    "→ your application → Bot → Privileged Gateway Intents → MESSAGE CONTENT INTENT, then restart."
)


def configure_logging(level: str = "INFO") -> None:
    """One logging set-up per process; ids only, never user text or tokens."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("discord.gateway").setLevel(logging.WARNING)


def _load_settings(settings_class: type[_S]) -> _S | None:
    """The adapter's settings, with logging set up; None (after saying why) when they are invalid."""
    try:
        settings = settings_class()
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return None
    configure_logging()
    return settings


def run_discord() -> int:
    """Start the Discord adapter until SIGTERM/SIGINT; returns the exit status."""
    import discord

    from bot.discord_app import KullmDiscord

    settings = _load_settings(DiscordSettings)
    if settings is None:
        return 2
    if settings.discord_token is None:
        log.error(MISSING_TOKEN.format(portal=PORTAL))
        return 2
    if settings.discord_api_base:
        discord.http.Route.BASE = settings.discord_api_base  # a proxy, or the tests' loopback Discord

    async def main() -> None:
        client = KullmDiscord(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: loop.create_task(client.close()))
        async with client:
            assert settings.discord_token is not None
            await client.start(settings.discord_token.get_secret_value())

    try:
        asyncio.run(main())
    except discord.LoginFailure:
        log.error(BAD_TOKEN.format(portal=PORTAL))
        return 2
    except discord.PrivilegedIntentsRequired:
        log.error(NO_INTENT.format(portal=PORTAL))
        return 2
    return 0


SLACK_APPS = "https://api.slack.com/apps"
HTTP_KEEPALIVE_TIMEOUT_S = 15.0  # Slack's HTTP mode: an idle keep-alive connection is closed after this
SLACK_MISSING = {
    "SLACK_BOT_TOKEN": "your app → OAuth & Permissions → Bot User OAuth Token (xoxb-…)",
    "SLACK_APP_TOKEN": "your app → Basic Information → App-Level Tokens, with the connections:write scope (xapp-…)",
    "SLACK_SIGNING_SECRET": "your app → Basic Information → App Credentials → Signing Secret",
}


def _slack_token_error(variable: str, problem: str = "is not set") -> str:
    return f"{variable} {problem}. Find it at {SLACK_APPS} → {SLACK_MISSING[variable]} and put it in .env."


def run_slack() -> int:
    """Start the Slack adapter (Socket Mode by default, HTTP with SLACK_MODE=http) until SIGTERM/SIGINT."""
    settings = _load_settings(SlackSettings)
    if settings is None:
        return 2
    needed = ["SLACK_BOT_TOKEN", "SLACK_APP_TOKEN" if settings.slack_mode == "socket" else "SLACK_SIGNING_SECRET"]
    for variable in needed:
        if getattr(settings, variable.lower()) is None:
            log.error(_slack_token_error(variable))
            return 2
    return asyncio.run(_serve_slack(settings))


async def _serve_slack(settings: Any) -> int:
    from aiohttp import web
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
    from slack_sdk.errors import SlackApiError

    from bot.slack_app import KullmSlack, http_app, web_client
    from chatbus import Bus, Keys, connect
    from chatbus.http_guard import ConnectionGuard

    client = web_client(settings)
    try:
        identity = await client.auth_test()
    except SlackApiError as exc:
        log.error(_slack_token_error("SLACK_BOT_TOKEN", f"was rejected ({exc.response.get('error')})"))
        return 2
    bus = Bus(connect(settings.redis_url), Keys(settings.key_prefix))
    kullm = KullmSlack(settings, bus, client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    resumer = asyncio.create_task(kullm.relay.run_resumer())
    try:
        if settings.slack_mode == "socket":
            handler = AsyncSocketModeHandler(kullm.app, settings.slack_app_token.get_secret_value())
            try:
                await handler.connect_async()
            except SlackApiError as exc:
                log.error(_slack_token_error("SLACK_APP_TOKEN", f"was rejected ({exc.response.get('error')})"))
                return 2
            log.info("connected to Slack as %s (Socket Mode)", identity.get("user"))
            await stop.wait()
            await handler.close_async()
        else:
            runner = web.AppRunner(
                http_app(kullm, settings.slack_http_port), keepalive_timeout=HTTP_KEEPALIVE_TIMEOUT_S
            )
            await runner.setup()
            assert runner.server is not None
            listener = await ConnectionGuard().serve(runner.server, settings.slack_http_host, settings.slack_http_port)
            log.info("serving Slack events on %s:%d/slack/events", settings.slack_http_host, settings.slack_http_port)
            await stop.wait()
            listener.close()
            await runner.cleanup()
        return 0
    finally:
        resumer.cancel()
        await kullm.relay.close()
        await bus.redis.aclose()


COMMANDS = {"discord": run_discord, "slack": run_slack}


def main(argv: list[str] | None = None) -> int:
    """`python -m bot <adapter>`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in COMMANDS:
        print(f"usage: python -m bot {{{','.join(COMMANDS)}}}", file=sys.stderr)
        return 2
    return COMMANDS[args[0]]()


if __name__ == "__main__":
    sys.exit(main())
