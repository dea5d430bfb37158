"""`kullm ask --knowledge CHANNEL`: a question answered from one channel's stored history, as "찾아줘: …" answers it in
the chat, with its sources printed after the answer.

The terminal has no chat identity to check who may read what: it is for the operator, who holds the Redis the
index is in anyway. It reads only a channel whose knowledge an admin turned on (`/kullm-설정 지식 켜기`), named as
`discord:<channel id>`, `slack:<channel id>`, or by its id alone where one platform has it."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from bot.knowledge.asking import numbered_context, numbered_sources
from bot.limits import check_question
from bot.settings import ClientSettings
from bot.surface import Source
from bot.terminal.ask import ask
from bot.terminal.render import notice_for, redis_failed
from bot.texts import Language, text
from chatbus import Bus, BusError
from runtime.exits import EXIT_FAILED, EXIT_INPUT, EXIT_OK

PLATFORMS = ("discord", "slack")


async def ask_workspace(
    settings: ClientSettings,
    question: str,
    channel: str,
    *,
    max_new_tokens: int | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Answer `question` from `channel`'s knowledge and print the sources it used; returns the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    language, say = settings.bot_language, notice_for(as_json, out, err)
    refusal = check_question(settings, question)
    if refusal:
        return say(EXIT_INPUT, refusal)
    try:
        from bot.knowledge.index import KnowledgeIndex  # Kiwi: the `knowledge` extra
    except ImportError:
        return say(EXIT_INPUT, text("knowledge_needs_extra", language))
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    try:
        index = KnowledgeIndex(bus.knowledge)
        on = {platform: set(await bus.knowledge.channels_on(platform)) for platform in PLATFORMS}
        platform, _, named = channel.rpartition(":") if ":" in channel else ("", "", channel)
        where = [p for p in PLATFORMS if (not platform or p == platform) and named in on[p]]
        if len(where) != 1:
            return say(EXIT_INPUT, text("knowledge_not_on_terminal", language, channel=channel))
        hits = await index.search(where[0], [named], question)
    except BusError as exc:
        return redis_failed(exc, settings, say)
    finally:
        await bus.aclose()
    if not hits:
        return say(EXIT_FAILED, text("knowledge_nothing", language))
    sources = numbered_sources(hits, language)
    if as_json:
        line = {"type": "sources", "sources": [{"title": s.title, "url": s.url} for s in sources]}
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
    context = numbered_context(hits, language)
    status = await ask(
        settings, question, context=context, max_new_tokens=max_new_tokens, as_json=as_json, out=out, err=err
    )
    if status == EXIT_OK and not as_json and sources:
        out.write(_sources_text(sources, language))
        out.flush()
    return status


def _sources_text(sources: tuple[Source, ...], language: Language) -> str:
    """The sources under the answer, one a line: "📎 출처: [1] 밥 https://…"."""
    return "\n".join(text("sources_line", language, sources=f"{s.title} {s.url}") for s in sources) + "\n"
