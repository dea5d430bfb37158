"""`python -m bot discord` (also `kullm discord`): run a chat adapter."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from bot.settings import DiscordSettings

log = logging.getLogger("bot")

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


def run_discord() -> int:
    """Start the Discord adapter until SIGTERM/SIGINT; returns the exit status."""
    import discord

    from bot.discord_app import KullmDiscord

    try:
        settings = DiscordSettings()
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging()
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


COMMANDS = {"discord": run_discord}


def main(argv: list[str] | None = None) -> int:
    """`python -m bot <adapter>`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in COMMANDS:
        print(f"usage: python -m bot {{{','.join(COMMANDS)}}}", file=sys.stderr)
        return 2
    return COMMANDS[args[0]]()


if __name__ == "__main__":
    sys.exit(main())
