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
from dataclasses import dataclass, replace
from typing import Any

import discord

from bot.discord.views import CancelButton, answer_layout, feedback_view, vote_buttons
from bot.surface import Asked, PlaceholderGone, decode_sources, encode_sources
from bot.texts import quote_of, text

log = logging.getLogger(__name__)


MESSAGE_LIMIT = 2000


LAYOUT_TEXT_LIMIT = 4000  # all the text displays of a Components V2 message together


THREAD_NAME_LIMIT = 90


# The question as the "asked by" line quotes it: room is left in the message for the line's own words.
QUOTED_QUESTION_CHARS = 1800


NO_MENTIONS = discord.AllowedMentions.none()


REFUSAL_SHOWN_S = 60  # a refusal replied where the asker's DMs are closed is deleted after this


def _gone(exc: discord.HTTPException, target: DiscordTarget) -> Exception:
    """What a failed post or edit means: the message is gone (deleted, or the bot lost access to it, or for an
    answer through an interaction its token lapsed: 401 after Discord's 15 minutes), or the error itself."""
    lapsed = bool(target.webhook) and exc.status == 401
    if isinstance(exc, discord.NotFound | discord.Forbidden) or lapsed:
        return PlaceholderGone(f"{exc.status} {exc.code}")
    return exc


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
    # An answer only its asker sees, where the bot is not a member: "application id:interaction token", the
    # interaction's webhook it is posted and edited through (Discord keeps the token valid for 15 minutes).
    webhook: str = ""
    sources: str = ""  # what the answer is grounded on (`Asked.sources`, as `encode_sources` stores them)

    @property
    def conversation(self) -> str:
        return self.channel

    def to_fields(self) -> dict[str, str]:
        optional = {"layout": self.layout, "webhook": self.webhook, "sources": self.sources}
        return {"channel": self.channel, "message": self.message, **{k: v for k, v in optional.items() if v}}


@dataclass(frozen=True)
class DiscordOrigin:
    """Where a question was asked: a message (mention, DM, thread) or an interaction (`/kullm`, the menu)."""

    channel: Any
    message: discord.Message | None = None
    interaction: discord.Interaction[Any] | None = None
    answer_in: Any = None  # a thread the answer goes to instead (a thread summarised from its parent channel)
    # Asked through a user's own install where the bot is not a member: answered through the interaction alone,
    # seen only by the asker.
    private: bool = False


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
        optional = (fields.get(name, "") for name in ("layout", "webhook", "sources"))
        return DiscordTarget(fields["channel"], fields["message"], *optional)

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
        if origin.private:  # only through the interaction: an ephemeral follow-up, no thread
            assert origin.interaction is not None
            interaction = origin.interaction
            hook = f"{interaction.application_id}:{interaction.token}"
            at = DiscordTarget(str(interaction.channel_id or ""), "", webhook=hook)
        else:
            where = await self._answer_channel(origin, asked)
            at = DiscordTarget(str(where.id), "")
        at = replace(at, sources=encode_sources(asked.sources))
        if self.layouts:
            try:
                posted = await self._send(at, content, question_id, final=False, layout=True)
                return replace(at, message=str(posted.id), layout=question_id)
            except discord.HTTPException as exc:
                if exc.status != 400:
                    raise
                self._plain_from_now(exc)
        posted = await self._send(at, content, question_id, final=False, layout=False)
        return replace(at, message=str(posted.id))

    async def _send(
        self,
        at: DiscordTarget,
        content: str,
        question_id: str,
        *,
        final: bool,
        layout: bool,
        feedback: str | None = None,
    ) -> discord.Message | discord.WebhookMessage:
        """Post an answer's message where `at` says: in its channel, or through its interaction as only the asker
        sees it; a layout, or plain content with the stop button (or, once final, the vote buttons)."""
        content = self._noted(at, self._with_sources(at, content, final=final))
        fields: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
        if layout:
            fields["view"] = self._layout(content, None if final else question_id, votes_for=feedback)
        else:
            fields["content"] = content
            if not final:
                fields["view"] = self._stop_view(question_id)
            elif feedback:
                fields["view"] = feedback_view(feedback, self.language)
        if at.webhook:
            return await self._webhook(at).send(ephemeral=True, wait=True, **fields)
        return await self._channel(at).send(**fields)

    def _webhook(self, target: DiscordTarget) -> discord.Webhook:
        """The interaction's webhook an answer only its asker sees goes through (as `Interaction.followup` is)."""
        application_id, token = target.webhook.split(":", 1)
        data: Any = {"id": application_id, "type": 3, "token": token}
        return discord.Webhook.from_state(data, self.client._connection)

    def _with_sources(self, target: DiscordTarget, content: str, *, final: bool) -> str:
        """A finished answer's last message (the one its footer line ends) ends with its sources, linked and numbered
        as its 맥락 numbered them, as many as the message has room for."""
        sources = decode_sources(target.sources)
        if not final or not sources or not content.rpartition("\n")[2].startswith(self.footer_style.format("")):
            return content
        links = [f"[{s.title.replace('[', '(').replace(']', ')')}](<{s.url}>)" for s in sources]
        while links:
            line = self.footer_style.format(text("sources_line", self.language, sources=" · ".join(links)))
            if len(content) + 1 + len(line) <= self.max_chars:
                return f"{content}\n{line}"
            links.pop()
        return content

    def _noted(self, target: DiscordTarget, content: str) -> str:
        """An answer only its asker sees says why, in a small first line, where the message has room for it."""
        if not target.webhook:
            return content
        noted = f"-# {text('private_answer', self.language)}\n{content}"
        return noted if len(noted) <= self.max_chars else content

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
        content = self._noted(target, self._with_sources(target, content, final=final))
        fields: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
        if target.layout:  # a layout is edited whole: its text, and the buttons it shows now
            fields["view"] = self._layout(content, None if final else target.layout, votes_for=feedback)
        else:
            fields["content"] = content[:MESSAGE_LIMIT]
            if final:
                fields["view"] = feedback_view(feedback, self.language) if feedback else None
        try:
            if target.webhook:
                await self._webhook(target).edit_message(int(target.message), **fields)
            else:
                await self._channel(target).get_partial_message(int(target.message)).edit(**fields)
        except discord.HTTPException as exc:
            raise _gone(exc, target) from exc

    async def post_part(
        self, target: DiscordTarget, content: str, question_id: str, *, final: bool, feedback: str | None = None
    ) -> DiscordTarget:
        layout = bool(target.layout)
        try:
            posted = await self._send(target, content, question_id, final=final, layout=layout, feedback=feedback)
        except discord.HTTPException as exc:
            raise _gone(exc, target) from exc
        return replace(target, message=str(posted.id), layout=question_id if layout else "")

    async def delete(self, target: DiscordTarget) -> None:
        with contextlib.suppress(discord.NotFound, discord.Forbidden):
            if target.webhook:
                await self._webhook(target).delete_message(int(target.message))
            else:
                await self._channel(target).get_partial_message(int(target.message)).delete()

    def working(self, target: DiscordTarget) -> AbstractAsyncContextManager[None]:
        if target.webhook:  # no typing where the bot is not a member
            return contextlib.nullcontext()
        typing: AbstractAsyncContextManager[None] = self._channel(target).typing()
        return typing

    def _channel(self, target: DiscordTarget) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(int(target.channel))
