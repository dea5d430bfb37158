"""Workspace knowledge on Slack: `/kullm-설정 지식 켜기|끄기|상태|잊기` (workspace admins), a channel's history read
back when it is turned on (conversations.history, and conversations.replies for its threads), the `message` events of
channels the bot is in followed (new messages, `message_changed`, `message_deleted`), and "찾아줘: …" answered
from the channels with knowledge on that the asker may read: public channels (not for guests, who see only their
own), and private ones they are a member of (users.conversations). The sources are permalinks (chat.getPermalink).

Thread replies are stored under their channel with their thread's ts, so an answer can cite the thread. Bots'
messages (this bot's answers too) are never stored, nor requests to the bot; DMs and group DMs never have
knowledge."""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.knowledge.asking import worth_keeping
from bot.knowledge.service import Action, KnowledgeService
from bot.relay import Relay
from bot.settings import SlackSettings
from bot.slack.reading import SlackReader
from bot.slack.targets import SlackOrigin
from bot.surface import Asked
from bot.texts import text
from chatbus import Bus
from chatbus.knowledge import Passage

log = logging.getLogger(__name__)

PLATFORM = "slack"
PAGE = 200  # messages per conversations.history / replies page (Slack's recommended most)
VISIBILITY_S = 300.0  # how long whether a channel is public is remembered (a channel can turn private)
# What people post; a join, a topic change, a bot's message are not knowledge.
KEPT_SUBTYPES = frozenset({None, "", "file_share", "thread_broadcast", "me_message"})


