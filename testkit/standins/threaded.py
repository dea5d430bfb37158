"""Both stand-ins on an event loop of their own thread, for a caller that is not async (the compose check, where
the containers' bots talk to them), and what such a caller reads back: the question asked, the answer shown."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from testkit.controls import stop_button_on
from testkit.shown import shown_text, without_footer
from testkit.standins.discord import DiscordStandIn
from testkit.standins.slack import SlackStandIn

T = TypeVar("T")


class ChatStandIns:
    """The loopback Discord and Slack, on an event loop of their own, listening on every address and naming
    `gateway` in their URLs: where containers on a compose network reach this host."""

    def __init__(self, gateway: str) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="standins", daemon=True).start()
        self.discord, self.slack = DiscordStandIn(), SlackStandIn()
        self.call(self.discord.start(point_discord_py=False, host="0.0.0.0", url_host=gateway))
        self.call(self.slack.start(host="0.0.0.0", url_host=gateway))

    def call(self, work: Coroutine[Any, Any, T], timeout_s: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout_s)

    def settings(self) -> dict[str, str]:
        """The adapters' settings, as an operator's .env holds them (every service gets the file; compose blanks
        the tokens where a service must not hold them)."""
        return {
            "DISCORD_TOKEN": self.discord.token,
            "DISCORD_API_BASE": self.discord.api_base,
            "DISCORD_GUILD_IDS": str(self.discord.guild_id),
            "SLACK_BOT_TOKEN": self.slack.bot_token,
            "SLACK_APP_TOKEN": self.slack.app_token,
            "SLACK_API_BASE": self.slack.api_base,
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.discord.stop(), 10)
            self.call(self.slack.stop(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def discord_answer(discord: DiscordStandIn, thread: int) -> str | None:
    """The bot's settled answer in a Discord thread (its stop button gone; the vote buttons come), without the
    footer naming the model, or None."""
    for message in discord.messages_in(thread):
        ours = int(message["author"]["id"]) == discord.bot_id
        if ours and not stop_button_on(message) and not shown_text(message).startswith("⏳"):
            return without_footer(shown_text(message))  # plain content, or a layout's text displays
    return None


def slack_question(slack: SlackStandIn) -> str:
    """The ts of the question the Slack adapter posted for /kullm ("@alice 님의 질문: …"), or ""."""
    for (channel, ts), message in sorted(slack.messages.items(), key=lambda kv: kv[0][1]):
        if channel == slack.channel_id and message.get("bot_id") and "님의 질문" in message["text"]:
            return str(ts)
    return ""


def slack_answer(slack: SlackStandIn, thread_ts: str) -> str | None:
    """The text of a finished bot answer in a Slack thread (the one message it grew in, its stop button gone),
    without the footer naming the model, or None."""
    import html

    for message in slack.thread(slack.channel_id, thread_ts):
        if message.get("bot_id") and message["ts"] != thread_ts and not stop_button_on(message):
            shown = str(message["text"])
            if not shown.startswith("⏳") and not message.get("streaming"):
                return without_footer(html.unescape(shown))
    return None
