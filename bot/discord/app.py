"""The Discord bot (`KullmDiscord`, a discord.py client): mentions, `/kullm`, the "Ask KULLM" form and the
message actions (summarize, translate, proofread), the persona settings, the stop and vote buttons, ❌ reactions.
Thin transport: each handler turns a Discord event into an `Asked` question and a `DiscordOrigin` for the
shared `Relay`, which refuses, posts and edits through `DiscordSurface` (`bot.discord.surface`)."""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

import discord
import yarl
from discord import app_commands

from bot.discord.commands import Localizer
from bot.discord.knowledge import DiscordKnowledge
from bot.discord.reading import DiscordReader, home_channel, is_forward, shown_text
from bot.discord.surface import NO_MENTIONS, DiscordOrigin, DiscordSurface, DiscordTarget
from bot.discord.views import AskModal, CancelButton, VoteButton
from bot.knowledge.asking import knowledge_question
from bot.metrics import AdapterMetrics
from bot.relay import Relay
from bot.settings import DiscordSettings
from bot.surface import Asked
from bot.texts import text
from bot.workspace import (
    FileRefused,
    is_summary_request,
)
from chatbus import Bus, Task
from runtime.metrics_http import Endpoint

log = logging.getLogger(__name__)


MESSAGE_TASKS: tuple[Task, ...] = ("summarize", "translate", "proofread")  # message actions beside "Ask KULLM"


CANCEL_EMOJI = "❌"


