"""The checks every front-end makes before a question may be enqueued (the terminal and the adapters)."""

from __future__ import annotations

from bot.settings import ClientSettings
from bot.texts import text
from chatbus.messages import MAX_CONTEXT_CHARS
from chatbus.visible import is_blank


def check_question(settings: ClientSettings, question: str, context: str = "") -> str | None:
    """The refusal message for a question no worker should see, or None.

    A question of only blank or invisible characters is empty. The question is held to MAX_QUESTION_CHARS; its
    맥락 (a replied-to message, a file) may be longer, up to the contract's ceiling: the worker refuses what the
    model's window cannot hold.
    """
    language = settings.bot_language
    if is_blank(question):
        return text("empty", language)
    if len(question) > settings.max_question_chars:
        return text("too_long", language, length=len(question), limit=settings.max_question_chars)
    if len(context) > MAX_CONTEXT_CHARS:
        return text("context_too_long", language, length=len(context), limit=MAX_CONTEXT_CHARS)
    return None
