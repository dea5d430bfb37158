"""The checks every front-end makes before a question may be enqueued (the terminal and the adapters)."""

from __future__ import annotations

from bot.settings import ClientSettings
from bot.texts import text


def check_question(settings: ClientSettings, question: str, context: str = "") -> str | None:
    """The refusal message for a question no worker should see, or None."""
    language = settings.bot_language
    if not question.strip():
        return text("empty", language)
    length = len(question) + len(context)
    if length > settings.max_question_chars:
        return text("too_long", language, length=length, limit=settings.max_question_chars)
    return None