class KullmDiscord(discord.Client):
    """The bot: a discord.py client with its bus injected, resources opened in `setup_hook`."""

    def __init__(self, settings: DiscordSettings, bus: Bus) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable it in the developer portal (see README)
        super().__init__(intents=intents, allowed_mentions=NO_MENTIONS)
        self.settings = settings
        self.bus = bus
        self.language: Any = settings.bot_language
        surface = DiscordSurface(
            self, settings.discord_edit_interval_s, settings.bot_language, layouts=settings.discord_layout != "plain"
        )
        self.relay: Relay[DiscordOrigin, DiscordTarget] = Relay(bus, surface, settings)
        self.reader = DiscordReader(self, settings)
        self.knowledge = DiscordKnowledge(self, settings, bus, self.relay)
        self.metrics = AdapterMetrics("discord")
        self._metrics_endpoint: Endpoint | None = None
        self.tree = app_commands.CommandTree(self)
        self._register_commands()

    async def setup_hook(self) -> None:
        self._metrics_endpoint = await self.metrics.serve(self.settings)
        if self.settings.discord_api_base:
            # A non-default API (a proxy, or the tests' loopback Discord) also says where its gateway is.
            _, url, _ = await self.http.get_bot_gateway()
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        self.add_dynamic_items(CancelButton, VoteButton)
        await self.tree.set_translator(Localizer(self.language))
        if await self._offers_user_install():  # every command but the server settings, which say otherwise
            self.tree.allowed_installs = app_commands.AppInstallationType(guild=True, user=True)
            anywhere = app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=True)
            self.tree.allowed_contexts = anywhere
        await self._sync_commands()
        self.relay.start()
        self.knowledge.start()

    async def close(self) -> None:
        await self.knowledge.close()
        await self.relay.close()
        self.metrics.set_connected(False)
        if self._metrics_endpoint is not None:
            await self._metrics_endpoint.cleanup()
        await super().close()

    async def on_disconnect(self) -> None:
        self.metrics.set_connected(False)

    async def on_resumed(self) -> None:
        self.metrics.set_connected(True)

    async def on_ready(self) -> None:
        self.metrics.set_connected(True)
        log.info("connected to Discord as %s (%d guilds)", self.user, len(self.guilds))

    # ------------------------------------------------------------------ commands

    def _name(self, key: str) -> app_commands.locale_str:
        """A command's name or description in the configured language, localised to the other (`Localizer`)."""
        return app_commands.locale_str(text(key, self.language), key=key)

    def _register_commands(self) -> None:
        async def kullm(
            interaction: discord.Interaction[Any],
            question: str | None = None,
            context: str | None = None,
            search: str | None = None,
        ) -> None:
            """`/kullm 질문:… 맥락:…`, or `/kullm 찾기:…` (from the channels' history: as "찾기: …" asks it)."""
            await interaction.response.defer(thinking=True, ephemeral=answers_privately(interaction))
            if search and search.strip():
                question, context = f"{text('cmd_search', 'ko')}: {search.strip()}", None
            await self.ask_from_interaction(interaction, question or "", context or "")

        command: app_commands.Command[Any, ..., None] = app_commands.Command(
            name="kullm", description=self._name("cmd_kullm_description"), callback=kullm
        )
        command = app_commands.rename(
            question=self._name("cmd_question"), context=self._name("cmd_context"), search=self._name("cmd_search")
        )(command)
        command = app_commands.describe(
            question=self._name("cmd_question_description"),
            context=self._name("cmd_context_description"),
            search=self._name("cmd_search_description"),
        )(command)
        self.tree.add_command(command)

        async def ask_about(interaction: discord.Interaction[Any], message: discord.Message) -> None:
            await interaction.response.send_modal(AskModal(self, shown_text(message)))

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
            allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
            allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=False, private_channel=False),
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
        self.knowledge.commands(group, self._name)
        return group

    async def persona_command(self, interaction: discord.Interaction[Any], action: str, instructions: str = "") -> None:
        """Show, set or clear the channel's persona; set and clear only for members who may manage the server."""
        if action != "show" and not interaction.permissions.manage_guild:
            reply = text("persona_admins_only", self.language, who=text("discord_admins", self.language))
        else:
            channel = home_channel(interaction.channel)
            reply = await self.relay.personas.command(
                self.settings_command, channel, str(interaction.user.id), action, instructions
            )
        await interaction.response.send_message(reply, ephemeral=True)

    async def _offers_user_install(self) -> bool:
        """Whether people may add the app to their own account and use its commands anywhere: DISCORD_USER_INSTALL,
        with User Install enabled in the developer portal and commands registered globally."""
        if not self.settings.discord_user_install:
            return False
        if self.settings.guild_ids:
            log.info("user installs are off: they need global commands, and DISCORD_GUILD_IDS registers per server")
            return False
        if (await self.application_info()).user_integration_config is None:
            log.info("user installs are off: enable User Install in the developer portal (Installation) to offer them")
            return False
        log.info("user installs are on: people who add the app can use /kullm in any server, DM or group DM")
        return True

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
        if message.author.bot or self.user is None:
            return
        if not self._addressed(message):  # a person talking in a channel: kept where its knowledge is on
            await self.knowledge.on_message(message)
            return
        if not await self.relay.first_delivery(f"message:{message.id}"):
            return
        origin = DiscordOrigin(message.channel, message=message)
        question = re.sub(rf"<@!?{self.user.id}>", "", message.content).strip()
        if not question and is_forward(message):  # a forward with nothing asked: summarised in a DM, else shared
            if not isinstance(message.channel, discord.DMChannel):
                return
            question = text("task_summarize", self.language)
        if not question:
            await self.relay.refuse(origin, text("usage_discord", self.language, name=self.user.display_name))
            return
        if not self._allowed(message.channel, message.author):
            await self.relay.refuse(origin, text("not_allowed", self.language))
            return
        if (asking := knowledge_question(question)) is not None:  # `@KULLM 찾아줘: …`: from the channels' history
            await self.knowledge.ask_workspace(origin, message.author, message.guild, asking)
            return
        channel = home_channel(message.channel)
        user = str(message.author.id)
        try:  # what the question is about: what it forwards, or the message it replies to and its own files
            if is_forward(message):
                about = await self.reader.quoted_text(message)
            else:
                about = "\n\n".join(
                    part
                    for part in (await self.reader.replied_text(message), await self.reader.attachments_text(message))
                    if part
                )
        except FileRefused as refused:
            await self.relay.refuse(origin, refused.notice)
            return
        if is_summary_request(question) and about:  # `@KULLM 요약` on a message, a forward or a file: that one
            label = text("task_summarize", self.language)
            await self.relay.ask(origin, Asked(user, label, about, False, channel, "summarize"))
            return
        if isinstance(message.channel, discord.Thread) and is_summary_request(question):  # `@KULLM 요약` in a thread
            transcript = await self.reader.transcript(message.channel, exclude=message.id)
            label = text("task_summarize", self.language)
            await self.relay.ask(origin, Asked(user, label, transcript, False, channel, "summarize"))
            return
        continues = isinstance(message.channel, discord.Thread | discord.DMChannel)
        await self.relay.ask(origin, Asked(user, question, about, continues, channel))

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        await self.knowledge.on_edit(payload)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.knowledge.on_delete(payload.channel_id, [payload.message_id])

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self.knowledge.on_delete(payload.channel_id, list(payload.message_ids))

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if self.user is None or payload.user_id == self.user.id or str(payload.emoji) != CANCEL_EMOJI:
            return
        record = await self.relay.record_at(lambda target: target.message == str(payload.message_id))
        if record is not None and record.user == str(payload.user_id):
            await self.bus.answers.cancel(record.question_id, by=payload.member.display_name if payload.member else "")
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
        private = answers_privately(interaction)
        if not interaction.response.is_done():
            await interaction.response.defer(thinking=True, ephemeral=private)
        origin = DiscordOrigin(interaction.channel, interaction=interaction, answer_in=answer_in, private=private)
        if not self._allowed(interaction.channel, interaction.user):
            await self.relay.refuse(origin, text("not_allowed", self.language))
            return
        if task == "ask" and (asking := knowledge_question(question)) is not None:  # `/kullm 찾아줘: …`
            await self.knowledge.ask_workspace(origin, interaction.user, interaction.guild, asking)
            return
        in_thread = isinstance(interaction.channel, discord.Thread)
        if task == "ask" and in_thread and is_summary_request(question) and private:
            await self.relay.refuse(origin, text("private_no_thread", self.language))
            return
        if task == "ask" and in_thread and is_summary_request(question):
            task, question, context = (
                "summarize",
                text("task_summarize", self.language),
                await self.reader.transcript(interaction.channel),
            )
        if task != "ask" and not context.strip():
            label = text(f"task_{task}", self.language)
            await self.relay.refuse(origin, text("task_empty", self.language, task=label))
            return
        channel = home_channel(interaction.channel)
        asked = Asked(str(interaction.user.id), question, context, in_thread and task == "ask", channel, task)
        await self.relay.ask(origin, asked)

    def _on_message(self, task: Task) -> Any:
        """The message action (Apps menu) for `task`: 스레드 요약, 한↔영 번역, 맞춤법 교정."""

        async def act(interaction: discord.Interaction[Any], message: discord.Message) -> None:
            private = answers_privately(interaction)
            await interaction.response.defer(thinking=True, ephemeral=private)
            label = text(f"task_{task}", self.language)
            # Where the bot is not a member it cannot read a thread: the chosen message itself is summarised.
            thread = await self.reader.thread_of(message) if task == "summarize" and not private else None
            if thread is not None:
                context = await self.reader.transcript(thread)
                await self.ask_from_interaction(interaction, label, context, task=task, answer_in=thread)
                return
            if task == "summarize" and not is_forward(message) and not private:  # a forward: what it forwards
                await interaction.followup.send(text("no_thread", self.language))
                return
            try:
                context = await self.reader.quoted_text(message)
            except FileRefused as refused:
                origin = DiscordOrigin(interaction.channel, interaction=interaction, private=private)
                await self.relay.refuse(origin, refused.notice)
                return
            await self.ask_from_interaction(interaction, label, context, task=task)

        return act

    async def vote_by_button(
        self, interaction: discord.Interaction[Any], question_id: str, vote: Literal["up", "down"]
    ) -> None:
        """👍 or 👎 on an answer: recorded (the latest per person counts), and the voter told so."""
        notice = await self.relay.feedback.vote(question_id, str(interaction.user.id), vote)
        await interaction.response.send_message(notice, ephemeral=True)

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
        await self.bus.answers.cancel(question_id, by=interaction.user.display_name)
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


def answers_privately(interaction: discord.Interaction[Any]) -> bool:
    """A command used through someone's own install of the app where the bot is not a member (a server that has
    not added it, a group DM, a DM between people): the bot can answer only through the interaction, and answers
    the asker alone."""
    if interaction.context.private_channel:
        return True
    return interaction.guild_id is not None and not interaction.is_guild_integration()
