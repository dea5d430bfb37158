"""The checks every front-end makes before a question may be enqueued (the terminal and the adapters)."""

from __future__ import annotations

import logging

from bot.settings import ClientSettings
from bot.texts import Language, reference, text, with_reference
from chatbus import BusError, WritesRefused
from chatbus.messages import MAX_CONTEXT_CHARS, MAX_TASK_PARTS, Task
from chatbus.visible import is_blank

log = logging.getLogger(__name__)


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


# A task counts as one more question for every this many characters of its text (about a summary part's worth).
TASK_CHARS_PER_QUESTION = 4000


def work_units(task: Task, text: str) -> int:
    """What a question costs against a user's questions-a-minute: a plain one 1; a task (summary, translation,
    proofreading) 1 and one more per TASK_CHARS_PER_QUESTION of its text, at most MAX_TASK_PARTS, as its parts
    cost the workers in proportion."""
    if task == "ask":
        return 1
    return min(MAX_TASK_PARTS, 1 + len(text) // TASK_CHARS_PER_QUESTION)


def unavailable(exc: BusError, platform: str, language: Language) -> str:
    """The "cannot take questions now" notice with a reference; the cause (Redis unreachable, or refusing
    writes: OOM, READONLY…) goes to the log under that reference, not to the user."""
    ref = reference()
    why = exc.reason if isinstance(exc, WritesRefused) else exc
    log.warning("%s ref %s: Redis is unreachable or refuses writes (%s)", platform, ref, why)
    return with_reference(text("unavailable", language), ref, language)
