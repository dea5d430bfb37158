"""Where answers appear on Discord (`DiscordSurface`, the relay's `Surface`): a thread opened on the question,
a placeholder with a stop button edited in place, parts of a long answer, vote buttons under the last, and
refusals by DM. Answers are Components V2 layouts (`answer_layout`: the text, the footer and the buttons in one
container, 4,000 characters a message) unless DISCORD_LAYOUT=plain or Discord refuses them, then plain messages of
2,000. Every post and edit uses `AllowedMentions.none()`, so model output never pings anyone."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import discord

from bot.discord.views import CancelButton, answer_layout, feedback_view, vote_buttons
from bot.surface import Asked, PlaceholderGone
from bot.texts import quote_of, text

log = logging.getLogger(__name__)


MESSAGE_LIMIT = 2000


LAYOUT_TEXT_LIMIT = 4000  # all the text displays of a Components V2 message together


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
    """A placeholder message and the channel or thread it is in (that thread is the conversation). A Components V2
    layout (`layout`: the question's id) is edited whole, its stop button with it, and never given plain content."""

    channel: str
    message: str
    layout: str = ""

    @property
    def conversation(self) -> str:
        return self.channel

    def to_fields(self) -> dict[str, str]:
        return {"channel": self.channel, "message": self.message, **({"layout": self.layout} if self.layout else {})}


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
    footer_style = "-# {}"  # Discord's subtext line

    def __init__(self, client: discord.Client, edit_interval_s: float, language: str, *, layouts: bool) -> None:
        self.client = client
        self.edit_interval_s = edit_interval_s
        self.language: Any = language
        self.layouts = layouts
        self.max_chars = LAYOUT_TEXT_LIMIT if layouts else MESSAGE_LIMIT

    def target(self, fields: Mapping[str, str]) -> DiscordTarget:
        return DiscordTarget(fields["channel"], fields["message"], fields.get("layout", ""))

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
        if self.layouts:
            try:
                posted = await where.send(view=self._layout(content, question_id), allowed_mentions=NO_MENTIONS)
                return DiscordTarget(str(where.id), str(posted.id), layout=question_id)
            except discord.HTTPException as exc:
                if exc.status != 400:
                    raise
                self._plain_from_now(exc)
        placeholder = await where.send(content, view=self._stop_view(question_id), allowed_mentions=NO_MENTIONS)
        return DiscordTarget(str(where.id), str(placeholder.id))

    def _plain_from_now(self, exc: discord.HTTPException) -> None:
        """Discord refused a layout (an API or proxy without Components V2): plain messages until restart."""
        log.warning("Discord refused a Components V2 layout (%s %s): plain messages from now on", exc.status, exc.code)
        self.layouts, self.max_chars = False, MESSAGE_LIMIT

    def _stop_view(self, question_id: str) -> discord.ui.View:
        view = discord.ui.View(timeout=None)
        view.add_item(CancelButton(question_id, text("cancel_button", self.language)))
        return view

    def _layout(self, content: str, question_id: str | None, *, votes_for: str | None = None) -> discord.ui.LayoutView:
        """`content` as a layout, with the stop button (`question_id`, while it streams) or the vote buttons
        (`votes_for`, once final)."""
        buttons: list[discord.ui.Item[Any]] = []
        if question_id is not None:
            buttons.append(CancelButton(question_id, text("cancel_button", self.language)))
        elif votes_for is not None:
            buttons += vote_buttons(votes_for, self.language)
        return answer_layout(content, buttons, self.footer_style.format(""))

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
            if target.layout:  # a layout is edited whole: its text, and the buttons it shows now
                layout = self._layout(content, None if final else target.layout, votes_for=feedback)
                await message.edit(view=layout, allowed_mentions=NO_MENTIONS)
            elif final:
                votes = feedback_view(feedback, self.language) if feedback else None
                await message.edit(content=content[:MESSAGE_LIMIT], view=votes, allowed_mentions=NO_MENTIONS)
            else:
                await message.edit(content=content[:MESSAGE_LIMIT], allowed_mentions=NO_MENTIONS)
        except (discord.NotFound, discord.Forbidden) as exc:  # deleted, or the bot lost access
            raise PlaceholderGone(f"{exc.status} {exc.code}") from exc

    async def post_part(
        self, target: DiscordTarget, content: str, question_id: str, *, final: bool, feedback: str | None = None
    ) -> DiscordTarget:
        try:
            if target.layout:
                layout = self._layout(content, None if final else question_id, votes_for=feedback if final else None)
                posted = await self._channel(target).send(view=layout, allowed_mentions=NO_MENTIONS)
                return DiscordTarget(target.channel, str(posted.id), layout=question_id)
            if final:
                view = feedback_view(feedback, self.language) if feedback else discord.utils.MISSING
            else:
                view = self._stop_view(question_id)
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
