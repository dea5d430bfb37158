"""Splitting answers at message limits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.formatting import split_message
from testkit.engines import long_code_answer


def test_a_4500_character_answer_becomes_three_messages_with_fences_intact() -> None:
    text = long_code_answer()
    assert len(text) == 4500
    pieces = split_message(text, 2000)
    assert len(pieces) == 3
    assert all(len(p) <= 2000 for p in pieces)
    for piece in pieces:
        assert piece.count("```") % 2 == 0, "every piece closes the code blocks it opens"
    joined = "".join(pieces)
    assert joined.count("print('줄 59')") == text.count("print('줄 59')")


def test_reopened_fence_keeps_its_language() -> None:
    code = "```python\n" + "\n".join(f"x = {i}" for i in range(400)) + "\n```"
    pieces = split_message(code, 500)
    assert len(pieces) > 3
    assert all(p.startswith("```python\n") for p in pieces)
    assert all(p.endswith("```") for p in pieces)


def test_prefers_paragraph_then_sentence_boundaries() -> None:
    text = "첫 문단입니다.\n\n" + "가" * 50
    assert split_message(text, 40) == ["첫 문단입니다.", "가" * 36, "가" * 14]
    sentences = "하나입니다. 둘입니다. 셋입니다. 넷입니다."
    assert split_message(sentences, 20) == ["하나입니다. 둘입니다.", "셋입니다. 넷입니다."]


def test_short_text_is_one_piece() -> None:
    assert split_message("  짧은 답  ", 2000) == ["짧은 답"]
    assert split_message("", 2000) == []


@given(st.text(alphabet="가나 \n.`pyx", max_size=3000), st.integers(40, 400))
def test_every_piece_fits_and_no_text_is_lost(text: str, limit: int) -> None:
    pieces = split_message(text, limit)
    assert all(len(p) <= limit for p in pieces)
    squeezed = "".join("".join(pieces).split()).replace("`", "")
    assert squeezed == "".join(text.split()).replace("`", "")


def test_slack_mentions_in_model_output_are_neutralised() -> None:
    from bot.slack.mrkdwn import to_slack_mrkdwn

    text = to_slack_mrkdwn("<!channel> <!here> <!everyone> <@U123> <!subteam^S1> a & b")
    assert "<" not in text and ">" not in text
    assert text == "&lt;!channel&gt; &lt;!here&gt; &lt;!everyone&gt; &lt;@U123&gt; &lt;!subteam^S1&gt; a &amp; b"


def test_markdown_becomes_slack_mrkdwn() -> None:
    from bot.slack.mrkdwn import to_slack_mrkdwn

    markdown = "## 제목\n**굵게** 와 ~~취소~~, [링크](https://example.com)\n```python\nx = a**2 < b\n```\n`**코드**`"
    assert to_slack_mrkdwn(markdown) == (
        "*제목*\n*굵게* 와 ~취소~, <https://example.com|링크>\n```python\nx = a**2 &lt; b\n```\n`**코드**`"
    )
