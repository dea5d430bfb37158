"""Workspace knowledge as every platform runs it: the switch (`/kullm-설정 지식 켜기|끄기|상태|잊기`), the hourly
retention sweep, messages kept current, and a question answered from the channels its asker may read, with the
messages used as numbered sources. The platforms (`bot.discord.knowledge`, `bot.slack.knowledge`) bring what only
they know: reading a channel's history back, turning their messages into `Passage`s, and who may read what."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from bot.knowledge.asking import numbered_context, numbered_sources, retention_cutoff
from bot.knowledge.index import KnowledgeIndex
from bot.relay import Relay
from bot.settings import ClientSettings
from bot.surface import Asked
from bot.texts import text
from chatbus import Bus, BusError, cancel_requested
from chatbus.knowledge import Hit, Passage

log = logging.getLogger(__name__)

SWEEP_S = 3600  # how often messages past KNOWLEDGE_RETENTION_DAYS are dropped
Action = Literal["on", "off", "status", "forget"]
ACTIONS: tuple[Action, ...] = ("on", "off", "status", "forget")


class KnowledgeService:
    """One platform's knowledge: its switch, its sweep, its index kept current, and questions answered from it."""

    def __init__(self, platform: str, settings: ClientSettings, bus: Bus, relay: Relay[Any, Any]) -> None:
        self.platform, self.settings, self.relay = platform, settings, relay
        self.language: Any = settings.bot_language
        self.index = KnowledgeIndex(bus.knowledge)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.spawn(self._sweep_forever())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ the switch

    async def switch(self, action: Action, channel: str, by: str, backfill: Callable[[], Awaitable[None]]) -> str:
        """Turn `channel`'s knowledge on (its history read back by `backfill`, in the background) or off, erase it,
        or show it; returns the reply. The caller has checked that `by` may (admins; anyone for `status`)."""
        store = self.index.store
        if action == "on":
            await store.turn_on(self.platform, channel, by)
            self.spawn(self._read_back(channel, backfill))
            return text("knowledge_on", self.language, days=self.settings.knowledge_backfill_days)
        if action == "off":
            await store.turn_off(self.platform, channel)
            return text("knowledge_off", self.language)
        if action == "forget":
            await store.turn_off(self.platform, channel)
            return text("knowledge_forgot", self.language, messages=await store.forget(self.platform, channel))
        status = await store.status(self.platform, channel)
        state = text("knowledge_state_on" if status.on else "knowledge_state_off", self.language)
        span = ""
        if status.oldest is not None and status.newest is not None:
            oldest, newest = (
                datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d") for t in (status.oldest, status.newest)
            )
            span = text("knowledge_span", self.language, oldest=oldest, newest=newest)
        return text("knowledge_status", self.language, state=state, messages=status.messages, span=span)

    async def _read_back(self, channel: str, backfill: Callable[[], Awaitable[None]]) -> None:
        try:
            await backfill()
        except BusError:
            log.warning("%s knowledge: reading channel %s back stopped early (Redis)", self.platform, channel)

    @property
    def backfill_after(self) -> float:
        """Unix time a channel's history is read back to when its knowledge is turned on: KNOWLEDGE_BACKFILL_DAYS,
        and never past KNOWLEDGE_RETENTION_DAYS (what retention would drop is not read at all)."""
        after = datetime.now(UTC).timestamp() - self.settings.knowledge_backfill_days * 86400
        return max(after, retention_cutoff(self.settings.knowledge_retention_days) or after)

    async def remember(self, passages: list[Passage]) -> int:
        """Index messages, leaving out those past retention (an edit of an old message among them); returns how many
        were written."""
        cutoff = retention_cutoff(self.settings.knowledge_retention_days)
        return await self.index.put([p for p in passages if cutoff is None or not p.at or p.at >= cutoff])

    async def _sweep_forever(self) -> None:
        while not cancel_requested():  # redis-py may swallow a CancelledError that lands mid-command
            with contextlib.suppress(BusError):
                dropped = await self.index.sweep(self.platform, self.settings.knowledge_retention_days)
                if dropped:
                    log.info("%s knowledge: %d messages past retention dropped", self.platform, dropped)
            if cancel_requested():
                return
            await asyncio.sleep(SWEEP_S)

    # ------------------------------------------------------------------ kept current

    async def keeps(self, channel: str) -> bool:
        """Whether `channel` has knowledge on (False when Redis cannot say: nothing is stored then anyway)."""
        try:
            return await self.index.store.is_on(self.platform, channel)
        except BusError:
            return False

    async def keep(self, channel: str, message: str, passage: Passage | None) -> None:
        """A new or edited message of a channel with knowledge on is stored, or dropped when it no longer holds text
        worth keeping (`passage` None); a failure loses only that message's entry."""
        with contextlib.suppress(BusError):
            if not await self.index.store.is_on(self.platform, channel):
                return
            if passage is None or not await self.remember([passage]):
                await self.index.store.delete(self.platform, channel, [message])

    async def drop(self, channel: str, messages: Iterable[str]) -> None:
        """Deleted messages leave the index at once (whether knowledge is on or was turned off since)."""
        with contextlib.suppress(BusError):
            await self.index.store.delete(self.platform, channel, list(messages))

    # ------------------------------------------------------------------ asking

    async def ask(
        self,
        origin: Any,
        asked: Asked,
        readable: Callable[[], Awaitable[dict[str, str]]],
        link: Callable[[Passage], Awaitable[str]] | None = None,
    ) -> None:
        """Answer `asked` from the channels with knowledge on that its asker may read (`readable`: their ids →
        names), citing what it used (`link` gives a passage's link as the platform shows it, else the stored one);
        say so when none is on or readable, or nothing matches."""
        # The asker's limits (size, rate, answers open, tokens a day, the queue), counted before searching: a search
        # that finds nothing costs Kiwi and Redis too, so it is one of the asker's questions.
        refused = await self.relay.refusal(asked.user, asked.question)
        if refused:
            await self.relay.refuse(origin, refused)
            return
        names = await readable()
        if not names:
            await self.relay.refuse(origin, text("knowledge_none_on", self.language))
            return
        hits = await self.index.search(self.platform, names, asked.question)
        if not hits:
            await self.relay.refuse(origin, text("knowledge_nothing", self.language))
            return
        if link is not None:
            hits = [await _relinked(hit, link) for hit in hits]
        context = numbered_context(hits, self.language, names)
        sources = numbered_sources(hits, self.language)
        found = dataclasses.replace(asked, context=context, continues=False, sources=sources)
        await self.relay.ask(origin, found, admitted=True)


async def _relinked(hit: Hit, link: Callable[[Passage], Awaitable[str]]) -> Hit:
    fresh = await link(hit.passage)
    return dataclasses.replace(hit, passage=dataclasses.replace(hit.passage, link=fresh or hit.passage.link))
