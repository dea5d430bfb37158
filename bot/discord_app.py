"""The Discord adapter: mentions, `/kullm`, the "Ask KULLM" menu, answered in threads.

Thin transport: each handler turns a Discord event into an `Asked` question and a
`DiscordOrigin` for the shared `Relay`, which refuses, posts and edits through
`DiscordSurface`. Every post and edit uses `AllowedMentions.none()`, so model output can
never ping anyone. `run_discord` is the process: `kullm discord` or `python -m bot discord`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal

import discord
import yarl
from discord import app_commands

from bot.pdf_text import PdfReader
from bot.process import load_settings
from bot.relay import Relay
from bot.settings import DiscordSettings
from bot.surface import Asked, PlaceholderGone
from bot.texts import Language, quote_of, text
from bot.workspace import (
    MAX_THREAD_MESSAGES,
    FileRefused,
    check_size,
    file_text,
    files_context,
    is_summary_request,
    transcript,
    transcript_line,
)
from chatbus import Bus, Task
from runtime.exits import EXIT_CONFIG, EXIT_OK
from runtime.signals import on_stop_signal

log = logging.getLogger(__name__)
MESSAGE_TASKS: tuple[Task, ...] = ("summarize", "translate", "proofread")  # message actions beside "Ask KULLM"
# Discord client languages each catalogue language is offered in (name_localizations, description_localizations).
LOCALES: dict[Language, tuple[discord.Locale, ...]] = {
    "ko": (discord.Locale.korean,),
    "en": (discord.Locale.american_english, discord.Locale.british_english),
}

MESSAGE_LIMIT = 2000
THREAD_NAME_LIMIT = 90
# The question as the "asked by" line quotes it: room is left in the message for the line's own words.
QUOTED_QUESTION_CHARS = 1800
MODAL_INPUT_LIMIT = 4000  # Discord's cap on a text input
MODAL_PLACEHOLDER_LIMIT = 100  # and on its placeholder
QUOTE_CHARS = 300  # how much of a chosen message a form quotes
CANCEL_EMOJI = "❌"
NO_MENTIONS = discord.AllowedMentions.none()
REFUSAL_SHOWN_S = 60  # a refusal replied where the asker's DMs are closed is deleted after this

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


def quoted(message: str, limit: int = QUOTE_CHARS) -> str:
    """The beginning of a message as a Markdown quote."""
    shown = message.strip() if len(message.strip()) <= limit else message.strip()[: limit - 1] + "…"
    return "\n".join(f"> {line}" for line in shown.splitlines())


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

    async def started(self, target: DiscordTarget) -> None:
        return None  # the typing indicator already says it

    async def stream(self, target: DiscordTarget, shown: str) -> tuple[DiscordTarget, bool]:
        return target, False  # Discord has no streamed messages: the placeholder is edited

    async def finish(self, target: DiscordTarget, answer: str, feedback: str | None = None) -> bool:
        return False

    def _channel(self, target: DiscordTarget) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(int(target.channel))


class CancelButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"kullm:cancel:(?P<qid>[0-9a-f]{32})"):
    """The stop button under a placeholder; persistent, so it works after a restart."""

    def __init__(self, question_id: str, label: str = "") -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label or None, emoji="⏹️", style=discord.ButtonStyle.secondary, custom_id=f"kullm:cancel:{question_id}"
        )
        super().__init__(button)
        self.question_id = question_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> CancelButton:
        return cls(match["qid"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        assert isinstance(client, KullmDiscord)
        await client.cancel_by_button(interaction, self.question_id)


class VoteButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"kullm:vote:(?P<vote>up|down):(?P<qid>[0-9a-f]{32})"
):
    """👍 or 👎 under a finished answer; persistent, so a vote counts after a restart too."""

    def __init__(self, question_id: str, vote: Literal["up", "down"], label: str = "") -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label or None,
            emoji="👍" if vote == "up" else "👎",
            style=discord.ButtonStyle.secondary,
            custom_id=f"kullm:vote:{vote}:{question_id}",
        )
        super().__init__(button)
        self.question_id, self.vote = question_id, vote

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> VoteButton:
        return cls(match["qid"], "up" if match["vote"] == "up" else "down")

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        assert isinstance(client, KullmDiscord)
        notice = await client.relay.feedback.vote(self.question_id, str(interaction.user.id), self.vote)
        await interaction.response.send_message(notice, ephemeral=True)


def feedback_view(question_id: str, language: Any) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for vote in ("up", "down"):
        view.add_item(VoteButton(question_id, vote, text(f"vote_{vote}_button", language)))
    return view


class AskModal(discord.ui.Modal):
    """The question typed about a chosen message (that message becomes 맥락)."""

    def __init__(self, client: KullmDiscord, context: str) -> None:
        language = client.settings.bot_language
        super().__init__(title=text("modal_title", language))
        self.client = client
        self.context = context
        if context.strip():  # the chosen message, quoted above the field
            self.add_item(discord.ui.TextDisplay(f"**{text('modal_quote', language)}**\n{quoted(context)}"))
        self.question: discord.ui.TextInput[AskModal] = discord.ui.TextInput(
            label=text("modal_label", language),
            style=discord.TextStyle.paragraph,
            placeholder=text("modal_placeholder", language)[:MODAL_PLACEHOLDER_LIMIT],
            max_length=min(client.settings.max_question_chars, MODAL_INPUT_LIMIT),
        )
        self.add_item(self.question)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await self.client.ask_from_interaction(interaction, self.question.value, self.context)


class Localizer(app_commands.Translator):
    """Commands are registered in BOT_LANGUAGE and localised to the other catalogue language, so each member sees
    them in their own client's language (Discord sends the registered names back whatever the member typed)."""

    def __init__(self, language: Language) -> None:
        self.language = language

    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        key = string.extras.get("key")
        other: Language = "en" if self.language == "ko" else "ko"
        if key is None or locale not in LOCALES[other]:
            return None
        return text(key, other)


