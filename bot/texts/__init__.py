"""User-facing messages, Korean by default and English with BOT_LANGUAGE=en: the catalogue (`catalogue`) and
what renders from it (a text with its values, error notices with references, places in line, sizes, quotes)."""

from __future__ import annotations

import uuid

from bot.texts.catalogue import LANGUAGES, PANE_PROMPTS, REFERENCED, TERMINAL_ONLY, TEXTS, Language
from bot.texts.knowledge import KNOWLEDGE_TEXTS

TEXTS.update(KNOWLEDGE_TEXTS)  # the catalogue's workspace-knowledge texts, kept in their own module for its length

__all__ = [
    "LANGUAGES",
    "PANE_PROMPTS",
    "TERMINAL_ONLY",
    "Language",
    "all_keys",
    "error_text",
    "human_size",
    "loading_messages",
    "object_particle",
    "persona_forms",
    "quote_of",
    "raw",
    "reference",
    "text",
    "waiting_line",
    "with_reference",
]


def all_keys() -> list[str]:
    """Every text in the catalogue."""
    return list(TEXTS)


def text(key: str, language: Language = "ko", **values: object) -> str:
    """One message in the chosen language, with its placeholders filled."""
    return TEXTS[key][language].format(**values)


def raw(key: str, language: Language) -> str:
    """A text before its placeholders are filled (for the catalogue's own checks)."""
    return TEXTS[key][language]


def reference(seed: str = "") -> str:
    """A short id a user can quote and an operator can grep for: the first 8 characters of a question id (whose
    log lines carry it whole), or a fresh one for a failure that has no question."""
    return (seed or uuid.uuid4().hex)[:8]


def with_reference(notice: str, ref: str, language: Language) -> str:
    """A notice with the reference the operator finds in the logs."""
    return f"{notice} {text('reference', language, ref=ref)}"


def human_size(size: int) -> str:
    """A byte count as people read it: 512 B, 3.2 KB, 1.5 MB."""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.1f} KB".replace(".0 ", " ")
    return f"{size / 1_000_000:.1f} MB".replace(".0 ", " ")


def loading_messages(language: Language) -> list[str]:
    """The rotating lines Slack shows under its status while an answer is prepared."""
    return text("loading_messages", language).split("|")


def persona_forms(command: str, language: Language) -> dict[str, str]:
    """How to show, set and clear a channel's persona, in the command's words (`/kullm-설정 페르소나 보기`)."""
    persona = f"/{command.lstrip('/')} {text('cmd_persona', language)}"
    instructions = text("cmd_instructions", language)
    return {
        "show": f"{persona} {text('cmd_show', language)}",
        "set": f"{persona} {text('cmd_set', language)} {instructions}",
        "clear": f"{persona} {text('cmd_clear', language)}",
    }


def object_particle(word: str) -> str:
    """을 after a final consonant (받침), 를 after a vowel: 「스레드 요약을」, 「검사를」."""
    last = next((c for c in reversed(word) if "가" <= c <= "힣"), "")
    return "을" if last and (ord(last) - ord("가")) % 28 else "를"


def quote_of(user: str, question: str, task: str, language: Language, *, slack: bool = False) -> str:
    """The line an adapter posts for what someone asked: a question quoted, a task (a summary, a translation,
    proofreading) said as the request it is."""
    suffix = "_slack" if slack else ""
    if task == "ask":
        return text(f"asked_by{suffix}", language, user=user, question=question)
    label = text(f"task_{task}", language)
    return text(f"requested_by{suffix}", language, user=user, task=label, particle=object_particle(label))


def waiting_line(ahead: int, language: Language = "ko") -> str:
    """What a queued question shows on every surface: thinking when nobody is ahead, else its place in line."""
    if ahead <= 0:
        return text("thinking", language)
    return text("waiting_turn", language, ahead=ahead, questions="question" if ahead == 1 else "questions")


def error_text(code: str, language: Language = "ko", ref: str = "") -> str:
    """The message for an `error` event code; with `ref`, where the operator's side failed, the reference to quote."""
    key = {"too_long": "too_long_tokens", "overloaded": "busy"}.get(code, code)
    key = key if key in TEXTS and key not in TERMINAL_ONLY else "failed"
    notice = text(key, language)
    return with_reference(notice, ref, language) if ref and key in REFERENCED else notice
