"""Splitting long answers at a platform's message limit without breaking code blocks."""

from __future__ import annotations

import re

FENCE = "```"
_SENTENCE_END = re.compile(r"(?<=[.!?。])\s")
# A cut earlier than this fraction of the budget wastes too much of a message.
MIN_FILL = 0.3


def split_message(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at paragraphs, lines, sentences or spaces.

    A code block open at a cut is closed at the end of that piece and reopened (with its
    language) at the start of the next, so every piece renders on its own.
    """
    if limit < 16:
        raise ValueError("limit too small to split with code fences")
    pieces: list[str] = []
    fence: str | None = None  # the fence line open at the start of `rest`
    rest = text.strip()
    while rest:
        prefix = f"{fence}\n" if fence else ""
        budget = limit - len(prefix)
        if len(rest) <= budget:
            pieces.append(prefix + rest)
            break
        cut = _cut(rest, budget - len(FENCE) - 1)
        piece, rest = rest[:cut].rstrip(), rest[cut:].lstrip("\n")
        fence_after = _fence_state(fence, piece)
        pieces.append(prefix + piece + (f"\n{FENCE}" if fence_after else ""))
        fence = fence_after
    return pieces


def _cut(text: str, budget: int) -> int:
    """Where to end a piece: the best boundary that fills the piece well, else any boundary."""
    window = text[:budget]
    sentences = [m.end() for m in _SENTENCE_END.finditer(window)]
    candidates = [
        _after(window, "\n\n"),
        _after(window, "\n"),
        sentences[-1] if sentences else 0,
        _after(window, " "),
    ]
    for floor in (int(budget * MIN_FILL), 1):
        for at in candidates:
            if at >= floor:
                return at
    return budget


def _after(window: str, separator: str) -> int:
    at = window.rfind(separator)
    return at + len(separator) if at >= 0 else 0


def _fence_state(open_fence: str | None, piece: str) -> str | None:
    """The fence line still open after `piece`, given the one open before it."""
    for line in piece.split("\n"):
        stripped = line.strip()
        if stripped.startswith(FENCE):
            open_fence = None if open_fence else stripped
    return open_fence


_MD_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_MD_STRIKE = re.compile(r"~~(.+?)~~")
_MD_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*$", re.MULTILINE)
_MD_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")


def slack_escape(text: str) -> str:
    """Escape `&`, `<`, `>` as Slack requires; this also disarms `<!channel>`, `<!here>` and `<@U…>`."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_slack_mrkdwn(markdown: str) -> str:
    """Model output (Markdown) as Slack mrkdwn: escaped, with bold, strike, headings and links converted.

    Code blocks and inline code are escaped but otherwise left alone.
    """
    parts = re.split(r"(```.*?```|`[^`\n]+`)", markdown, flags=re.DOTALL)
    converted = []
    for i, part in enumerate(parts):
        part = slack_escape(part)
        if i % 2 == 0:  # outside code
            part = _MD_LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1)}>", part)
            part = _MD_BOLD.sub(lambda m: f"*{m.group(1) or m.group(2)}*", part)
            part = _MD_STRIKE.sub(r"~\1~", part)
            part = _MD_HEADING.sub(r"*\1*", part)
        converted.append(part)
    return "".join(converted)
