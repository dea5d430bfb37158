"""Work on text already in the workspace: summarise a thread, translate, proofread.

Each task is prompted in the worker's template like a question: the task in 질문, the text in 맥락.
Text longer than one prompt can hold is split and run in passes, every request of a pass in the
same batch:

- translate / proofread: the text is split on sentence boundaries into chunks whose output fits
  MAX_NEW_TOKENS; the chunks' outputs are joined back in order, and stream in order as they come.
- summarize: a thread that fits is summarised at once; a longer one map-reduce style: its messages
  are split into parts (never inside a message unless one alone is too long), each part summarised,
  then the parts' summaries merged in order (in groups, again, when even they do not fit); only the
  final merge streams, the passes before it report their progress.

A `TaskRun` is engine-agnostic: the worker hands its requests to the engine and feeds it the
updates; request ids are the question id, `~`, the pass and the chunk (`q1~0.3`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from chatbus import Question
from chatbus.messages import MAX_TASK_PARTS, FinishReason
from inference.engine import GenerationRequest, GenerationUpdate
from inference.errors import PromptTooLong
from inference.prompt import PromptBuilder

SEPARATOR = "~"  # between a question id and its pass and chunk in a request id: never in a question id
SUMMARIZE = "다음 대화를 요약해 주세요. 누가 무엇을 말했는지 살려 주세요."
SUMMARIZE_PART = "다음은 긴 대화의 한 부분입니다. 이 부분을 요약해 주세요. 누가 무엇을 말했는지 살려 주세요."
MERGE = "다음은 한 대화를 앞에서부터 부분별로 요약한 것입니다. 순서를 지켜 하나의 요약으로 합쳐 주세요."
TRANSLATE_TO_ENGLISH = "다음 글을 영어로 번역해 주세요. 번역한 글만 쓰세요."
TRANSLATE_TO_KOREAN = "다음 글을 한국어로 번역해 주세요. 번역한 글만 쓰세요."
PROOFREAD = "다음 글의 맞춤법과 띄어쓰기를 바로잡아 주세요. 고친 글만 쓰세요."
# A chunk to translate or proofread holds at most this share of MAX_NEW_TOKENS: its output is about as long.
OUTPUT_SHARE = 0.75
# A part's summary is at most this many tokens (or MAX_NEW_TOKENS, if lower), so the merge has room.
PART_SUMMARY_TOKENS = 200
# A sentence ends at . ! ? … 。 (and closing quotes or brackets after them) before blanks, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?…。])[\"'”’)\]]*\s+|\n+")
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_LETTER = re.compile(r"[^\W\d_]")


def request_id(question_id: str, pass_no: int, chunk: int) -> str:
    return f"{question_id}{SEPARATOR}{pass_no}.{chunk}"


def question_of(request_id: str) -> str:
    """The question a request id belongs to (a plain question's request id is the question id itself)."""
    return request_id.partition(SEPARATOR)[0]


def translation_instruction(text: str) -> str:
    """Korean text goes to English; anything else to Korean."""
    letters = len(_LETTER.findall(text))
    return TRANSLATE_TO_ENGLISH if letters and len(_HANGUL.findall(text)) * 2 >= letters else TRANSLATE_TO_KOREAN


def sentences(text: str) -> list[str]:
    """`text` split after each sentence and line break; each piece keeps the blanks after it, so the
    pieces joined are `text` again."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return [p for p in pieces if p]


def chunks(units: list[str], fits: Callable[[str], bool]) -> list[str]:
    """Consecutive units joined greedily into the fewest chunks that each `fits`; a unit that does not fit
    alone is cut at the longest beginning that does (at least one character: the result is never stuck)."""
    out: list[str] = []
    current = ""
    queue = list(units)
    while queue:
        unit = queue.pop(0)
        if fits(current + unit):
            current += unit
            continue
        if current:
            out.append(current)
            current = ""
            queue.insert(0, unit)
            continue
        cut = _longest_fitting(unit, fits)
        out.append(unit[:cut])
        queue.insert(0, unit[cut:])
    if current:
        out.append(current)
    return out


def planned_chunks(
    units: list[str], count: Callable[[str], int], budget: int, fits: Callable[[str], bool]
) -> list[str]:
    """`chunks` in time linear in the text: each unit's tokens are counted once and summed greedily up to
    `budget`; each chunk is then checked once with `fits` (a join can merge tokens: one that does not fit is
    halved); a unit over `budget` alone is cut by its own characters per token. `chunks` would count every
    growing chunk again at each unit (96 s of CPU for one 200,000-character transcript)."""
    groups: list[list[str]] = []
    current: list[str] = []
    held = 0
    for unit in units:
        tokens = count(unit)
        if current and held + tokens > budget:
            groups.append(current)
            current, held = [], 0
        if tokens > budget:
            groups += [[piece] for piece in _pieces(unit, tokens, budget)]
            continue
        current.append(unit)
        held += tokens
    if current:
        groups.append(current)
    out: list[str] = []
    for group in groups:
        out += _fitting("".join(group), fits)
    return out


def _pieces(unit: str, tokens: int, budget: int) -> list[str]:
    """A unit too long alone, in pieces of about 90% of `budget` tokens by its own characters per token."""
    size = max(1, int(len(unit) * budget * 0.9 / tokens))
    return [unit[i : i + size] for i in range(0, len(unit), size)]


def _fitting(chunk: str, fits: Callable[[str], bool]) -> list[str]:
    """`chunk`, or its halves (again as needed) when it does not fit."""
    if len(chunk) <= 1 or fits(chunk):
        return [chunk]
    middle = len(chunk) // 2
    cut = chunk.rfind("\n", 0, middle) + 1 or middle  # between lines where there is one
    return _fitting(chunk[:cut], fits) + _fitting(chunk[cut:], fits)


def _longest_fitting(unit: str, fits: Callable[[str], bool]) -> int:
    low, high = 1, len(unit) - 1  # `unit` itself does not fit
    while low < high:
        middle = (low + high + 1) // 2
        if fits(unit[:middle]):
            low = middle
        else:
            high = middle - 1
    return low


@dataclass
class _Pass:
    """One pass: its requests, and each one's latest text and final state."""

    number: int
    requests: list[GenerationRequest]
    final: bool  # its output is the answer (it streams); else its outputs feed the next pass
    texts: list[str] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)
    reasons: list[FinishReason] = field(default_factory=list)
    sent: int = 0  # requests handed to the engine, in order (`TaskRun.take`)

    def __post_init__(self) -> None:
        count = len(self.requests)
        self.texts, self.finished, self.reasons = [""] * count, [False] * count, ["stop"] * count

    @property
    def done(self) -> int:
        return sum(self.finished)


