"""Discord's components: the persistent stop and vote buttons (they work after a restart), and the form that
asks about a chosen message; they call back the bot through `ViewHandler`."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import discord

from bot.settings import DiscordSettings
from bot.texts import text

log = logging.getLogger(__name__)


MODAL_INPUT_LIMIT = 4000  # Discord's cap on a text input


MODAL_PLACEHOLDER_LIMIT = 100  # and on its placeholder


QUOTE_CHARS = 300  # how much of a chosen message a form quotes


def quoted(message: str, limit: int = QUOTE_CHARS) -> str:
    """The beginning of a message as a Markdown quote."""
    shown = message.strip() if len(message.strip()) <= limit else message.strip()[: limit - 1] + "…"
    return "\n".join(f"> {line}" for line in shown.splitlines())


@runtime_checkable
class ViewHandler(Protocol):
    """What the buttons and the form call back: the bot (`KullmDiscord`)."""

    settings: DiscordSettings

    async def ask_from_interaction(self, interaction: discord.Interaction[Any], question: str, context: str) -> None:
        """Ask a question typed in the form, about the message it quotes."""

    async def cancel_by_button(self, interaction: discord.Interaction[Any], question_id: str) -> None:
        """Stop an answer (its asker or a moderator)."""

    async def vote_by_button(
        self, interaction: discord.Interaction[Any], question_id: str, vote: Literal["up", "down"]
    ) -> None:
        """Record a vote on an answer."""


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
        assert isinstance(client, ViewHandler)
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
        assert isinstance(client, ViewHandler)
        await client.vote_by_button(interaction, self.question_id, self.vote)


def vote_buttons(question_id: str, language: Any) -> list[VoteButton]:
    return [VoteButton(question_id, vote, text(f"vote_{vote}_button", language)) for vote in ("up", "down")]


def feedback_view(question_id: str, language: Any) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for button in vote_buttons(question_id, language):
        view.add_item(button)
    return view


def answer_layout(content: str, buttons: Sequence[discord.ui.Item[Any]], footer_mark: str) -> discord.ui.LayoutView:
    """An answer as a Components V2 layout: its text in a container, then (under a divider) the small lines the
    answer's layout wrote last (`footer_mark`, "-# ": the model and time, the sources), then its buttons, all in the
    same container."""
    lines = content.split("\n")
    small: list[str] = []
    while len(lines) > 1 and lines[-1].startswith(footer_mark):
        small.insert(0, lines.pop())
    body, footer = "\n".join(lines), "\n".join(small)
    if not body.strip():
        body, footer = content, ""
    container: discord.ui.Container[Any] = discord.ui.Container()
    container.add_item(discord.ui.TextDisplay(body if body.strip() else "…"))
    if footer:
        container.add_item(discord.ui.Separator(visible=True))
        container.add_item(discord.ui.TextDisplay(footer))
    if buttons:
        container.add_item(discord.ui.ActionRow(*buttons))
    view = discord.ui.LayoutView(timeout=None)
    view.add_item(container)
    return view


class AskModal(discord.ui.Modal):
    """The question typed about a chosen message (that message becomes 맥락)."""

    def __init__(self, client: ViewHandler, context: str) -> None:
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
