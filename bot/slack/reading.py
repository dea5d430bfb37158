"""Reading the workspace as a person would: a thread as `name: text` lines, Slack's markup (`<@U1>`, `<#C1|x>`,
links) as plain text, people's display names, and the files shared with a question."""

from __future__ import annotations

import html
import logging
import re
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.pdf_text import PdfReader
from bot.settings import SlackSettings
from bot.surface import Source
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


# <@U123>, <#C123|name>, <https://…|label>, <!here>: how Slack marks up people, channels, links and broadcasts.
MARKUP = re.compile(r"<([@#!])?([^|>]+)(?:\|([^>]*))?>")


MENTION = re.compile(r"<@[A-Z0-9]+>")


LINK = re.compile(r"https://[^\s<>|]+")  # a URL that can stand in mrkdwn's <url|label> as it is


class SlackReader:
    """What the bot reads in the workspace: threads as transcripts, people's names, Slack's markup as plain text,
    shared files (with the bot's token)."""

    def __init__(self, client: AsyncWebClient, settings: SlackSettings) -> None:
        self.client, self.settings = client, settings
        self.language: Any = settings.bot_language
        self.pdfs = PdfReader(settings.pdf_budget())
        self._names: dict[str, str] = {}  # user id → display name, for transcripts
        self._bot_user_id = ""

    async def transcript(self, channel: str, thread_ts: str, until: str | None = None) -> str:
        """The thread as `name: text` lines, oldest first (up to `until`, the message asking for it, excluded);
        bots' messages and the bot's own answers only with SUMMARY_INCLUDE_BOTS."""
        if not self._bot_user_id:
            self._bot_user_id = str((await self.client.auth_test()).get("user_id") or "")
        messages: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(messages) < MAX_THREAD_MESSAGES:
            page = await self.client.conversations_replies(channel=channel, ts=thread_ts, cursor=cursor, limit=200)
            messages += page.get("messages") or []
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        lines = []
        for message in messages[-MAX_THREAD_MESSAGES:]:
            if until is not None and message.get("ts") == until:
                continue
            from_bot = bool(message.get("bot_id")) or message.get("user") == self._bot_user_id
            if from_bot and not self.settings.summary_include_bots:
                continue
            if is_summary_request(MENTION.sub("", message.get("text", ""))):  # an earlier `@KULLM 요약`
                continue
            user = str(message.get("user") or "")
            name = await self.name(user) if user else str(message.get("username") or "bot")
            body = await self.plain(message.get("text", ""))
            if body.strip():
                lines.append(transcript_line(name, body))
        return transcript(lines)

    async def name(self, user: str) -> str:
        """A person's display name (users.info, cached); their id if Slack will not say."""
        if user not in self._names:
            try:
                profile = ((await self.client.users_info(user=user)).get("user") or {}).get("profile") or {}
                self._names[user] = profile.get("display_name") or profile.get("real_name") or user
            except SlackApiError:
                self._names[user] = user
        return self._names[user]

    async def plain(self, mrkdwn: str) -> str:
        """Slack's markup as a reader sees it: `@name` for people, `#name` for channels, link labels."""
        parts, last = [], 0
        for match in MARKUP.finditer(mrkdwn):
            parts.append(html.unescape(mrkdwn[last : match.start()]))
            sigil, target, label = match.group(1), match.group(2), match.group(3)
            if sigil == "@":
                parts.append("@" + (label or await self.name(target)))
            elif sigil == "#":
                parts.append("#" + (label or target))
            elif sigil == "!":
                parts.append("@" + (label or target.split("^")[0]))
            else:
                parts.append(label or target)
            last = match.end()
        parts.append(html.unescape(mrkdwn[last:]))
        return "".join(parts)

    async def files_text(self, files: list[dict[str, Any]]) -> str:
        """The text of the files shared with a question, read with the bot's token (files:read) and kept only in
        the question. Raises `FileRefused` with the notice to show (too large, not text, unreadable)."""
        texts: list[tuple[str, str]] = []
        for shared in files:
            name = str(shared.get("name") or shared.get("title") or "file")
            check_size(name, int(shared.get("size") or 0), self.settings.max_file_bytes, self.language)
            data = await self.download(str(shared.get("url_private_download") or shared.get("url_private")))
            texts.append((name, await file_text(name, data, self.settings.max_file_bytes, self.language, self.pdfs)))
        return files_context(texts)

    @staticmethod
    def file_sources(files: list[dict[str, Any]]) -> tuple[Source, ...]:
        """The shared files as sources of an answer: each by its name and permalink."""
        return tuple(
            Source(str(f.get("name") or f.get("title") or "file"), str(f["permalink"]))
            for f in files
            if LINK.fullmatch(str(f.get("permalink") or ""))
        )

    async def message_source(self, channel: str, ts: str, kind: str) -> tuple[Source, ...]:
        """A message or thread (`kind`: "thread", "message") as the source of an answer, by its permalink; none when
        Slack will not give one."""
        try:
            link = str((await self.client.chat_getPermalink(channel=channel, message_ts=ts)).get("permalink") or "")
        except SlackApiError as exc:
            log.info("slack: chat.getPermalink failed (%s)", exc.response.get("error"))
            return ()
        return (Source(text(f"source_{kind}", self.language), link),) if LINK.fullmatch(link) else ()

    async def download(self, url: str) -> bytes:
        """A private file's bytes (at most MAX_FILE_BYTES + 1); FileRefused when Slack will not hand it over."""
        headers = {"Authorization": f"Bearer {self.client.token}"}
        limit = self.settings.max_file_bytes
        try:
            async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
                html_page = response.content_type == "text/html"  # Slack's sign-in page: the token may not read it
                if response.status != 200 or html_page:
                    raise FileRefused(text("file_not_decodable", self.language, name=url.rsplit("/", 1)[-1]))
                return await response.content.read(limit + 1)
        except aiohttp.ClientError as exc:
            log.warning("slack: a shared file could not be fetched (%s)", type(exc).__name__)
            raise FileRefused(text("file_not_decodable", self.language, name=url.rsplit("/", 1)[-1])) from exc
