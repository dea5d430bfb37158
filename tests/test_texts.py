"""The text catalogue: every text in both languages, English free of Korean, one speech level in Korean, and no
operator's setting or log reading asked of a chat member."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest

from bot import texts
from bot.layout import FOOTER_ROOM, answer_footer
from bot.texts import LANGUAGES, PANE_PROMPTS, TERMINAL_ONLY, error_text, human_size, raw, text
from chatbus import Done

ROOT = Path(__file__).resolve().parent.parent
HANGUL = re.compile(r"[\uac00-\ud7a3\u3131-\u318e]")
# 합쇼체 (formal) endings at the end of a sentence, and 해요체 (polite) ones: a message uses one register.
HAPSYO = re.compile(r"(니다|니까|십시오|습니다)(?=[\s.!?…)」:*`]|$)")
HAEYO = re.compile(r"[요죠](?=[\s.!?…)」:*`]|$)")
# A setting's name (MAX_FILE_BYTES), or words that point a chat member at what only an operator can do.
OPERATOR_WORDS = re.compile(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b|worker|작업자|운영자에게 알려|tell the operator", re.I)
# Korean strings in bot/ outside the catalogue that no one reads as the bot's words: what people type to the bot,
# and the note the model reads inside 맥락.
NOT_SHOWN = {"요약", "요약해줘", "요약해 줘", "스레드 요약", "설정", "(앞의 메시지 ", "개는 너무 길어 빠졌습니다)"}


# Placeholders one language's grammar needs and the other's does not: English plurals, Korean particles.
GRAMMAR = {"questions", "particle"}


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def sample(template: str) -> str:
    """A text rendered with a value for each of its placeholders (numbers where a format needs one)."""
    values = {name: 1234 for name in fields(template)}
    return template.format(**values)


def speech_levels(message: str) -> set[str]:
    """Which registers a Korean message's sentences end in: 합쇼체, 해요체."""
    levels = set()
    if HAPSYO.search(message):
        levels.add("합쇼체")
    if HAEYO.search(message):
        levels.add("해요체")
    return levels


def test_every_text_exists_in_both_languages_with_the_same_placeholders() -> None:
    for key in texts.all_keys():
        ko, en = raw(key, "ko"), raw(key, "en")
        assert ko and en, key
        assert fields(ko) ^ fields(en) <= GRAMMAR, key
        assert sample(ko) and sample(en)


def test_no_text_is_left_untranslated() -> None:
    """The same in both languages only where there are no words: a part number, a URL."""
    same = {key for key in texts.all_keys() if raw(key, "ko") == raw(key, "en")}
    assert same == {"part", "part_open", "redis_in_use"}, same


def test_english_mode_shows_no_korean() -> None:
    found = {key: sample(raw(key, "en")) for key in texts.all_keys() if HANGUL.search(raw(key, "en"))}
    assert not found, found
    for prompt in PANE_PROMPTS["en"]:
        assert not HANGUL.search(prompt["title"] + prompt["message"]), prompt
    for code in ("too_long", "expired", "cancelled", "overloaded", "failed"):
        assert not HANGUL.search(error_text(code, "en", "abcd1234")), code


def test_korean_texts_keep_one_speech_level() -> None:
    """해요체 everywhere: no sentence of any Korean text ends in 합쇼체."""
    mixed = {key: sample(raw(key, "ko")) for key in texts.all_keys() if "합쇼체" in speech_levels(raw(key, "ko"))}
    assert not mixed, mixed
    assert "합쇼체" not in speech_levels(error_text("failed", "ko", "abcd1234"))


def test_the_speech_level_check_finds_a_mixed_message() -> None:
    assert speech_levels("🐢 질문이 너무 잦습니다. 1분에 5개까지 물어볼 수 있어요.") == {"합쇼체", "해요체"}
    assert speech_levels("🐢 질문이 너무 잦아요. 1분에 5개까지 물어볼 수 있어요.") == {"해요체"}
    assert speech_levels("❌ 파일이 너무 큽니다 (3 MB).") == {"합쇼체"}


@pytest.mark.parametrize("language", LANGUAGES)
def test_chat_members_are_never_told_about_settings_workers_or_operators(language: texts.Language) -> None:
    """A chat member can neither change settings nor read logs: what they read says what happened and what they can
    do; where the cause is on the operator's side, a reference the operator finds in the logs."""
    for key in texts.all_keys():
        if key in TERMINAL_ONLY:
            continue
        assert not OPERATOR_WORDS.search(raw(key, language)), (key, raw(key, language))
    for code in ("failed", "timeout", "unavailable", "given_up"):
        assert "abcd1234" in error_text(code, language, "abcd1234"), code
    assert "abcd1234" not in error_text("too_long", language, "abcd1234"), "the asker's own doing needs no reference"


def test_sizes_read_as_people_say_them() -> None:
    assert [human_size(n) for n in (512, 1000, 200_000, 3_200_000)] == ["512 B", "1 KB", "200 KB", "3.2 MB"]


def test_no_korean_text_is_written_outside_the_catalogue() -> None:
    """Every string a person reads lives in bot/texts/catalogue.py, side by side in both languages: a Korean string
    literal anywhere else in bot/ (docstrings and comments aside) is one English mode would show untranslated."""
    stray = []
    for path in sorted((ROOT / "bot").rglob("*.py")):
        if path.parent == ROOT / "bot" / "texts":  # the catalogue, and the Korean grammar its renderer applies
            continue
        if path == ROOT / "bot" / "knowledge" / "analyzer.py":  # Korean morphemes and request words it reads, unshown
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docstrings:
                continue
            if HANGUL.search(node.value) and node.value not in NOT_SHOWN:
                stray.append(f"{path.name}:{node.lineno}: {node.value[:40]!r}")
    assert not stray, stray


def test_english_mode_renders_english_everywhere() -> None:
    assert text("waiting_turn", "en", ahead=2, questions="questions") == "⏳ Waiting for your turn… (2 questions ahead)"
    assert text("cmd_settings", "en") == "kullm-settings" and text("cmd_question", "en") == "question"


def test_the_longest_footer_fits_the_room_every_message_keeps_for_it() -> None:
    """The footer (the model, the time, and where 맥락 was cut, that too) never pushes an answer's last part past the
    platform's limit: the layout keeps FOOTER_ROOM characters for it in every part."""
    done = Done(
        text="…",
        finish_reason="stop",
        prompt_tokens=1,
        completion_tokens=1,
        queued_s=1000.0,
        generate_s=234.5,
        model="someone/" + "a-very-long-model-name-" * 4,
        context_cut=True,
    )
    for language in LANGUAGES:
        footer = answer_footer(done, language)
        assert len(footer) <= FOOTER_ROOM and footer.endswith(text("context_cut_short", language)), footer
