"""Prompt templates of KULLM and the cleaning of generated answers.

The seed's KULLM v1 template is the default::

    ### 질문: {question}\\n\\n### 맥락: {context}\\n\\n### 답변:

Thread history goes into 맥락 (oldest turns dropped first to fit the context window),
user text cannot open a template section, and generation stops at a new `###` section.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chatbus import Turn
from chatbus.visible import is_invisible
from inference.errors import PromptTooLong

# Every character a tokenizer or a reader may take as a line break.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# Characters that NFKC turns into `#` (a tokenizer may normalise before it splits).
HASHES = "".join(sorted(c for c in map(chr, range(0x10000)) if unicodedata.normalize("NFKC", c) == "#"))
# What replaces them in user text: looks like a hash, and NFKC leaves it alone.
SAFE_HASH = "\u266f"  # ♯


def _invisible(c: str) -> bool:
    """Blank or invisible (`chatbus.visible`), line breaks aside: they are matched on their own."""
    return c not in LINE_BREAKS and is_invisible(c)


def _char_class(chars: Sequence[str]) -> str:
    """A regex character class for `chars`, as ranges."""
    codes = sorted(map(ord, chars))
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges)


# Planes 0-2 and 14 (tags, variation selectors supplement) hold every such character assigned today.
_PLANES = (*range(0x30000), *range(0xE0000, 0xE1000))
INVISIBLE = "".join(c for c in map(chr, _PLANES) if _invisible(c))
_BREAK, _BLANK, _HASH = f"[{_char_class(LINE_BREAKS)}]", f"[{_char_class(INVISIBLE)}]", f"[{_char_class(HASHES)}]"
# A line opening a template section: a line start, anything invisible, three hash-like characters.
_FORGED_SECTION = re.compile(rf"(^|{_BREAK})({_BLANK}*)({_HASH}{{3,}})")
# The same in generated text: the model (or a prompt it echoes) starting a new section.
_SECTION = re.compile(rf"(?:^|{_BREAK}){_BLANK}*{_HASH}{{3}}")
# Held back while streaming: a trailing line that may still grow into `###`.
_PARTIAL_SECTION = re.compile(rf"(?:^|{_BREAK}){_BLANK}*{_HASH}{{0,2}}$")

KULLM_V2_PREAMBLE_INPUT = (
    "아래는 작업을 설명하는 명령어와 추가 컨텍스트를 제공하는 입력이 짝을 이루는 예제입니다. "
    "요청을 적절히 완료하는 응답을 작성하세요."
)
KULLM_V2_PREAMBLE = "아래는 작업을 설명하는 명령어입니다. 요청을 적절히 완료하는 응답을 작성하세요."


class Template(StrEnum):
    """Prompt formats the worker can speak."""

    KULLM_V1 = "kullm-v1"
    KULLM_V2 = "kullm-v2"
    CHAT = "chat"


def neutralise(text: str) -> str:
    """Make user text unable to open a template section: a leading `###` (or look-alike) becomes `♯♯♯`.

    Also after any line break and any invisible prefix, and still so after NFKC normalisation.
    """
    return _FORGED_SECTION.sub(lambda m: m.group(1) + m.group(2) + SAFE_HASH * len(m.group(3)), text)


def render_kullm_v1(question: str, context: str = "") -> str:
    """The seed's template, with 맥락 only when there is context."""
    if context:
        return f"### 질문: {question}\n\n### 맥락: {context}\n\n### 답변:"
    return f"### 질문: {question}\n\n### 답변:"


def render_kullm_v2(question: str, context: str = "") -> str:
    """KULLM v2's Alpaca-style template (명령어 / 입력 / 응답)."""
    if context:
        return f"{KULLM_V2_PREAMBLE_INPUT}\n\n### 명령어:\n{question}\n\n### 입력:\n{context}\n\n### 응답:\n"
    return f"{KULLM_V2_PREAMBLE}\n\n### 명령어:\n{question}\n\n### 응답:\n"


def history_context(turns: Sequence[Turn], context: str = "") -> str:
    """Past turns, oldest first, followed by the user's own 맥락."""
    parts = [f"이전 질문: {t.question}\n이전 답변: {t.answer}" for t in turns]
    if context:
        parts.append(context)
    return "\n\n".join(parts)


def cut_at_stop(text: str) -> tuple[str, bool]:
    """Text before the first line that opens a `###` section, and whether one was found."""
    match = _SECTION.search(text)
    if match:
        return text[: match.start()], True
    return text, False


