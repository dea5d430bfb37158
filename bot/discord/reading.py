"""Reading Discord as a person would: a thread as `name: text` lines, the files attached to a message, the
message a question replies to, and what a forwarded message carries (its snapshot's text and files)."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable
from typing import Any

import discord

from bot.pdf_text import PdfReader
from bot.settings import DiscordSettings
from bot.texts import text
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

log = logging.getLogger(__name__)


class DiscordReader:
    """What the bot reads on Discord: threads as transcripts, attached files, the message a question replies to."""

    def __init__(self, client: discord.Client, settings: DiscordSettings) -> None:
        self.client, self.settings = client, settings
        self.language: Any = settings.bot_language
        self.pdfs = PdfReader(settings.pdf_budget())

    async def thread_of(self, message: discord.Message) -> discord.Thread | None:
        """The thread a message is in, or the one started from it."""
        if isinstance(message.channel, discord.Thread):
            return message.channel
        if message.thread is not None:
            return message.thread
        try:  # a thread started from a message has that message's id
            found = await self.client.fetch_channel(message.id)
        except (discord.NotFound, discord.Forbidden):
            return None
        return found if isinstance(found, discord.Thread) else None

    async def transcript(self, thread: Any, exclude: int | None = None) -> str:
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
            said = shown_text(message)
            if said.strip():
                lines.append(transcript_line(message.author.display_name, said))
        return transcript(lines)

    async def attachments_text(self, message: discord.Message) -> str:
        """The text of the files attached to a message (fetched with the bot's session, kept only in the question).
        Raises `FileRefused` with the notice to show (too large, not text, unreadable)."""
        return await self._files_text(message.attachments)

    async def _files_text(self, attachments: Iterable[discord.Attachment]) -> str:
        texts: list[tuple[str, str]] = []
        limit = self.settings.max_file_bytes
        for attachment in attachments:
            check_size(attachment.filename, attachment.size, limit, self.language)  # before downloading
            try:
                data = await attachment.read()
            except discord.HTTPException as exc:
                notice = text("file_not_decodable", self.language, name=attachment.filename)
                raise FileRefused(notice) from exc
            texts.append(
                (attachment.filename, await file_text(attachment.filename, data, limit, self.language, self.pdfs))
            )
        return files_context(texts)

    async def quoted_text(self, message: discord.Message) -> str:
        """A message as 맥락: its text and files, and for a forward what it forwarded (the snapshot's text and files).
        Raises `FileRefused`, as `attachments_text` does."""
        parts = [message_text(message), await self.attachments_text(message)]
        for snapshot in message.message_snapshots:
            parts += [message_text(snapshot), await self._files_text(snapshot.attachments)]
        return "\n\n".join(part for part in parts if part.strip())

    async def replied_text(self, message: discord.Message) -> str:
        """The message this one replies to (a forward: what it forwarded), as `quoted_text` reads it: it becomes
        맥락. Raises `FileRefused`."""
        replied = await self.replied_to(message)
        return await self.quoted_text(replied) if replied is not None else ""

    async def replied_to(self, message: discord.Message) -> discord.Message | None:
        """The message this one replies to; None when it replies to none or that one is gone. A forward's own
        reference points at the forwarded original, which its snapshot already holds: not a reply."""
        reference = message.reference
        if reference is None or reference.message_id is None or is_forward(message):
            return None
        if isinstance(reference.resolved, discord.Message):
            return reference.resolved
        try:
            return await message.channel.fetch_message(reference.message_id)
        except discord.HTTPException:
            return None


def home_channel(channel: Any) -> str:
    """The channel a place belongs to: a thread's parent channel, else the channel itself (personas and workspace
    knowledge are set per channel and hold for its threads)."""
    if isinstance(channel, discord.Thread) and channel.parent_id:
        return str(channel.parent_id)
    return str(getattr(channel, "id", "") or "")


def is_forward(message: discord.Message) -> bool:
    """A forwarded message: its reference is a forward, and what it forwarded is in its snapshots."""
    reference = message.reference
    return bool(message.message_snapshots) or (
        reference is not None and reference.type == discord.MessageReferenceType.forward
    )


def shown_text(message: discord.Message) -> str:
    """A message's text and, for a forward, the text it forwarded."""
    return "\n\n".join(filter(None, [message_text(message), *map(message_text, message.message_snapshots)]))


def message_text(message: discord.Message | discord.MessageSnapshot) -> str:
    """What a message shows as text: its content (mentions as names where the message can say them), or for a
    Components V2 message (this bot's answers among them) its text displays, less the small footer lines."""
    said = message.clean_content if isinstance(message, discord.Message) else message.content
    shown = [said] if said.strip() else []
    for display in _text_displays(message.components):
        if not display.startswith("-# "):
            shown.append(display)
    return "\n\n".join(shown)


def _text_displays(components: Iterable[Any]) -> list[str]:
    texts: list[str] = []
    for component in components:
        if isinstance(component, discord.components.TextDisplay):
            texts.append(component.content)
        texts += _text_displays(getattr(component, "children", ()))
    return texts
