"""The Discord adapter: mentions, `/kullm`, the "KULLM에게 묻기" menu, answered in threads.

Thin transport: each handler turns a Discord event into a question for the shared `Relay`,
which posts and edits the answer through `DiscordSurface`. Every post and edit uses
`AllowedMentions.none()`, so model output can never ping anyone.
"""

from __future__ import annotations

import logging
import re
from contextlib import AbstractAsyncContextManager
from typing import Any

import discord
import yarl
from discord import app_commands

from bot.relay import PlaceholderGone, Relay
from bot.settings import DiscordSettings
from bot.texts import text
from chatbus import Bus, Keys, connect
from chatbus.messages import new_question_id

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000
THREAD_NAME_LIMIT = 90
CANCEL_EMOJI = "❌"
NO_MENTIONS = discord.AllowedMentions.none()


def thread_name(question: str) -> str:
    """A thread title from the question's first line."""
    first = question.strip().splitlines()[0] if question.strip() else "KULLM"
    return first if len(first) <= THREAD_NAME_LIMIT else first[: THREAD_NAME_LIMIT - 1] + "…"


class DiscordSurface:
    """Posts and edits answers through Discord's REST API."""

    platform = "discord"
    max_chars = MESSAGE_LIMIT

    def __init__(self, client: discord.Client, edit_interval_s: float) -> None:
        self.client = client
        self.edit_interval_s = edit_interval_s

    async def edit(self, target: dict[str, str], content: str, *, final: bool) -> None:
        message = self._channel(target).get_partial_message(int(target["message"]))
        try:
            if final:
                await message.edit(content=content, view=None, allowed_mentions=NO_MENTIONS)
            else:
                await message.edit(content=content, allowed_mentions=NO_MENTIONS)
        except (discord.NotFound, discord.Forbidden) as exc:  # deleted, or the bot lost access
            raise PlaceholderGone(f"{exc.status} {exc.code}") from exc

    async def post_more(self, target: dict[str, str], content: str) -> None:
        try:
            await self._channel(target).send(content, allowed_mentions=NO_MENTIONS)
        except (discord.NotFound, discord.Forbidden) as exc:
            raise PlaceholderGone(f"{exc.status} {exc.code}") from exc

    def working(self, target: dict[str, str]) -> AbstractAsyncContextManager[None]:
        return self._channel(target).typing()  # type: ignore[return-value]

    def _channel(self, target: dict[str, str]) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(int(target["channel"]))


class CancelButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"kullm:cancel:(?P<qid>[0-9a-f]{32})"):
    """The "그만" button under a placeholder; persistent, so it works after a restart."""

    def __init__(self, question_id: str, label: str = "그만") -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label, emoji="⏹️", style=discord.ButtonStyle.secondary, custom_id=f"kullm:cancel:{question_id}"
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


class AskModal(discord.ui.Modal):
    """The question typed about a chosen message (that message becomes 맥락)."""

    def __init__(self, client: KullmDiscord, context: str) -> None:
        language = client.settings.bot_language
        super().__init__(title=text("modal_title", language))
        self.client = client
        self.context = context
        self.question: discord.ui.TextInput[AskModal] = discord.ui.TextInput(
            label=text("modal_label", language),
            style=discord.TextStyle.paragraph,
            max_length=min(client.settings.max_question_chars, 4000),
        )
        self.add_item(self.question)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await self.client.ask_from_interaction(interaction, self.question.value, self.context)