class TaskRun:
    """One summarize / translate / proofread question as passes of generation requests."""

    def __init__(self, question: Question, prompts: PromptBuilder, max_new_tokens: int) -> None:
        if question.task == "ask":
            raise ValueError("a plain question is one request, not a task run")
        self.question = question
        self.prompts = prompts
        self.max_new_tokens = max_new_tokens
        self.text = question.context.strip()
        self.instructions = question.instructions
        self.prompt_tokens = self.completion_tokens = 0
        self.finished = False
        self.finish_reason: FinishReason = "stop"
        self.context_cut = False
        self._pass: _Pass | None = None
        self._merged = 0  # parts the last pass before the current one had
        self._separators: list[str] = []  # translate/proofread: what followed each chunk in the text
        self._plan_first()  # raises PromptTooLong when not even the instruction fits
        # Rendered and counted here, once (the worker plans on a thread of its own): a restart reuses them.
        self._first_requests = [self._request(0, i, *spec) for i, spec in enumerate(self._first)]
        self._first_tokens = self.prompt_tokens

    # ------------------------------------------------------------------ planning

    def _budget(self, max_new_tokens: int) -> int:
        return self.prompts.context_window - max_new_tokens

    def _tokens(self, instruction: str, context: str) -> int:
        system = self.prompts.system(self.instructions)
        return self.prompts.count_tokens(self.prompts.render(instruction, context, [], system))

    def _request(self, pass_no: int, chunk: int, instruction: str, context: str, max_new: int) -> GenerationRequest:
        built = self.prompts.build(instruction, context=context, instructions=self.instructions, max_new_tokens=max_new)
        self.context_cut |= built.context_cut
        self.prompt_tokens += built.tokens
        return GenerationRequest(request_id(self.question.id, pass_no, chunk), built.text, max_new, copies=True)

    def _plan_first(self) -> None:
        self._first: list[tuple[str, str, int]] = []  # (instruction, context, max_new) of the first pass
        if not self.text:
            raise ValueError(f"nothing to {self.question.task}: the text is empty")
        if self._tokens(self._instruction(), "") > self._budget(self.max_new_tokens):
            raise PromptTooLong(self._tokens(self._instruction(), ""), self._budget(self.max_new_tokens))
        if self.question.task == "summarize":
            self._plan_summary()
        else:
            self._plan_rewrite()

    def _instruction(self) -> str:
        if self.question.task == "summarize":
            return SUMMARIZE
        if self.question.task == "proofread":
            return PROOFREAD
        return translation_instruction(self.text)

    def _plan_rewrite(self) -> None:
        instruction = self._instruction()
        budget, most = self._budget(self.max_new_tokens), int(self.max_new_tokens * OUTPUT_SHARE)

        def fits(piece: str) -> bool:
            core = piece.strip()
            return self._tokens(instruction, core) <= budget and self.prompts.count_tokens(core) <= most

        room = min(most, budget - self._tokens(instruction, "가"))
        pieces = self._at_most_parts(planned_chunks(sentences(self.text), self.prompts.count_tokens, room, fits))
        self._separators = [piece[len(piece.rstrip()) :] for piece in pieces]
        self._first = [(instruction, piece.strip(), self.max_new_tokens) for piece in pieces]

    def _plan_summary(self) -> None:
        if self._tokens(SUMMARIZE, self.text) <= self._budget(self.max_new_tokens):
            self._first = [(SUMMARIZE, self.text, self.max_new_tokens)]
            return
        part_new = min(PART_SUMMARY_TOKENS, self.max_new_tokens)
        budget = self._budget(part_new)
        lines = [line + "\n" for line in self.text.split("\n")]
        room = budget - self._tokens(SUMMARIZE_PART, "가")
        parts = planned_chunks(
            lines, self.prompts.count_tokens, room, lambda piece: self._tokens(SUMMARIZE_PART, piece.strip()) <= budget
        )
        self._first = [(SUMMARIZE_PART, part.strip(), part_new) for part in self._at_most_parts(parts)]

    def _at_most_parts(self, parts: list[str]) -> list[str]:
        """The first MAX_TASK_PARTS parts: the work one request may cost. The answer then says only the text's
        beginning was read (`context_cut`), as for a 맥락 cut to fit the window."""
        if len(parts) > MAX_TASK_PARTS:
            self.context_cut = True
            return parts[:MAX_TASK_PARTS]
        return parts

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        """Begin with the first pass (its requests come from `take`); called again, the run starts over (a reset
        engine, a retry)."""
        self.prompt_tokens, self.completion_tokens = self._first_tokens, 0
        self.finished, self.finish_reason, self._merged = False, "stop", 0
        requests = list(self._first_requests)
        final = self.question.task != "summarize" or self._first[0][0] == SUMMARIZE
        self._pass = _Pass(0, requests, final)

    def take(self, count: int) -> list[GenerationRequest]:
        """Up to `count` of this pass's requests not yet handed out: the worker feeds a task's parts to the engine
        a few at a time, so one long task never fills the batch ahead of other people's questions."""
        if self._pass is None or count <= 0:
            return []
        taken = self._pass.requests[self._pass.sent : self._pass.sent + count]
        self._pass.sent += len(taken)
        return taken

    @property
    def waiting(self) -> int:
        """This pass's requests not yet handed out."""
        return 0 if self._pass is None else len(self._pass.requests) - self._pass.sent

    @property
    def parts(self) -> int:
        return len(self._first)

    @property
    def progress(self) -> tuple[int, int] | None:
        """Parts done of this pass's parts, while a long thread's parts (or their summaries) are summarised; all
        of the last such pass's, once the final merge runs. None for a task in one pass."""
        if self._pass is None:
            return None
        if self._pass.final:
            return (self._merged, self._merged) if self._merged else None
        return self._pass.done, len(self._pass.requests)

    @property
    def active_ids(self) -> list[str]:
        """The requests in the engine now: handed out, not finished."""
        if self._pass is None:
            return []
        sent = zip(self._pass.requests[: self._pass.sent], self._pass.finished, strict=False)
        return [r.id for r, done in sent if not done]

    @property
    def visible(self) -> str:
        """What the asker sees so far: the rewritten chunks in order, up to the first unfinished one; for a
        summary, the final pass's text."""
        if self._pass is None:
            return ""
        if self.question.task == "summarize":
            return self._pass.texts[0] if self._pass.final else ""
        shown = ""
        for text, done, separator in zip(self._pass.texts, self._pass.finished, self._separators, strict=True):
            if not done:
                return shown + text
            shown += text + (separator if "\n" in separator else " ")
        return shown.rstrip()

    def on_update(self, update: GenerationUpdate) -> None:
        """Take one request's update; when it finishes the pass, the next pass begins (its requests from `take`)."""
        assert self._pass is not None
        index = next((i for i, r in enumerate(self._pass.requests) if r.id == update.id), None)
        if index is None or self._pass.finished[index]:
            return
        self._pass.texts[index] = update.text
        if not update.finished:
            return
        self._pass.finished[index] = True
        self._pass.reasons[index] = update.finish_reason or "stop"
        self.completion_tokens += update.completion_tokens
        if not all(self._pass.finished):
            return
        if self._pass.final:
            self.finished = True
            self.finish_reason = "length" if "length" in self._pass.reasons else "stop"
            return
        self._merge(self._pass.texts)

    def _merge(self, summaries: list[str]) -> None:
        """The next pass over the parts' summaries: one merge if they fit, else merges of consecutive groups."""
        assert self._pass is not None
        number, self._merged = self._pass.number + 1, len(summaries)
        labelled = [f"[{i + 1}부] {summary.strip()}\n" for i, summary in enumerate(summaries)]
        whole = "".join(labelled).strip()
        final = self._tokens(MERGE, whole) <= self._budget(self.max_new_tokens)
        if final:
            requests = [self._request(number, 0, MERGE, whole, self.max_new_tokens)]
        else:
            part_new = min(PART_SUMMARY_TOKENS, self.max_new_tokens)
            budget = self._budget(part_new)
            groups = chunks(labelled, lambda piece: self._tokens(MERGE, piece.strip()) <= budget)
            requests = [self._request(number, i, MERGE, group.strip(), part_new) for i, group in enumerate(groups)]
            if len(requests) >= len(summaries):  # no progress: merge what fits, cut, rather than loop
                requests, final = [self._request(number, 0, MERGE, whole, self.max_new_tokens)], True
        self._pass = _Pass(number, requests, final)
