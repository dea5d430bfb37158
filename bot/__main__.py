"""`python -m bot discord|slack|api` (also `kullm discord|slack|api`): run a chat adapter or the API.

Only parsing and dispatch: each adapter's process lives beside it (`run_discord` in
bot/discord/run.py, `run_slack` in bot/slack/run.py), imported only when chosen.
"""

from __future__ import annotations

import sys

ADAPTERS = ("discord", "slack", "api")


def run(adapter: str) -> int:
    """Run one adapter until SIGTERM/SIGINT; returns the exit status."""
    if adapter == "discord":
        from bot.discord.run import run_discord

        return run_discord()
    if adapter == "api":
        from bot.api.run import main as run_api

        return run_api()
    from bot.slack.run import run_slack

    return run_slack()


def main(argv: list[str] | None = None) -> int:
    """`python -m bot <adapter>`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in ADAPTERS:
        print(f"usage: python -m bot {{{','.join(ADAPTERS)}}}", file=sys.stderr)
        return 2
    return run(args[0])


if __name__ == "__main__":
    sys.exit(main())
