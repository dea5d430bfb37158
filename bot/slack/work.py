"""Work shown as it happens where Slack streams an answer: task cards in the stream (Slack's `task_update` chunks,
docs.slack.dev/messaging/sending-and-scheduling-messages#text-streaming) for what the answer read — each file,
thread or message with itself as the card's source — and for the parts of a long summary as they are read; and,
where an answer is edited into a message instead, the same sources as a line under it."""

from __future__ import annotations

from typing import Any

from bot.slack.mrkdwn import slack_escape
from bot.surface import Source
from bot.texts import text

PARTS_TASK = "parts"  # the card of a summary's parts: "3/7 읽는 중" while they are read


TITLE_CHARS = 100  # a source's name as a card's title or a link's label


def _short(title: str) -> str:
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"


def source_tasks(sources: tuple[Source, ...], language: Any) -> list[dict[str, Any]]:
    """A finished card per source ("📎 report.pdf 읽음"), linking it: the first chunks of the answer's stream."""
    return [
        {
            "type": "task_update",
            "id": f"source-{i}",
            "title": text("task_source_read", language, name=_short(source.title)),
            "status": "complete",
            "sources": [{"type": "url", "url": source.url, "text": _short(source.title)}],
        }
        for i, source in enumerate(sources)
    ]


def parts_task(done: int, total: int, language: Any) -> dict[str, Any]:
    """The card of a summary's parts: in progress while they are read, complete once all are."""
    if done < total:
        return {
            "type": "task_update",
            "id": PARTS_TASK,
            "title": text("task_parts", language, done=done, total=total),
            "status": "in_progress",
        }
    return {
        "type": "task_update",
        "id": PARTS_TASK,
        "title": text("task_parts_done", language, total=total),
        "status": "complete",
    }


def sources_block(sources: tuple[Source, ...], language: Any) -> dict[str, Any]:
    """The sources as a context line under an answer edited into a message: "📎 출처: <url|report.pdf>, …"."""
    links = ", ".join(f"<{source.url}|{_label(source.title)}>" for source in sources)
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text("sources_line", language, sources=links)}]}


def _label(title: str) -> str:
    """A link's label in mrkdwn: escaped, and without the `|` that would end the link's URL part early."""
    return slack_escape(_short(title)).replace("|", "/")
