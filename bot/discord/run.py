"""The Discord process: `kullm discord` (or `python -m bot discord`) until SIGTERM/SIGINT; a missing or
rejected token and a missing privileged intent are said in one line with where to fix them."""

from __future__ import annotations

import asyncio
import logging

import discord

from bot.discord.app import KullmDiscord
from bot.process import load_settings
from bot.settings import DiscordSettings
from chatbus import Bus
from runtime.exits import EXIT_CONFIG, EXIT_OK
from runtime.signals import on_stop_signal

log = logging.getLogger(__name__)


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


def run_discord() -> int:
    """Start the Discord adapter until SIGTERM/SIGINT; returns the exit status."""
    settings = load_settings(DiscordSettings)
    if settings is None:
        return EXIT_CONFIG
    if settings.discord_token is None:
        log.error(MISSING_TOKEN.format(portal=PORTAL))
        return EXIT_CONFIG
    if settings.discord_api_base:
        discord.http.Route.BASE = settings.discord_api_base  # a proxy, or the tests' loopback Discord
    try:
        asyncio.run(_serve(settings, settings.discord_token.get_secret_value()))
    except discord.LoginFailure:
        log.error(BAD_TOKEN.format(portal=PORTAL))
        return EXIT_CONFIG
    except discord.PrivilegedIntentsRequired:
        log.error(NO_INTENT.format(portal=PORTAL))
        return EXIT_CONFIG
    return EXIT_OK


async def _serve(settings: DiscordSettings, token: str) -> None:
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    try:
        client = KullmDiscord(settings, bus)
        on_stop_signal(lambda: asyncio.create_task(client.close()))
        async with client:
            await client.start(token)
    finally:
        await bus.aclose()
