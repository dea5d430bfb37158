"""Workspace knowledge on Discord: `/kullm-설정 지식 켜기|끄기|상태|잊기` (members who may manage the server), the
history of a channel read back when it is turned on (its threads with it), new messages, edits and deletions
followed as they happen, and "찾아줘: …" answered from the channels with knowledge on that the asker may read
(View Channel and Read Message History), with the messages used as numbered sources.

A channel's threads belong to it: their messages are stored under the channel, each with its thread, so one switch
covers both and an answer can cite the thread. Bots' messages (this bot's answers too) are never stored: an answer
is built from what people wrote. DMs never have knowledge."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import discord
from discord import app_commands

from bot.discord.reading import home_channel, shown_text
from bot.discord.surface import DiscordOrigin
from bot.knowledge.asking import worth_keeping
from bot.knowledge.service import ACTIONS, Action, KnowledgeService
from bot.relay import Relay
from bot.settings import DiscordSettings
from bot.surface import Asked
from bot.texts import text
from chatbus import Bus
from chatbus.knowledge import Passage

log = logging.getLogger(__name__)

PLATFORM = "discord"


def passage_of(message: discord.Message) -> Passage | None:
    """A person's message as the index keeps it (None for bots' messages, DMs, requests to the bot, and messages
    with no text)."""
    said = shown_text(message)
    if message.author.bot or message.guild is None or not worth_keeping(said):
        return None
    return Passage(
        PLATFORM,
        home_channel(message.channel),
        str(message.id),
        said,
        author=message.author.display_name,
        thread=str(message.channel.id) if isinstance(message.channel, discord.Thread) else "",
        at=message.created_at.timestamp(),
        link=message.jump_url,
    )


class DiscordKnowledge(KnowledgeService):
    """The knowledge commands, the index kept current from the gateway, and questions answered from it."""

    def __init__(self, client: discord.Client, settings: DiscordSettings, bus: Bus, relay: Relay[Any, Any]) -> None:
        super().__init__(PLATFORM, settings, bus, relay)
        self.client = client

    # ------------------------------------------------------------------ the switch

    def commands(self, parent: app_commands.Group, name: Any) -> None:
        """`지식 켜기|끄기|상태|잊기` under the settings group (`name` makes each name and description)."""
        group = app_commands.Group(
            name=name("cmd_knowledge"), description=name("cmd_knowledge_description"), parent=parent
        )
        for action in ACTIONS:
            command: app_commands.Command[Any, ..., None] = app_commands.Command(
                name=name(f"cmd_{action}"),
                description=name(f"cmd_{action}_description"),
                callback=self._callback(action),
            )
            group.add_command(command)

    def _callback(self, action: Action) -> Any:
        async def run(interaction: discord.Interaction[Any]) -> None:  # no options: the channel is where it is used
            await self.command(interaction, action)

        return run

    async def command(self, interaction: discord.Interaction[Any], action: Action) -> None:
        """Turn the channel's knowledge on or off, show it, or erase it: the same members who may set personas."""
        if action != "status" and not interaction.permissions.manage_guild:
            who = text("discord_admins", self.language)
            await interaction.response.send_message(
                text("knowledge_admins_only", self.language, who=who), ephemeral=True
            )
            return
        channel = interaction.channel
        if isinstance(channel, discord.Thread) and channel.parent is not None:
            channel = channel.parent

        async def backfill() -> None:
            await self.backfill(channel)

        reply = await self.switch(action, home_channel(channel), str(interaction.user.id), backfill)
        await interaction.response.send_message(reply, ephemeral=True)

    async def backfill(self, channel: Any) -> None:
        """Read the channel's history back KNOWLEDGE_BACKFILL_DAYS into the index, with its threads': the active
        ones and the archived ones the bot may list."""
        after = datetime.fromtimestamp(self.backfill_after, UTC)
        places = [channel, *getattr(channel, "threads", [])]
        stored = 0
        try:
            if hasattr(channel, "archived_threads"):
                places += [thread async for thread in channel.archived_threads(limit=None) if _since(thread, after)]
        except discord.HTTPException:  # archived threads need Read Message History (private ones: Manage Threads)
            log.info("discord knowledge: archived threads of channel %s could not be listed", home_channel(channel))
        try:
            for place in dict.fromkeys(places):
                batch = [
                    passage
                    async for message in place.history(limit=None, after=after, oldest_first=True)
                    if (passage := passage_of(message)) is not None
                ]
                stored += await self.remember(batch)
        except discord.HTTPException:
            log.warning("discord knowledge: reading channel %s back stopped early", home_channel(channel))
        log.info("discord knowledge: channel %s read back, %d messages stored", home_channel(channel), stored)

    # ------------------------------------------------------------------ kept current

    async def on_message(self, message: discord.Message) -> None:
        """A new message in a channel with knowledge on is stored."""
        if (passage := passage_of(message)) is not None:
            await self.keep(passage.channel, passage.message, passage)

    async def on_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """An edited message replaces its stored text (one that lost its text is dropped)."""
        message = payload.message
        await self.keep(home_channel(message.channel), str(message.id), passage_of(message))

    async def on_delete(self, channel_id: int, message_ids: list[int]) -> None:
        """Deleted messages leave the index at once (whether knowledge is on or was turned off since)."""
        place: Any = self.client.get_channel(channel_id)
        if place is None:  # a thread the cache no longer holds: asked for, to learn the channel it belongs to
            try:
                place = await self.client.fetch_channel(channel_id)
            except discord.HTTPException:
                place = None
        key = home_channel(place) if place is not None else str(channel_id)
        await self.drop(key, [str(m) for m in message_ids])

    # ------------------------------------------------------------------ asking

    async def ask_workspace(
        self, origin: DiscordOrigin, member: Any, guild: discord.Guild | None, question: str
    ) -> None:
        """Answer `question` from the channels with knowledge on that `member` may read: View Channel and Read
        Message History."""

        async def readable() -> dict[str, str]:
            if guild is None or not isinstance(member, discord.Member):
                return {}
            on = set(await self.index.store.channels_on(PLATFORM))
            names = {}
            for channel in guild.text_channels:
                allowed = channel.permissions_for(member)
                if str(channel.id) in on and allowed.view_channel and allowed.read_message_history:
                    names[str(channel.id)] = channel.name
            return names

        asked = Asked(str(member.id), question, channel=home_channel(origin.channel))
        await self.ask(origin, asked, readable)


def _since(thread: discord.Thread, after: datetime) -> bool:
    """Whether an archived thread may hold messages newer than `after` (it was archived after it)."""
    archived = thread.archive_timestamp
    return archived is None or archived >= after
