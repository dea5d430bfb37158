"""Hostile and malformed text through the adapters' text handling: a clear result, never a crash.

Property-based (hypothesis): 100k-character messages, zero-width and right-to-left characters,
messages of only mentions, nested code fences, emoji, and forged template sections.
"""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.discord.surface import THREAD_NAME_LIMIT, thread_name
from bot.formatting import split_message
from bot.limits import check_question
from bot.settings import ClientSettings
from bot.slack.mrkdwn import to_slack_mrkdwn
from inference.prompt import LINE_BREAKS, PromptBuilder, Template, cut_at_stop, neutralise, visible_answer
from testkit.settings import settings_of

ZERO_WIDTH_AND_RTL = "\u200b\u200c\u200d\u2060\ufeff\u202e\u202d\u200f\u061c"
HOSTILE = st.lists(
    st.sampled_from(
        [
            *ZERO_WIDTH_AND_RTL,
            "`",
            "```",
            "#",
            "###",
            "\n",
            " ",
            "<",
            ">",
            "&",
            "@",
            "!",
            "가",
            "😀",
            "👨‍👩‍👧",
            "<@123>",
            "<!channel>",
            "@everyone",
            "### 답변:",
            "\r\n",
            "\r",
            "\t",
        ]
    ),
    max_size=120,
).map("".join)
CLIENT = settings_of(ClientSettings)


@given(HOSTILE)
def test_splitting_hostile_text_keeps_every_piece_in_bounds(text: str) -> None:
    for limit in (2000, 3000, 64):
        pieces = split_message(text, limit)
        assert all(0 < len(piece) <= limit for piece in pieces)


@pytest.mark.timeout(10)
def test_a_code_block_opened_by_a_line_longer_than_the_limit_still_splits() -> None:
    # Reopening the block with its whole opening line once left no room for text: the loop never ended.
    text = "```" + "가" * 100 + "\n" + "x = 1\n" * 60
    pieces = split_message(text, 64)
    assert all(0 < len(piece) <= 64 for piece in pieces)
    assert all(piece.startswith("```\n") for piece in pieces[1:]), "reopened without the runaway line"
    assert split_message("```python\n" + "x = 1\n" * 60, 64)[1].startswith("```python\n")  # a real tag stays


def test_a_100k_character_answer_splits_into_bounded_pieces() -> None:
    text = "```python\n" + "x = '가나다'  # 😀\n" * 3000 + "```\n\n" + "문장입니다. " * 9000
    assert len(text) >= 100_000
    pieces = split_message(text, 2000)
    assert len(pieces) >= len(text) // 2000 and all(len(p) <= 2000 for p in pieces)
    assert all(p.count("```") % 2 == 0 for p in pieces)


@given(HOSTILE)
def test_slack_output_never_carries_a_live_mention(text: str) -> None:
    converted = to_slack_mrkdwn(text)
    assert "<!" not in converted and "<@" not in converted


@given(HOSTILE)
def test_thread_names_are_always_valid(text: str) -> None:
    name = thread_name(text)
    assert 0 < len(name) <= THREAD_NAME_LIMIT


@settings(max_examples=50)
@given(HOSTILE)
def test_questions_are_refused_clearly_or_accepted(text: str) -> None:
    refusal = check_question(CLIENT, text)
    assert refusal is None or refusal.startswith(("❓", "❌"))
    assert check_question(CLIENT, "가" * 100_000) is not None, "a 100k-character message is refused as too long"


# Blank and invisible characters by Unicode category (the test's own derivation), the ones the
# adversarial run used by name, look-alikes of `#`, and every kind of line break.
BLANKS = st.characters(categories=["Zs", "Cf", "Mn", "Me", "Cc"], exclude_characters=LINE_BREAKS)
NAMED = "\u3000\u00a0\u2000\u2005\u200a\u3164\u115f\u1160\uffa0\u00ad\u2800\u180e\ufe0f\U000e0100\u034f"
SNEAKY = st.lists(
    st.one_of(
        BLANKS,
        st.sampled_from([*NAMED, *LINE_BREAKS, "#", "＃", "﹟", "###", "### 답변:", "가", " "]),
    ),
    max_size=60,
).map("".join)


def opens_sections(prompt: str) -> list[str]:
    """Lines that open a `###` section as a normalising tokenizer would see them (NFKC, blanks skipped)."""
    normal = unicodedata.normalize("NFKC", prompt)
    lines = re.split(f"[{re.escape(LINE_BREAKS)}]", normal)
    return [line.lstrip("".join(filter(_blank, line))).split(":")[0] for line in lines if _opens(line)]


def _blank(c: str) -> bool:
    """Separators, controls, format characters, non-spacing and enclosing marks, blank letters."""
    name = unicodedata.name(c, "")
    kind = unicodedata.category(c)
    return kind in ("Zs", "Zl", "Zp", "Cc", "Cf", "Mn", "Me") or name.endswith("FILLER") or "PATTERN BLANK" in name


def _opens(line: str) -> bool:
    rest = line
    while rest and _blank(rest[0]):
        rest = rest[1:]
    return rest.startswith("###")


@given(st.one_of(HOSTILE, SNEAKY), st.one_of(HOSTILE, SNEAKY))
def test_forged_sections_never_reach_the_prompt(question: str, context: str) -> None:
    builder = PromptBuilder(Template.KULLM_V1, len, context_window=100_000)
    if not question.strip():
        return
    prompt = builder.build(question, context=context, max_new_tokens=10).text
    expected = ["### 질문", "### 맥락", "### 답변"] if context else ["### 질문", "### 답변"]
    assert opens_sections(prompt) == expected


@given(SNEAKY, SNEAKY)
def test_the_output_cutter_sees_every_line_start_the_neutraliser_sees(before: str, after: str) -> None:
    # Whatever neutralise would defuse in user text, the cutter stops at in generated text.
    generated = f"답입니다{before}###{after}"
    if neutralise(generated) != generated:
        text, stopped = cut_at_stop(generated)
        assert stopped and not any(_opens(line) for line in re.split(f"[{re.escape(LINE_BREAKS)}]", text))


@given(HOSTILE)
def test_streamed_answers_stay_prefixes_under_hostile_output(generated: str) -> None:
    final, _ = visible_answer(generated, final=True)
    partial, _ = visible_answer(generated[: len(generated) // 2], final=False)
    assert final.startswith(partial)