def visible_answer(generated: str, final: bool) -> tuple[str, bool]:
    """The part of the generated text that may be shown, and whether a stop marker ended it.

    While streaming (`final` false) a trailing partial `#`/`##` line and trailing whitespace
    are held back, so the streamed text is always a prefix of the final, trimmed answer.
    """
    text, stopped = cut_at_stop(generated)
    text = text.lstrip()
    if not final and not stopped:
        partial = _PARTIAL_SECTION.search(text)
        if partial:
            text = text[: partial.start()]
    return text.rstrip(), stopped


@dataclass(frozen=True)
class BuiltPrompt:
    """A rendered prompt and what fitting it into the window cost."""

    text: str
    tokens: int
    dropped_turns: int


class PromptBuilder:
    """Renders questions in the configured template within the token budget."""

    def __init__(
        self,
        template: Template,
        count_tokens: Callable[[str], int],
        context_window: int,
        chat_template: Callable[[list[dict[str, str]]], str] | None = None,
    ) -> None:
        if template is Template.CHAT and chat_template is None:
            raise ValueError("TEMPLATE=chat needs a tokenizer with a chat template")
        self.template = template
        self.count_tokens = count_tokens
        self.context_window = context_window
        self.chat_template = chat_template

    def build(
        self, question: str, *, context: str = "", history: Sequence[Turn] = (), max_new_tokens: int
    ) -> BuiltPrompt:
        """Render, dropping the oldest turns until prompt + `max_new_tokens` fit the window.

        Each turn is tokenised once: the newest turns whose token counts fit beside the prompt
        without history are kept, and the rendered result is counted to confirm (joins can merge
        tokens, so one turn more or less is tried at the edge). Not once per dropped turn: ten long
        turns would otherwise be tokenised fifty-five times.
        """
        budget = self.context_window - max_new_tokens
        question, context = neutralise(question), neutralise(context)
        turns = [Turn(question=neutralise(t.question), answer=neutralise(t.answer)) for t in history]
        total = self.count_tokens(self.render(question, context, []))
        if total > budget:
            raise PromptTooLong(total, budget)
        keep = 0
        for turn in reversed(turns):
            total += self.count_tokens(history_context([turn]) + "\n\n")
            if total > budget:
                break
            keep += 1
        return self._fit(question, context, turns, len(turns) - keep, budget)

    def _fit(self, question: str, context: str, turns: list[Turn], dropped: int, budget: int) -> BuiltPrompt:
        """The estimate `dropped`, corrected against the exact count of the rendered prompt."""
        text = self.render(question, context, turns[dropped:])
        tokens = self.count_tokens(text)
        while tokens > budget:  # the estimate kept one turn too many
            dropped += 1
            text = self.render(question, context, turns[dropped:])
            tokens = self.count_tokens(text)
        while dropped > 0:  # or one too few
            wider = self.render(question, context, turns[dropped - 1 :])
            wider_tokens = self.count_tokens(wider)
            if wider_tokens > budget:
                break
            dropped, text, tokens = dropped - 1, wider, wider_tokens
        return BuiltPrompt(text, tokens, dropped)

    def render(self, question: str, context: str, turns: Sequence[Turn]) -> str:
        """One prompt in the configured template, nothing dropped."""
        if self.template is Template.CHAT:
            assert self.chat_template is not None
            return self.chat_template(chat_messages(question, context, turns))
        render = render_kullm_v2 if self.template is Template.KULLM_V2 else render_kullm_v1
        return render(question, history_context(turns, context))


def chat_messages(question: str, context: str, turns: Sequence[Turn]) -> list[dict[str, str]]:
    """History and question as chat-template messages; 맥락 is put before the question."""
    messages: list[dict[str, str]] = []
    for turn in turns:
        messages.append({"role": "user", "content": turn.question})
        messages.append({"role": "assistant", "content": turn.answer})
    content = f"{context}\n\n{question}" if context else question
    messages.append({"role": "user", "content": content})
    return messages


def tokenizer_chat_template(tokenizer: Any) -> Callable[[list[dict[str, str]]], str] | None:
    """A renderer over the tokenizer's own chat template, or None when it has none."""
    if not getattr(tokenizer, "chat_template", None):
        return None

    def render(messages: list[dict[str, str]]) -> str:
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    return render
