"""Reading Discord as a person would: a thread as `name: text` lines, the files attached to a message, the
message a question replies to."""

from __future__ import annotations

import contextlib
import logging
import re
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
            if message.clean_content.strip():
                lines.append(transcript_line(message.author.display_name, message.clean_content))
        return transcript(lines)

    async def attachments_text(self, message: discord.Message) -> str:
        """The text of the files attached to a message (fetched with the bot's session, kept only in the question).
        Raises `FileRefused` with the notice to show (too large, not text, unreadable)."""
        texts: list[tuple[str, str]] = []
        limit = self.settings.max_file_bytes
        for attachment in message.attachments:
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

    async def replied_text(self, message: discord.Message) -> str:
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
