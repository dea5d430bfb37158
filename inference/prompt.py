"""Prompt templates of KULLM and the cleaning of generated answers.

The seed's KULLM v1 template is the default::

    ### 질문: {question}\\n\\n### 맥락: {context}\\n\\n### 답변:

Thread history goes into 맥락 (oldest turns dropped first to fit the context window),
user text cannot open a template section, and generation stops at a new `###` section.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
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


# A run of a chat template's own text is a role marker when it holds one of these (`[INST]`, `<<SYS>>`, `<|user|>`).
MARKER_BRACKETS = frozenset("<>[]{}|")
# Where a run of template text splits into markers and words: `<start_of_turn>user`, `<s>[INST]`.
_MARKER_EDGE = re.compile(r"(?<=[>\]}])(?=[\w<\[{])|(?<=\w)(?=[<\[{])")
# Put after the first character of a marker found in user text: a plain space, which no tokenizer we serve drops.
DEFUSE = " "


@functools.cache
def _lookalikes() -> dict[str, str]:
    """Character → every character NFKC turns into it (itself included), for the ASCII a marker is made of."""
    found: dict[str, set[str]] = {chr(c): {chr(c)} for c in range(0x21, 0x7F)}
    for c in map(chr, _PLANES):
        folded = unicodedata.normalize("NFKC", c)
        if folded in found:
            found[folded].add(c)
    return {c: "".join(sorted(alike)) for c, alike in found.items()}


class Markers:
    """The strings that give a prompt its structure and must never come from a user: the tokenizer's special and
    added tokens (`</s>`, `<|endoftext|>`) and the role markers written by its chat template (`[INST]`, `<<SYS>>`).

    `defuse` breaks each one found in user text with a space after its first character (`< /s>`), so the
    tokenizer reads plain characters where a special id or a role would be. Matched regardless of case and
    through NFKC look-alikes (a tokenizer may normalise before it matches); repeated until none is left, since
    a space breaks a marker but never makes one (markers hold no blanks). `###` sections are `neutralise`'s.
    """

    def __init__(self, markers: Iterable[str] = ()) -> None:
        self.markers = tuple(sorted({m for m in markers if len(m) > 1 and not any(c.isspace() for c in m)}))
        alike = _lookalikes() if self.markers else {}
        alternatives = [
            "".join(f"[{_char_class(alike[c])}]" if c in alike else re.escape(c) for c in marker)
            for marker in sorted(self.markers, key=len, reverse=True)
        ]
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None

    def defuse(self, text: str) -> str:
        """`text` with every marker broken; text holding none is returned as it is."""
        if self._pattern is None:
            return text
        while True:
            defused = self._pattern.sub(lambda m: m.group(0)[0] + DEFUSE + m.group(0)[1:], text)
            if defused == text:
                return text
            text = defused


NO_MARKERS = Markers()


def tokenizer_markers(tokenizer: Any, chat_template: Callable[[list[dict[str, str]]], str] | None) -> Markers:
    """The markers of this tokenizer and chat template, read from them (not from a list kept by hand)."""
    specials = {str(token) for token in getattr(tokenizer, "all_special_tokens", ())}
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    specials |= {str(getattr(token, "content", token)) for token in added.values()}
    found = set(specials)
    if chat_template is not None:
        for piece in _scaffolding(chat_template):
            for run in piece.split():
                parts = [part for cut in _split_at(run, specials) for part in _MARKER_EDGE.split(cut)]
                found |= {part for part in parts if MARKER_BRACKETS & set(part) and any(c.isalnum() for c in part)}
    return Markers(found)


def _split_at(text: str, separators: set[str]) -> list[str]:
    if not separators:
        return [text]
    return re.split("|".join(map(re.escape, sorted(separators, key=len, reverse=True))), text)


def _scaffolding(chat_template: Callable[[list[dict[str, str]]], str]) -> list[str]:
    """The text a chat template writes around the messages: rendered with placeholder contents, split at them."""
    placeholder = "\ue000{}\ue001"
    roles = ("system", "user", "assistant", "user")
    conversations = [
        [{"role": r, "content": placeholder.format(i)} for i, r in enumerate(turns)] for turns in (roles, roles[1:])
    ]
    pieces: list[str] = []
    for messages in conversations:
        try:  # some templates refuse a system message: the conversation without one still shows the rest
            rendered = chat_template(messages)
        except Exception:  # a template's own refusal (jinja raise_exception) may be any exception
            continue
        pieces += re.split("\ue000\\d+\ue001", rendered)
    return pieces


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
    context_cut: bool = False  # only the beginning of 맥락 fitted


# Ends a 맥락 cut to fit, so the model reads it as unfinished.
CUT_MARK = " …"
# A token spans at most this many characters in any tokenizer we serve: bounds the search for how much 맥락 fits.
MAX_CHARS_PER_TOKEN = 16


class PromptBuilder:
    """Renders questions in the configured template within the token budget.

    What goes in, by priority: the system prompt with the channel's instructions and the question (refused
    when they alone do not fit), then 맥락 (cut to what is left, `context_cut`), then past turns, newest
    first (the oldest dropped). Every count is of the rendered prompt in the model's own tokens.
    """

    def __init__(
        self,
        template: Template,
        count_tokens: Callable[[str], int],
        context_window: int,
        chat_template: Callable[[list[dict[str, str]]], str] | None = None,
        system_prompt: str | None = None,
        markers: Markers = NO_MARKERS,
    ) -> None:
        if template is Template.CHAT and chat_template is None:
            raise ValueError("TEMPLATE=chat needs a tokenizer with a chat template")
        self.template = template
        self.count_tokens = count_tokens
        self.context_window = context_window
        self.chat_template = chat_template
        self.system_prompt = system_prompt
        self.markers = markers

    def user_text(self, text: str) -> str:
        """Text that came from a user (question, 맥락, files, history, instructions), unable to act as the
        template's structure: no `###` section, no special token, no role marker."""
        return self.markers.defuse(neutralise(text))

    def system(self, instructions: str = "") -> str:
        """The system prompt and a channel's instructions (its persona), as one text; may be empty."""
        return "\n\n".join(part for part in (self.system_prompt, self.user_text(instructions.strip())) if part)

    def build(
        self,
        question: str,
        *,
        context: str = "",
        history: Sequence[Turn] = (),
        instructions: str = "",
        max_new_tokens: int,
    ) -> BuiltPrompt:
        """Render within prompt + `max_new_tokens` <= the window: 맥락 cut to fit, the oldest turns dropped.

        Each turn is tokenised once: the newest turns whose token counts fit beside the prompt
        without history are kept, and the rendered result is counted to confirm (joins can merge
        tokens, so one turn more or less is tried at the edge). Not once per dropped turn: ten long
        turns would otherwise be tokenised fifty-five times.
        """
        budget = self.context_window - max_new_tokens
        system = self.system(instructions)
        question, context = self.user_text(question), self.user_text(context)
        turns = [Turn(question=self.user_text(t.question), answer=self.user_text(t.answer)) for t in history]
        alone = self.count_tokens(self.render(question, "", [], system))
        if alone > budget:
            raise PromptTooLong(alone, budget)
        context, cut, total = self._fit_context(question, context, system, budget) if context else ("", False, alone)
        keep = 0
        for turn in reversed(turns):
            total += self.count_tokens(history_context([turn]) + "\n\n")
            if total > budget:
                break
            keep += 1
        built = self._fit(question, context, system, turns, len(turns) - keep, budget)
        return BuiltPrompt(built.text, built.tokens, built.dropped_turns, context_cut=cut)

    def _fit_context(self, question: str, context: str, system: str, budget: int) -> tuple[str, bool, int]:
        """맥락 as it is when it fits; else its longest beginning that does (ending in `CUT_MARK`); whether it
        was cut, and the prompt's tokens with it."""
        tokens = self.count_tokens(self.render(question, context, [], system))
        if tokens <= budget:
            return context, False, tokens
        fitted, fitted_tokens = "", self.count_tokens(self.render(question, "", [], system))
        low, high = 0, min(len(context), budget * MAX_CHARS_PER_TOKEN)  # `low` characters fit; past `high`, none
        while low < high:
            middle = (low + high + 1) // 2
            kept = context[:middle].rstrip()
            candidate = kept + CUT_MARK if kept else ""
            tokens = self.count_tokens(self.render(question, candidate, [], system))
            if tokens <= budget:
                low, fitted, fitted_tokens = middle, candidate, tokens
            else:
                high = middle - 1
        return fitted, True, fitted_tokens

    def _fit(
        self, question: str, context: str, system: str, turns: list[Turn], dropped: int, budget: int
    ) -> BuiltPrompt:
        """The estimate `dropped`, corrected against the exact count of the rendered prompt."""
        text = self.render(question, context, turns[dropped:], system)
        tokens = self.count_tokens(text)
        while tokens > budget:  # the estimate kept one turn too many
            dropped += 1
            text = self.render(question, context, turns[dropped:], system)
            tokens = self.count_tokens(text)
        while dropped > 0:  # or one too few
            wider = self.render(question, context, turns[dropped - 1 :], system)
            wider_tokens = self.count_tokens(wider)
            if wider_tokens > budget:
                break
            dropped, text, tokens = dropped - 1, wider, wider_tokens
        return BuiltPrompt(text, tokens, dropped)

    def render(self, question: str, context: str, turns: Sequence[Turn], system: str = "") -> str:
        """One prompt in the configured template, nothing dropped; `system` goes in the chat template's system
        message, or at the head of 맥락 for the KULLM v1/v2 templates (they have no system role)."""
        if self.template is Template.CHAT:
            assert self.chat_template is not None
            return self.chat_template(chat_messages(question, context, turns, system))
        render = render_kullm_v2 if self.template is Template.KULLM_V2 else render_kullm_v1
        return render(question, "\n\n".join(part for part in (system, history_context(turns, context)) if part))


def chat_messages(question: str, context: str, turns: Sequence[Turn], system: str = "") -> list[dict[str, str]]:
    """System prompt, history and question as chat-template messages; 맥락 is put before the question."""
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
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


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """A prompt's length in the tokenizer's tokens, as the engines feed it (special tokens only where written)."""

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    return count_tokens
