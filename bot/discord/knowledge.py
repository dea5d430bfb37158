"""Workspace knowledge on Discord: `/kullm-설정 지식 켜기|끄기|상태|잊기` (members who may manage the server), the
history of a channel read back when it is turned on (its threads with it), new messages, edits and deletions
followed as they happen, and "찾아줘: …" answered from the channels with knowledge on that the asker may read
(View Channel and Read Message History), with the messages used as numbered sources.

A channel's threads belong to it: their messages are stored under the channel, each with its thread, so one switch
covers both and an answer can cite the thread. Bots' messages (this bot's answers too) are never stored: an answer
is built from what people wrote. DMs never have knowledge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal

import discord
from discord import app_commands

from bot.discord.reading import home_channel, shown_text
from bot.discord.surface import DiscordOrigin
from bot.knowledge.asking import numbered_context, numbered_sources
from bot.knowledge.index import KnowledgeIndex
from bot.limits import check_question
from bot.relay import Relay
from bot.settings import DiscordSettings
from bot.surface import Asked
from bot.texts import text
from chatbus import Bus, BusError, cancel_requested
from chatbus.knowledge import Passage

log = logging.getLogger(__name__)

PLATFORM = "discord"
SWEEP_S = 3600  # how often messages past KNOWLEDGE_RETENTION_DAYS are dropped
Action = Literal["on", "off", "status", "forget"]


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def passage_of(message: discord.Message) -> Passage | None:
    """A person's message as the index keeps it (None for bots' messages, DMs, and messages with no text)."""
    said = shown_text(message)
    if message.author.bot or message.guild is None or not said.strip():
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


class DiscordKnowledge:
    """The knowledge commands, the index kept current, and questions answered from it."""

    def __init__(self, client: discord.Client, settings: DiscordSettings, bus: Bus, relay: Relay[Any, Any]) -> None:
        self.client, self.settings, self.relay = client, settings, relay
        self.language: Any = settings.bot_language
        self.index = KnowledgeIndex(bus.knowledge)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._spawn(self._sweep_forever())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ the switch

    def commands(self, parent: app_commands.Group, name: Any) -> None:
        """`지식 켜기|끄기|상태|잊기` under the settings group (`name` makes each name and description)."""
        group = app_commands.Group(
            name=name("cmd_knowledge"), description=name("cmd_knowledge_description"), parent=parent
        )
        actions: tuple[tuple[Action, str], ...] = (
            ("on", "cmd_on"),
            ("off", "cmd_off"),
            ("status", "cmd_status"),
            ("forget", "cmd_forget"),
        )
        for action, key in actions:
            command: app_commands.Command[Any, ..., None] = app_commands.Command(
                name=name(key), description=name(f"{key}_description"), callback=self._callback(action)
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
        key = home_channel(channel)
        store = self.index.store
        if action == "on":
            await store.turn_on(PLATFORM, key, str(interaction.user.id))
            self._spawn(self.backfill(channel))
            reply = text("knowledge_on", self.language, days=self.settings.knowledge_backfill_days)
        elif action == "off":
            await store.turn_off(PLATFORM, key)
            reply = text("knowledge_off", self.language)
        elif action == "forget":
            await store.turn_off(PLATFORM, key)
            reply = text("knowledge_forgot", self.language, messages=await store.forget(PLATFORM, key))
        else:
            reply = await self._status(key)
        await interaction.response.send_message(reply, ephemeral=True)

    async def _status(self, key: str) -> str:
        status = await self.index.store.status(PLATFORM, key)
        state = text("knowledge_state_on" if status.on else "knowledge_state_off", self.language)
        span = ""
        if status.oldest is not None and status.newest is not None:
            oldest, newest = (
                datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d") for t in (status.oldest, status.newest)
            )
            span = text("knowledge_span", self.language, oldest=oldest, newest=newest)
        return text("knowledge_status", self.language, state=state, messages=status.messages, span=span)

    async def backfill(self, channel: Any) -> None:
        """Read the channel's history (and its active threads') back KNOWLEDGE_BACKFILL_DAYS into the index."""
        after = datetime.fromtimestamp(time.time() - self.settings.knowledge_backfill_days * 86400, UTC)
        places = [channel, *getattr(channel, "threads", [])]
        stored = 0
        try:
            for place in places:
                batch: list[Passage] = []
                async for message in place.history(limit=None, after=after, oldest_first=True):
                    if (passage := passage_of(message)) is not None:
                        batch.append(passage)
                stored += await self.index.put(batch)
        except (discord.HTTPException, BusError):
            log.warning("discord knowledge: reading channel %s back stopped early", home_channel(channel))
        log.info("discord knowledge: channel %s read back, %d messages stored", home_channel(channel), stored)

    async def _sweep_forever(self) -> None:
        while not cancel_requested():  # redis-py may swallow a CancelledError that lands mid-command
            with contextlib.suppress(BusError):
                dropped = await self.index.sweep(PLATFORM, self.settings.knowledge_retention_days)
                if dropped:
                    log.info("discord knowledge: %d messages past retention dropped", dropped)
            if cancel_requested():
                return
            await asyncio.sleep(SWEEP_S)

    # ------------------------------------------------------------------ kept current

    async def on_message(self, message: discord.Message) -> None:
        """A new message in a channel with knowledge on is stored (a failure loses only that message's entry)."""
        passage = passage_of(message)
        if passage is None:
            return
        with contextlib.suppress(BusError):
            if await self.index.store.is_on(PLATFORM, passage.channel):
                await self.index.put([passage])

    async def on_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """An edited message replaces its stored text (one that lost its text is dropped)."""
        message = payload.message
        key = home_channel(message.channel)
        with contextlib.suppress(BusError):
            if not await self.index.store.is_on(PLATFORM, key):
                return
            passage = passage_of(message)
            if passage is None:
                await self.index.store.delete(PLATFORM, key, [str(message.id)])
            else:
                await self.index.put([passage])

    async def on_delete(self, channel_id: int, message_ids: list[int]) -> None:
        """Deleted messages leave the index at once (whether knowledge is on or was turned off since)."""
        place: Any = self.client.get_channel(channel_id)
        if place is None:  # a thread the cache no longer holds: asked for, to learn the channel it belongs to
            with contextlib.suppress(discord.HTTPException):
                place = await self.client.fetch_channel(channel_id)
        key = home_channel(place) if place is not None else str(channel_id)
        with contextlib.suppress(BusError):
            await self.index.store.delete(PLATFORM, key, [str(m) for m in message_ids])

    # ------------------------------------------------------------------ asking

    async def ask(self, origin: DiscordOrigin, member: Any, guild: discord.Guild | None, question: str) -> None:
        """Answer `question` from the channels with knowledge on that `member` may read, citing what it used; say so
        when none is on, or nothing matches."""
        refused = check_question(self.settings, question)  # before searching: an over-long question costs nothing
        if refused:
            await self.relay.refuse(origin, refused)
            return
        readable = []
        if guild is not None and isinstance(member, discord.Member):
            on = set(await self.index.store.channels_on(PLATFORM))
            for channel in guild.text_channels:
                allowed = channel.permissions_for(member)
                if str(channel.id) in on and allowed.view_channel and allowed.read_message_history:
                    readable.append(channel)
        if not readable:
            await self.relay.refuse(origin, text("knowledge_none_on", self.language))
            return
        hits = await self.index.search(PLATFORM, [str(c.id) for c in readable], question)
        if not hits:
            await self.relay.refuse(origin, text("knowledge_nothing", self.language))
            return
        names = {str(c.id): c.name for c in readable}
        context = numbered_context(hits, self.language, names)
        where = home_channel(origin.channel)
        asked = Asked(str(member.id), question, context, False, where, sources=numbered_sources(hits, self.language))
        await self.relay.ask(origin, asked)
