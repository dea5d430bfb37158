"""Splitting long answers at a platform's message limit without breaking code blocks."""

from __future__ import annotations

import re

FENCE = "```"
_SENTENCE_END = re.compile(r"(?<=[.!?。])\s")
# A cut earlier than this fraction of the budget wastes too much of a message.
MIN_FILL = 0.3
# A piece must hold a closing and a reopening fence line around some text.
MIN_LIMIT = 16
# What a reopened code block keeps of its opening line: the language tag, when it looks like one.
_LANGUAGE = re.compile(r"[\w+#.-]{1,20}")


def split_message(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at paragraphs, lines, sentences or spaces.

    A code block open at a cut is closed at the end of that piece and reopened (with its
    language) at the start of the next, so every piece renders on its own.
    """
    if limit < MIN_LIMIT:
        raise ValueError("limit too small to split with code fences")
    pieces: list[str] = []
    fence: str | None = None  # the fence line open at the start of `rest`
    rest = text.strip()
    while rest:
        prefix = _reopen(fence, limit)
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
    return max(budget, 1)


def _after(window: str, separator: str) -> int:
    at = window.rfind(separator)
    return at + len(separator) if at >= 0 else 0


def _reopen(fence: str | None, limit: int) -> str:
    """The line that reopens a code block cut at the end of the last piece: the fence and its language only.

    The opening line itself can be anything a model wrote after the backticks, as long as the whole
    piece; a language tag that would leave too little room is dropped.
    """
    if fence is None:
        return ""
    language = fence[len(FENCE) :].strip()
    if not _LANGUAGE.fullmatch(language) or limit - len(FENCE) - len(language) - 1 < MIN_LIMIT // 2 + len(FENCE) + 1:
        language = ""
    return f"{FENCE}{language}\n"


def _fence_state(open_fence: str | None, piece: str) -> str | None:
    """The fence line still open after `piece`, given the one open before it."""
    for line in piece.split("\n"):
        stripped = line.strip()
        if stripped.startswith(FENCE):
            open_fence = None if open_fence else stripped
    return open_fence