class SlackKnowledge(KnowledgeService):
    """The knowledge setting, the index kept current from channel message events, and questions answered from it."""

    def __init__(
        self, client: AsyncWebClient, settings: SlackSettings, bus: Bus, relay: Relay[Any, Any], reader: SlackReader
    ) -> None:
        super().__init__(PLATFORM, settings, bus, relay)
        self.client, self.reader = client, reader
        self._workspace_url = ""  # "https://team.slack.com/": the links stored with messages
        self._bot_user = ""
        self._public: dict[str, tuple[float, bool, str]] = {}  # channel → (checked at, public, name)

    # ------------------------------------------------------------------ the switch

    async def command(self, channel: str, user: str, action: Action) -> str:
        """`지식 켜기|끄기|상태|잊기` in `channel` (the caller has checked that `user` may): the reply to show."""
        try:
            info = (await self.client.conversations_info(channel=channel)).get("channel") or {}
        except SlackApiError as exc:
            log.info("slack knowledge: conversations.info failed (%s)", exc.response.get("error"))
            if exc.response.get("error") == "missing_scope" and not channel.startswith("D"):
                return text("knowledge_needs_scopes", self.language)  # an app made from an older manifest
            info = {}
        if info.get("is_im") or info.get("is_mpim") or not info:
            return text("knowledge_no_dm", self.language)
        if action == "on" and not info.get("is_member"):  # history can only be read where the bot is
            return text("knowledge_invite_first", self.language)

        async def backfill() -> None:
            await self.backfill(channel)

        return await self.switch(action, channel, user, backfill)

    async def backfill(self, channel: str) -> None:
        """Read the channel back KNOWLEDGE_BACKFILL_DAYS, its threads' replies with it, into the index."""
        oldest = f"{self.backfill_after:.6f}"
        stored = 0
        try:
            async for page in self._pages("conversations_history", channel=channel, oldest=oldest):
                batch = []
                for message in page:
                    if (passage := await self.passage_of(channel, message)) is not None:
                        batch.append(passage)
                    if message.get("reply_count"):
                        async for replies in self._pages("conversations_replies", channel=channel, ts=message["ts"]):
                            for reply in replies:
                                if reply.get("ts") != message["ts"]:  # the root is in the history page
                                    batch += [p for p in [await self.passage_of(channel, reply)] if p is not None]
                stored += await self.remember(batch)
        except SlackApiError as exc:
            log.warning("slack knowledge: reading %s back stopped early (%s)", channel, exc.response.get("error"))
        log.info("slack knowledge: channel %s read back, %d messages stored", channel, stored)

    async def _pages(self, method: str, **args: Any) -> Any:
        cursor: str | None = None
        while True:
            page = await getattr(self.client, method)(**args, limit=PAGE, cursor=cursor)
            yield page.get("messages") or []
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return

    async def passage_of(self, channel: str, message: dict[str, Any]) -> Passage | None:
        """A person's message as the index keeps it (None for bots' messages, joins and the like, requests to the
        bot, and messages with no text)."""
        if message.get("bot_id") or message.get("subtype") not in KEPT_SUBTYPES or not message.get("user"):
            return None
        raw = str(message.get("text") or "")
        await self._identify()
        if f"<@{self._bot_user}>" in raw or not worth_keeping(raw):  # a question to the bot is not knowledge
            return None
        said = await self.reader.plain(raw)
        if not said.strip():
            return None
        ts, thread = str(message["ts"]), str(message.get("thread_ts") or "")
        return Passage(
            PLATFORM,
            channel,
            ts,
            said,
            author=await self.reader.name(str(message["user"])),
            thread=thread if thread != ts else "",
            at=float(ts),
            link=await self._link(channel, ts, thread),
        )

    async def _identify(self) -> None:
        """The bot's own user id and the workspace's URL (auth.test, once)."""
        if not self._bot_user:
            me = await self.client.auth_test()
            self._bot_user, self._workspace_url = str(me.get("user_id") or ""), str(me.get("url") or "")

    async def _link(self, channel: str, ts: str, thread: str) -> str:
        """The message's permalink as Slack writes them (kept with it, for where Slack cannot be asked: the
        terminal); answers in Slack ask chat.getPermalink afresh."""
        link = f"{self._workspace_url}archives/{channel}/p{ts.replace('.', '')}"
        return link + (f"?thread_ts={thread}&cid={channel}" if thread and thread != ts else "")

    # ------------------------------------------------------------------ kept current

    async def on_event(self, event: dict[str, Any]) -> None:
        """A `message` event of a channel (a new message, `message_changed`, `message_deleted`). Slack sends every
        message of the channels the bot is in: those of a channel without knowledge are dropped unread (no name or
        link is looked up for them)."""
        channel, subtype = str(event.get("channel") or ""), event.get("subtype")
        if subtype == "message_deleted":
            await self.drop(channel, [str(event.get("deleted_ts") or "")])
        elif not await self.keeps(channel):
            return
        elif subtype == "message_changed":
            message = event.get("message") or {}
            if message.get("subtype") == "tombstone":  # a thread's root deleted: its replies stay
                await self.drop(channel, [str(message.get("ts") or "")])
            elif not message.get("bot_id"):
                await self.keep(channel, str(message.get("ts") or ""), await self.passage_of(channel, message))
        elif subtype in KEPT_SUBTYPES and (passage := await self.passage_of(channel, event)) is not None:
            await self.keep(channel, passage.message, passage)

    # ------------------------------------------------------------------ asking

    async def ask_workspace(self, origin: SlackOrigin, question: str) -> None:
        """Answer `question` from the channels with knowledge on that the asker may read, linking each source by
        its permalink."""

        async def link(passage: Passage) -> str:
            try:
                answer = await self.client.chat_getPermalink(channel=passage.channel, message_ts=passage.message)
            except SlackApiError:
                return ""
            return str(answer.get("permalink") or "")

        async def readable() -> dict[str, str]:
            return await self._readable(origin.user)

        await self.ask(origin, Asked(origin.user, question, channel=origin.channel), readable, link)

    async def _readable(self, user: str) -> dict[str, str]:
        """The channels with knowledge on that `user` may read (id → name): those they are a member of, and the
        public ones unless they are a guest. Anything Slack will not say counts as unreadable."""
        on = await self.index.store.channels_on(PLATFORM)
        if not on:
            return {}
        try:
            person = (await self.client.users_info(user=user)).get("user") or {}
            member_of: dict[str, str] = {}
            cursor: str | None = None
            while True:
                page = await self.client.users_conversations(
                    user=user, types="public_channel,private_channel", exclude_archived=True, limit=PAGE, cursor=cursor
                )
                member_of |= {str(c["id"]): str(c.get("name") or c["id"]) for c in page.get("channels") or []}
                cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
                if not cursor:
                    break
        except SlackApiError as exc:
            log.warning(
                "slack knowledge: who may read what is unknown (%s): nothing searched", exc.response.get("error")
            )
            return {}
        guest = bool(person.get("is_restricted") or person.get("is_ultra_restricted"))
        if person.get("deleted") or person.get("is_bot"):
            return {}
        readable = {}
        for channel in on:
            if channel in member_of:
                readable[channel] = member_of[channel]
            elif not guest and (public := await self._public_name(channel)) is not None:
                readable[channel] = public
        return readable

    async def _public_name(self, channel: str) -> str | None:
        """The channel's name if it is public (conversations.info, remembered a few minutes), else None."""
        checked = self._public.get(channel)
        if checked is None or time.monotonic() - checked[0] > VISIBILITY_S:
            try:
                info = (await self.client.conversations_info(channel=channel)).get("channel") or {}
            except SlackApiError:
                return None
            public = bool(info.get("is_channel")) and not info.get("is_private") and not info.get("is_archived")
            checked = (time.monotonic(), public, str(info.get("name") or channel))
            self._public[channel] = checked
        return checked[2] if checked[1] else None
