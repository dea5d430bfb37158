"""Asking the workspace, the part every surface shares: recognising a search request ("찾아줘: …"), turning the
passages found into numbered 맥락 for the model (best first, so when the window cuts 맥락 the least relevant go),
and the numbered sources the answer ends with."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from bot.knowledge.analyzer import ASKING
from bot.surface import Source
from bot.texts import text
from chatbus.knowledge import Hit

PASSAGE_CHARS = 1200  # one message's share of 맥락 at most: a wall of text does not crowd out the others
DAY_S = 24 * 3600

# Mentions a message starts with (Discord's <@123> and <@!123>, Slack's <@U123>): "@KULLM 찾아줘: …" is a request.
LEADING_MENTIONS = re.compile(r"^(?:\s*<@!?[A-Za-z0-9]+>)+")


def knowledge_question(said: str) -> str | None:
    """The question of a search request ("찾아줘: 배포 날짜 언제야?" → "배포 날짜 언제야?"), or None."""
    match = ASKING.match(said)
    return match["question"].strip() if match else None


def worth_keeping(said: str) -> bool:
    """Whether a person's message belongs in the index: it has text, and is not a search request to the bot (which
    would only ever match the next person asking the same)."""
    rest = LEADING_MENTIONS.sub("", said)
    return bool(rest.strip()) and knowledge_question(rest) is None


def numbered_context(hits: list[Hit], language: Any, names: dict[str, str] | None = None) -> str:
    """The passages as 맥락, numbered as the sources are: who wrote each, when, where (a channel's name from
    `names`, and whether in a thread), then what they wrote."""
    blocks = []
    for number, hit in enumerate(hits, start=1):
        passage = hit.passage
        where = f"#{(names or {}).get(passage.channel, passage.channel)}"
        if passage.thread:
            where += f" ({text('source_thread', language)})"
        day = datetime.fromtimestamp(passage.at, UTC).strftime("%Y-%m-%d") if passage.at else ""
        said = passage.text if len(passage.text) <= PASSAGE_CHARS else passage.text[: PASSAGE_CHARS - 1] + "…"
        head = " · ".join(part for part in (passage.author, day, where) if part)
        blocks.append(f"[{number}] {head}\n{said}")
    return "\n\n".join(blocks)


def numbered_sources(hits: list[Hit], language: Any) -> tuple[Source, ...]:
    """The links the answer ends with, numbered as in 맥락 ("[1]", "[2]"…): each message's own link."""
    return tuple(
        Source(f"[{number}] {hit.passage.author or text('source_message', language)}", hit.passage.link)
        for number, hit in enumerate(hits, start=1)
        if hit.passage.link
    )


def retention_cutoff(days: int, now: float | None = None) -> float | None:
    """Messages written before this time are dropped (KNOWLEDGE_RETENTION_DAYS; 0 keeps everything)."""
    return (now or time.time()) - days * DAY_S if days > 0 else None