class KullmDiscord(discord.Client):
    """The bot: a discord.py client with its dependencies injected and resources opened in `setup_hook`."""

    def __init__(self, settings: DiscordSettings) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable it in the developer portal (see README)
        super().__init__(intents=intents, allowed_mentions=NO_MENTIONS)
        self.settings = settings
        self.tree = app_commands.CommandTree(self)
        self.bus: Bus | None = None
        self._relay: Relay | None = None
        self._register_commands()

    @property
    def relay(self) -> Relay:
        assert self._relay is not None, "used before setup_hook"
        return self._relay

    @property
    def language(self) -> Any:
        return self.settings.bot_language

    async def setup_hook(self) -> None:
        if self.settings.discord_api_base:
            # A non-default API (a proxy, or the tests' loopback Discord) also says where its gateway is.
            _, url, _ = await self.http.get_bot_gateway()
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        self.bus = Bus(connect(self.settings.redis_url), Keys(self.settings.key_prefix))
        self._relay = Relay(self.bus, DiscordSurface(self, self.settings.discord_edit_interval_s), self.settings)
        self.add_dynamic_items(CancelButton)
        await self._sync_commands()
        self.loop.create_task(self.relay.run_resumer())

    async def close(self) -> None:
        if self._relay is not None:
            await self._relay.close()
        if self.bus is not None:
            await self.bus.redis.aclose()
        await super().close()

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s (%d guilds)", self.user, len(self.guilds))

    # ------------------------------------------------------------------ commands

    def _register_commands(self) -> None:
        async def kullm(interaction: discord.Interaction[Any], question: str, context: str | None = None) -> None:
            await interaction.response.defer(thinking=True)
            await self.ask_from_interaction(interaction, question, context or "")

        command = app_commands.Command(name="kullm", description="KULLM(구름)에게 질문하기", callback=kullm)
        command = app_commands.rename(question="질문", context="맥락")(command)
        command = app_commands.describe(question="물어볼 내용", context="답변에 참고할 글 (선택)")(command)
        self.tree.add_command(command)

        async def ask_about(interaction: discord.Interaction[Any], message: discord.Message) -> None:
            await interaction.response.send_modal(AskModal(self, message.content))

        self.tree.add_command(app_commands.ContextMenu(name="KULLM에게 묻기", callback=ask_about))

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
        assert self.bus is not None
        if not await self.relay.first_delivery(f"message:{message.id}"):
            return
        question = re.sub(rf"<@!?{self.user.id}>", "", message.content).strip()
        if not question:
            await message.reply(text("usage_discord", self.language, name=self.user.display_name), mention_author=False)
            return
        if not self._allowed(message.channel, message.author):
            await message.reply(text("not_allowed", self.language), mention_author=False)
            return
        context = await self._replied_text(message)
        refusal = await self.relay.refusal(str(message.author.id), question, context)
        if refusal:
            await message.reply(refusal, mention_author=False)
            return
        in_thread = isinstance(message.channel, discord.Thread | discord.DMChannel)
        where = message.channel if in_thread else await message.create_thread(name=thread_name(question))
        history = await self.relay.history(str(where.id)) if in_thread else []
        await self._answer_in(where, str(message.author.id), question, context, history)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if self.user is None or payload.user_id == self.user.id or str(payload.emoji) != CANCEL_EMOJI:
            return
        record = await self.relay.record_at("message", str(payload.message_id))
        if record is not None and record.user == str(payload.user_id):
            assert self.bus is not None
            await self.bus.request_cancel(record.question_id)
            log.info("discord question %s: cancelled by reaction", record.question_id)

    async def ask_from_interaction(self, interaction: discord.Interaction[Any], question: str, context: str) -> None:
        """`/kullm` and the modal: post the question, open a thread on it, answer there."""
        if not interaction.response.is_done():
            await interaction.response.defer(thinking=True)
        user = interaction.user
        refusal = None if self._allowed(interaction.channel, user) else text("not_allowed", self.language)
        refusal = refusal or await self.relay.refusal(str(user.id), question, context)
        if refusal:
            await interaction.followup.send(refusal, ephemeral=True)
            return
        shown = question if len(question) <= 1800 else question[:1799] + "…"
        asked = await interaction.followup.send(
            text("asked_by", self.language, user=user.display_name, question=shown),
            wait=True,
            allowed_mentions=NO_MENTIONS,
        )
        channel = interaction.channel
        in_thread = isinstance(channel, discord.Thread | discord.DMChannel) or interaction.guild is None
        # A follow-up is a webhook message without guild info: open the thread through its channel.
        where: Any = channel if in_thread else await channel.create_thread(name=thread_name(question), message=asked)
        history = await self.relay.history(str(where.id)) if isinstance(channel, discord.Thread) else []
        await self._answer_in(where, str(user.id), question, context, history)

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
        assert self.bus is not None
        await self.bus.request_cancel(question_id)
        log.info("discord question %s: cancelled by button", question_id)
        await interaction.response.send_message(text("cancel_requested", self.language), ephemeral=True)

    # ------------------------------------------------------------------ helpers

    async def _answer_in(self, where: Any, user: str, question: str, context: str, history: list[Any]) -> None:
        question_id = new_question_id()
        view = discord.ui.View(timeout=None)
        view.add_item(CancelButton(question_id, text("cancel_button", self.language)))
        placeholder = await where.send(await self.relay.placeholder(), view=view, allowed_mentions=NO_MENTIONS)
        target = {"channel": str(where.id), "message": str(placeholder.id)}
        await self.relay.submit(
            target,
            user=user,
            question=question,
            context=context,
            thread=str(where.id),
            history=history,
            question_id=question_id,
        )

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
