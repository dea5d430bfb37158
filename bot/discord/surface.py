"""Where answers appear on Discord (`DiscordSurface`, the relay's `Surface`): a thread opened on the question,
a placeholder with a stop button edited in place, parts of a long answer, vote buttons under the last, and
refusals by DM. Every post and edit uses `AllowedMentions.none()`, so model output never pings anyone."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import discord

from bot.discord.views import CancelButton, feedback_view
from bot.surface import Asked, PlaceholderGone
from bot.texts import quote_of, text

log = logging.getLogger(__name__)


MESSAGE_LIMIT = 2000


THREAD_NAME_LIMIT = 90


# The question as the "asked by" line quotes it: room is left in the message for the line's own words.
QUOTED_QUESTION_CHARS = 1800


NO_MENTIONS = discord.AllowedMentions.none()


REFUSAL_SHOWN_S = 60  # a refusal replied where the asker's DMs are closed is deleted after this


def thread_name(question: str) -> str:
    """A thread title from the question's first line."""
    first = question.strip().splitlines()[0] if question.strip() else "KULLM"
    return first if len(first) <= THREAD_NAME_LIMIT else first[: THREAD_NAME_LIMIT - 1] + "…"


@dataclass(frozen=True)
class DiscordTarget:
    """A placeholder message and the channel or thread it is in (that thread is the conversation)."""

    channel: str
    message: str

    @property
    def conversation(self) -> str:
        return self.channel

    def to_fields(self) -> dict[str, str]:
        return {"channel": self.channel, "message": self.message}


@dataclass(frozen=True)
class DiscordOrigin:
    """Where a question was asked: a message (mention, DM, thread) or an interaction (`/kullm`, the menu)."""

    channel: Any
    message: discord.Message | None = None
    interaction: discord.Interaction[Any] | None = None
    answer_in: Any = None  # a thread the answer goes to instead (a thread summarised from its parent channel)


class DiscordSurface:
    """Refuses, posts and edits answers through Discord's REST API."""

    platform = "discord"
    max_chars = MESSAGE_LIMIT
    footer_style = "-# {}"  # Discord's subtext line

    def __init__(self, client: discord.Client, edit_interval_s: float, language: str) -> None:
        self.client = client
        self.edit_interval_s = edit_interval_s
        self.language: Any = language

    def target(self, fields: Mapping[str, str]) -> DiscordTarget:
        return DiscordTarget(fields["channel"], fields["message"])

    async def refuse(self, origin: DiscordOrigin, notice: str) -> None:
        """Seen only by the asker: an ephemeral follow-up to a command; for a mention (Discord has no ephemeral
        replies to messages) a DM, or where their DMs are closed a reply that deletes itself."""
        if origin.interaction is not None:
            await origin.interaction.followup.send(notice, ephemeral=True)
            return
        message = origin.message
        if message is None:
            return
        if not isinstance(message.channel, discord.DMChannel):
            try:
                await message.author.send(f"{message.jump_url}\n{notice}", allowed_mentions=NO_MENTIONS)
                return
            except discord.HTTPException:
                pass  # DMs closed to the bot
            await message.reply(notice, mention_author=False, delete_after=REFUSAL_SHOWN_S)
            return
        await message.reply(notice, mention_author=False)

    async def post_placeholder(
        self, origin: DiscordOrigin, asked: Asked, content: str, question_id: str, *, ahead: int = 0
    ) -> DiscordTarget:
        where = await self._answer_channel(origin, asked)
        placeholder = await where.send(content, view=self._stop_view(question_id), allowed_mentions=NO_MENTIONS)
        return DiscordTarget(str(where.id), str(placeholder.id))

    def _stop_view(self, question_id: str) -> discord.ui.View:
        view = discord.ui.View(timeout=None)
        view.add_item(CancelButton(question_id, text("cancel_button", self.language)))
        return view

    async def _answer_channel(self, origin: DiscordOrigin, asked: Asked) -> Any:
        """The thread the answer goes in: the one asked in, or a new one on the question (DMs have none)."""
        channel, interaction = origin.channel, origin.interaction
        if interaction is not None and origin.answer_in is not None and origin.answer_in.id != channel.id:
            notice = text("task_in_thread", self.language, thread=origin.answer_in.mention)
            await interaction.followup.send(notice, allowed_mentions=NO_MENTIONS)
            return origin.answer_in
        if interaction is None:
            assert origin.message is not None
            if isinstance(channel, discord.Thread | discord.DMChannel):
                return channel
            return await origin.message.create_thread(name=thread_name(asked.question))
        shown = asked.question
        if len(shown) > QUOTED_QUESTION_CHARS:
            shown = shown[: QUOTED_QUESTION_CHARS - 1] + "…"
        quoted = await interaction.followup.send(
            quote_of(interaction.user.display_name, shown, asked.task, self.language),
            wait=True,
            allowed_mentions=NO_MENTIONS,
        )
        # A follow-up is a webhook message without guild info: open the thread through its channel.
        if isinstance(channel, discord.TextChannel):
            return await channel.create_thread(name=thread_name(asked.question), message=quoted)
        return channel

    async def edit(self, target: DiscordTarget, content: str, *, final: bool, feedback: str | None = None) -> None:
        message = self._channel(target).get_partial_message(int(target.message))
        try:
            if final:
                votes = feedback_view(feedback, self.language) if feedback else None
                await message.edit(content=content, view=votes, allowed_mentions=NO_MENTIONS)
            else:
                await message.edit(content=content, allowed_mentions=NO_MENTIONS)
        except (discord.NotFound, discord.Forbidden) as exc:  # deleted, or the bot lost access
            raise PlaceholderGone(f"{exc.status} {exc.code}") from exc

    async def post_part(
        self, target: DiscordTarget, content: str, question_id: str, *, final: bool, feedback: str | None = None
    ) -> DiscordTarget:
        if final:
            view = feedback_view(feedback, self.language) if feedback else discord.utils.MISSING
        else:
            view = self._stop_view(question_id)
        try:
            posted = await self._channel(target).send(content, view=view, allowed_mentions=NO_MENTIONS)
        except (discord.NotFound, discord.Forbidden) as exc:
            raise PlaceholderGone(f"{exc.status} {exc.code}") from exc
        return DiscordTarget(target.channel, str(posted.id))

    async def delete(self, target: DiscordTarget) -> None:
        with contextlib.suppress(discord.NotFound, discord.Forbidden):
            await self._channel(target).get_partial_message(int(target.message)).delete()

    def working(self, target: DiscordTarget) -> AbstractAsyncContextManager[None]:
        typing: AbstractAsyncContextManager[None] = self._channel(target).typing()
        return typing

    def _channel(self, target: DiscordTarget) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(int(target.channel))
