"""Workspace knowledge as the adapters use it: messages analysed into Korean-aware terms (`bot.knowledge.analyzer`)
and kept in the contract's knowledge store (`chatbus.knowledge`, where the layout and the ranking are described);
questions analysed the same way and searched in the channels their asker may read."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from bot.knowledge.analyzer import KoreanAnalyzer
from bot.knowledge.asking import retention_cutoff
from chatbus.knowledge import Hit, Knowledge, Passage

WRITE_BATCH = 500  # messages analysed and written per transaction in a backfill


class KnowledgeIndex:
    """Index and search messages; `store` says which channels have knowledge on, and erases."""

    def __init__(self, store: Knowledge, analyzer: KoreanAnalyzer | None = None) -> None:
        self.store = store
        self.analyzer = analyzer or KoreanAnalyzer()

    async def put(self, passages: Iterable[Passage]) -> int:
        """Index messages (a new one, an edit); the analysis runs off the event loop. Returns how many were written."""
        batch = [p for p in passages if p.text.strip()]
        written = 0
        for start in range(0, len(batch), WRITE_BATCH):
            chunk = batch[start : start + WRITE_BATCH]
            terms = await asyncio.to_thread(self.analyzer.terms_of_many, [p.text for p in chunk])
            written += await self.store.put(chunk, terms)
        return written

    async def sweep(self, platform: str, retention_days: int) -> int:
        """Drop every channel's messages older than `retention_days` (0: none); returns how many were dropped."""
        cutoff = retention_cutoff(retention_days)
        if cutoff is None:
            return 0
        return sum(
            [await self.store.expire(platform, channel, cutoff) for channel in await self.store.channels_on(platform)]
        )

    async def search(self, platform: str, channels: Iterable[str], question: str, k: int = 5) -> list[Hit]:
        """The `k` messages of `channels` that best match `question`, best first (none when nothing matches)."""
        terms = await asyncio.to_thread(self.analyzer.terms, question)
        return await self.store.search(platform, channels, terms, k)