class KullmDiscord(discord.Client):
    """The bot: a discord.py client with its bus injected, resources opened in `setup_hook`."""

    def __init__(self, settings: DiscordSettings, bus: Bus) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable it in the developer portal (see README)
        super().__init__(intents=intents, allowed_mentions=NO_MENTIONS)
        self.settings = settings
        self.bus = bus
        self.language: Any = settings.bot_language
        surface = DiscordSurface(self, settings.discord_edit_interval_s, settings.bot_language)
        self.relay: Relay[DiscordOrigin, DiscordTarget] = Relay(bus, surface, settings)
        self.pdfs = PdfReader(settings.pdf_budget())
        self.tree = app_commands.CommandTree(self)
        self._register_commands()

    async def setup_hook(self) -> None:
        if self.settings.discord_api_base:
            # A non-default API (a proxy, or the tests' loopback Discord) also says where its gateway is.
            _, url, _ = await self.http.get_bot_gateway()
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        self.add_dynamic_items(CancelButton, VoteButton)
        await self.tree.set_translator(Localizer(self.language))
        await self._sync_commands()
        self.relay.start()

    async def close(self) -> None:
        await self.relay.close()
        await super().close()

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s (%d guilds)", self.user, len(self.guilds))

    # ------------------------------------------------------------------ commands

    def _name(self, key: str) -> app_commands.locale_str:
        """A command's name or description in the configured language, localised to the other (`Localizer`)."""
        return app_commands.locale_str(text(key, self.language), key=key)

    def _register_commands(self) -> None:
        async def kullm(interaction: discord.Interaction[Any], question: str, context: str | None = None) -> None:
            await interaction.response.defer(thinking=True)
            await self.ask_from_interaction(interaction, question, context or "")

        command: app_commands.Command[Any, ..., None] = app_commands.Command(
            name="kullm", description=self._name("cmd_kullm_description"), callback=kullm
        )
        command = app_commands.rename(question=self._name("cmd_question"), context=self._name("cmd_context"))(command)
        command = app_commands.describe(
            question=self._name("cmd_question_description"), context=self._name("cmd_context_description")
        )(command)
        self.tree.add_command(command)

        async def ask_about(interaction: discord.Interaction[Any], message: discord.Message) -> None:
            await interaction.response.send_modal(AskModal(self, message.content))

        self.tree.add_command(app_commands.ContextMenu(name=self._name("modal_title"), callback=ask_about))
        for task in MESSAGE_TASKS:
            self.tree.add_command(
                app_commands.ContextMenu(name=self._name(f"task_{task}"), callback=self._on_message(task))
            )
        self.tree.add_command(self._settings_commands())

    @property
    def settings_command(self) -> str:
        return text("cmd_settings", self.language)

    def _settings_commands(self) -> app_commands.Group:
        """`/kullm-설정 페르소나 보기|정하기|지우기` (`/kullm-settings persona show|set|clear`): offered to members with
        Manage Server (Discord hides it from the rest unless a server opens it in its integration settings: set and
        clear check again)."""
        group = app_commands.Group(
            name=self._name("cmd_settings"),
            description=self._name("cmd_settings_description"),
            guild_only=True,
            default_permissions=discord.Permissions(manage_guild=True),
        )
        persona = app_commands.Group(
            name=self._name("cmd_persona"), description=self._name("cmd_persona_description"), parent=group
        )

        async def show(interaction: discord.Interaction[Any]) -> None:
            await self.persona_command(interaction, "show")

        async def set_persona(interaction: discord.Interaction[Any], instructions: str) -> None:
            await self.persona_command(interaction, "set", instructions)

        async def clear(interaction: discord.Interaction[Any]) -> None:
            await self.persona_command(interaction, "clear")

        persona.add_command(
            app_commands.Command(
                name=self._name("cmd_show"), description=self._name("cmd_show_description"), callback=show
            )
        )
        setter: app_commands.Command[Any, ..., None] = app_commands.Command(
            name=self._name("cmd_set"), description=self._name("cmd_set_description"), callback=set_persona
        )
        setter = app_commands.rename(instructions=self._name("cmd_instructions"))(setter)
        setter = app_commands.describe(instructions=self._name("cmd_instructions_description"))(setter)
        persona.add_command(setter)
        persona.add_command(
            app_commands.Command(
                name=self._name("cmd_clear"), description=self._name("cmd_clear_description"), callback=clear
            )
        )
        return group

    async def persona_command(self, interaction: discord.Interaction[Any], action: str, instructions: str = "") -> None:
        """Show, set or clear the channel's persona; set and clear only for members who may manage the server."""
        if action != "show" and not interaction.permissions.manage_guild:
            reply = text("persona_admins_only", self.language, who=text("discord_admins", self.language))
        else:
            channel = _persona_channel(interaction.channel)
            reply = await self.relay.personas.command(
                self.settings_command, channel, str(interaction.user.id), action, instructions
            )
        await interaction.response.send_message(reply, ephemeral=True)

    async def _sync_commands(self) -> None:
        if self.settings.guild_ids:
            for guild_id in self.settings.guild_ids:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
            log.info("application commands synced to %d guild(s)", len(self.settings.guild_ids))
        else:
            await self.tree.sync()
            log.info("application commands synced globally (they can take a while to appear)")

    # ------------------------------------------------------------------ events

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or self.user is None or not self._addressed(message):
            return
        if not await self.relay.first_delivery(f"message:{message.id}"):
            return
        origin = DiscordOrigin(message.channel, message=message)
        question = re.sub(rf"<@!?{self.user.id}>", "", message.content).strip()
        if not question:
            await self.relay.surface.refuse(origin, text("usage_discord", self.language, name=self.user.display_name))
            return
        if not self._allowed(message.channel, message.author):
            await self.relay.surface.refuse(origin, text("not_allowed", self.language))
            return
        channel = _persona_channel(message.channel)
        if isinstance(message.channel, discord.Thread) and is_summary_request(question):  # `@KULLM 요약` in a thread
            transcript = await self._transcript(message.channel, exclude=message.id)
            label = text("task_summarize", self.language)
            await self.relay.ask(origin, Asked(str(message.author.id), label, transcript, False, channel, "summarize"))
            return
        files = await self._attachments_text(origin, message)
        if files is None:
            return
        continues = isinstance(message.channel, discord.Thread | discord.DMChannel)
        context = "\n\n".join(part for part in (await self._replied_text(message), files) if part)
        await self.relay.ask(origin, Asked(str(message.author.id), question, context, continues, channel))

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if self.user is None or payload.user_id == self.user.id or str(payload.emoji) != CANCEL_EMOJI:
            return
        record = await self.relay.record_at(lambda target: target.message == str(payload.message_id))
        if record is not None and record.user == str(payload.user_id):
            await self.bus.queue.request_cancel(
                record.question_id, by=payload.member.display_name if payload.member else ""
            )
            log.info("discord question %s: cancelled by reaction", record.question_id)

    async def ask_from_interaction(
        self,
        interaction: discord.Interaction[Any],
        question: str,
        context: str,
        *,
        task: Task = "ask",
        answer_in: Any = None,
    ) -> None:
        """`/kullm`, the modal and the message actions: post the question, open a thread on it, answer there
        (or in `answer_in`). `/kullm 요약` inside a thread summarises that thread."""
        if not interaction.response.is_done():
            await interaction.response.defer(thinking=True)
        origin = DiscordOrigin(interaction.channel, interaction=interaction, answer_in=answer_in)
        if not self._allowed(interaction.channel, interaction.user):
            await self.relay.surface.refuse(origin, text("not_allowed", self.language))
            return
        in_thread = isinstance(interaction.channel, discord.Thread)
        if task == "ask" and in_thread and is_summary_request(question):
            task, question, context = (
                "summarize",
                text("task_summarize", self.language),
                await self._transcript(interaction.channel),
            )
        if task != "ask" and not context.strip():
            label = text(f"task_{task}", self.language)
            await self.relay.surface.refuse(origin, text("task_empty", self.language, task=label))
            return
        channel = _persona_channel(interaction.channel)
        asked = Asked(str(interaction.user.id), question, context, in_thread and task == "ask", channel, task)
        await self.relay.ask(origin, asked)

    def _on_message(self, task: Task) -> Any:
        """The message action (Apps menu) for `task`: 스레드 요약, 한↔영 번역, 맞춤법 교정."""

        async def act(interaction: discord.Interaction[Any], message: discord.Message) -> None:
            await interaction.response.defer(thinking=True)
            label = text(f"task_{task}", self.language)
            if task == "summarize":
                thread = await self._thread_of(message)
                if thread is None:
                    await interaction.followup.send(text("no_thread", self.language))
                    return
                context = await self._transcript(thread)
                await self.ask_from_interaction(interaction, label, context, task=task, answer_in=thread)
                return
            origin = DiscordOrigin(interaction.channel, interaction=interaction)
            files = await self._attachments_text(origin, message)
            if files is not None:
                context = "\n\n".join(part for part in (message.clean_content, files) if part)
                await self.ask_from_interaction(interaction, label, context, task=task)

        return act

    # ------------------------------------------------------------------ reading the workspace

    async def _thread_of(self, message: discord.Message) -> discord.Thread | None:
        """The thread a message is in, or the one started from it."""
        if isinstance(message.channel, discord.Thread):
            return message.channel
        if message.thread is not None:
            return message.thread
        try:  # a thread started from a message has that message's id
            found = await self.fetch_channel(message.id)
        except (discord.NotFound, discord.Forbidden):
            return None
        return found if isinstance(found, discord.Thread) else None

    async def _transcript(self, thread: Any, exclude: int | None = None) -> str:
        """The thread as `name: text` lines, oldest first, from the message it was started on; bots (this one's
        answers too) only with SUMMARY_INCLUDE_BOTS."""
        messages: list[discord.Message] = []
        parent = getattr(thread, "parent", None)
        if parent is not None:
            with contextlib.suppress(discord.NotFound, discord.Forbidden):
                messages.append(await parent.fetch_message(thread.id))
        messages += [m async for m in thread.history(limit=MAX_THREAD_MESSAGES, oldest_first=True)]
        lines = []
        for message in messages:
            if message.id == exclude or message.type not in (discord.MessageType.default, discord.MessageType.reply):
                continue
            if message.author.bot and not self.settings.summary_include_bots:
                continue
            if is_summary_request(re.sub(r"<@!?\d+>", "", message.content)):  # an earlier `@KULLM 요약`
                continue
            if message.clean_content.strip():
                lines.append(transcript_line(message.author.display_name, message.clean_content))
        return transcript(lines)

    async def _attachments_text(self, origin: DiscordOrigin, message: discord.Message) -> str | None:
        """The text of the files attached to a message (fetched with the bot's session, kept only in the question);
        None after a refusal was shown (too large, not text, unreadable)."""
        texts: list[tuple[str, str]] = []
        limit = self.settings.max_file_bytes
        for attachment in message.attachments:
            try:
                check_size(attachment.filename, attachment.size, limit, self.language)  # before downloading
                try:
                    data = await attachment.read()
                except discord.HTTPException as exc:
                    notice = text("file_not_decodable", self.language, name=attachment.filename)
                    raise FileRefused(notice) from exc
                texts.append(
                    (attachment.filename, await file_text(attachment.filename, data, limit, self.language, self.pdfs))
                )
            except FileRefused as refused:
                await self.relay.surface.refuse(origin, refused.notice)
                return None
        return files_context(texts)

    async def cancel_by_button(self, interaction: discord.Interaction[Any], question_id: str) -> None:
        """Stop an answer: only its asker or someone who may manage messages."""
        record = await self.relay.record_for(question_id)
        if record is None:
            await interaction.response.send_message(text("answer_gone", self.language), ephemeral=True)
            return
        moderator = bool(interaction.permissions and interaction.permissions.manage_messages)
        if record.user != str(interaction.user.id) and not moderator:
            await interaction.response.send_message(text("cancel_not_yours", self.language), ephemeral=True)
            return
        await self.bus.queue.request_cancel(question_id, by=interaction.user.display_name)
        log.info("discord question %s: cancelled by button", question_id)
        await interaction.response.send_message(text("cancel_requested", self.language), ephemeral=True)

    # ------------------------------------------------------------------ helpers

    def _addressed(self, message: discord.Message) -> bool:
        """A mention, a DM, or any message in a thread this bot started."""
        assert self.user is not None
        if isinstance(message.channel, discord.DMChannel) or self.user in message.mentions:
            return True
        return isinstance(message.channel, discord.Thread) and message.channel.owner_id == self.user.id

    def _allowed(self, channel: Any, user: discord.abc.User | discord.Member) -> bool:
        channels, roles = self.settings.allowed_channel_ids, self.settings.allowed_role_ids
        if channels:
            channel_id = getattr(channel, "parent_id", None) if isinstance(channel, discord.Thread) else None
            if (channel_id or getattr(channel, "id", None)) not in channels:
                return False
        if roles:
            return isinstance(user, discord.Member) and bool(roles & {role.id for role in user.roles})
        return True

    async def _replied_text(self, message: discord.Message) -> str:
        """The text of the message this one replies to: it becomes 맥락."""
        reference = message.reference
        if reference is None or reference.message_id is None:
            return ""
        resolved = reference.resolved
        if isinstance(resolved, discord.Message):
            return resolved.content
        try:
            fetched = await message.channel.fetch_message(reference.message_id)
        except discord.HTTPException:
            return ""
        return fetched.content


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


def _persona_channel(channel: Any) -> str:
    """The channel whose persona applies: a thread's parent channel, else the channel itself."""
    if isinstance(channel, discord.Thread) and channel.parent_id:
        return str(channel.parent_id)
    return str(getattr(channel, "id", "") or "")
