"""`Speculator`: which of the builtin engine's rows guess in a step, what they guess, and what they keep.

The engine (`engine.BuiltinEngine`, "speculative steps") feeds the guesses and samples a token at every fed
position; the speculator keeps each row's guesses up to the first its sampled token refuses, and that
token. Which rows guess (SPECULATIVE): `auto` the requests that say their answers copy the prompt (tasks,
a 맥락), `on` every one, `off` none. How much a step guesses: at most `draft_tokens` per row, fewer as the
batch grows (`step_tokens` in all), and only when its rows expect to keep enough of them (GUESS_WORTH).
"""

from __future__ import annotations

from dataclasses import dataclass

import inference.engines.builtin.drafts as drafts  # module access: tests give their own Drafter
from inference.engine import GenerationRequest
from inference.engines.answer import Answer

# SPECULATIVE: which rows draft.
SPECULATIVE_MODES = ("auto", "on", "off")
# Guessed tokens fed per row and step, at most (SPECULATIVE_TOKENS).
DEFAULT_DRAFT_TOKENS = 16
# Tokens a speculative step may feed in all (rows × (1 + guesses)) by default, per device (SPECULATIVE_STEP_TOKENS):
# past it a step costs more than the steps it saves. A GPU reads a 12.8B model's weights in about the time it
# computes a few hundred tokens. On 2 CPU cores the mid-size model's 맞춤법 교정 at 16 in flight gained 1.04x with
# 32, 1.58x with 64 and with 128 (bench/RESULTS.md, "Speculative steps").
DEFAULT_STEP_TOKENS = {"cuda": 256, "cpu": 64}
# A step guesses when the guesses its rows are expected to keep (`Drafter.expected`) are at least this share of the
# tokens it feeds beyond one per row (every row is fed as many as the longest guess): a row alone guesses (it guesses
# at most three tokens per token it expects to keep), but a few rows trying their luck do not make a full batch pay
# for their guesses.
GUESS_WORTH = 0.25


@dataclass
class Speculation:
    """What the speculative steps did: the benchmarks' counters."""

    steps: int = 0  # steps that fed guesses
    guesses: int = 0  # rows that guessed, summed over those steps
    drafted: int = 0  # guessed tokens fed
    accepted: int = 0  # guessed tokens kept
    tokens: int = 0  # tokens the rows that guessed gained in those steps (kept guesses and the model's own)

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


class Speculator:
    """The drafters of the rows that guess, by request id, and the counters."""

    def __init__(self, mode: str, draft_tokens: int, step_tokens: int | None, device_type: str) -> None:
        if mode not in SPECULATIVE_MODES:
            raise ValueError(f"speculative={mode!r}: expected one of {', '.join(SPECULATIVE_MODES)}")
        self.mode = mode
        self.draft_tokens = draft_tokens
        self.step_tokens = step_tokens or DEFAULT_STEP_TOKENS.get(device_type, DEFAULT_STEP_TOKENS["cuda"])
        self.stats = Speculation()
        self._drafters: dict[str, drafts.Drafter] = {}

    def joined(self, request: GenerationRequest, prompt: list[int]) -> None:
        """A row joined the batch: it drafts when the mode says so (`on`; `auto` when its answer copies)."""
        if self.mode == "on" or (self.mode == "auto" and request.copies):
            expected = drafts.COPYING_KEPT if request.copies else drafts.FIRST_KEPT
            self._drafters[request.id] = drafts.Drafter(prompt, expected)

    def left(self, request_id: str) -> None:
        self._drafters.pop(request_id, None)

    def clear(self) -> None:
        self._drafters.clear()

    def gained(self, request_id: str, token: int) -> None:
        """A plain step's token for a row."""
        drafter = self._drafters.get(request_id)
        if drafter is not None:
            drafter.extend([token])

    def guesses(self, rows: list[Answer]) -> list[list[int]]:
        """Each running row's guesses for this step (empty for most), or no list at all when the step does not
        guess: none of its rows has a guess, the batch is too big (`step_tokens`), or the guesses are not worth
        what they cost the batch (GUESS_WORTH)."""
        if not self._drafters:
            return []
        limit = min(self.draft_tokens, self.step_tokens // len(rows) - 1)
        if limit < 1:
            return []
        guesses, expected = [], 0.0
        for row in rows:
            drafter = self._drafters.get(row.id)
            room = row.request.max_new_tokens - row.completion_tokens - 1  # guesses past the answer's end are waste
            guess = drafter.draft(min(limit, room)) if drafter is not None and room > 0 else []
            if guess:
                assert drafter is not None
                expected += min(len(guess), drafter.expected)
            guesses.append(guess)
        longest = max(map(len, guesses))
        return guesses if longest and expected >= GUESS_WORTH * longest * len(guesses) else []

    def keep(
        self, rows: list[Answer], guesses: list[list[int]], sampled: list[int]
    ) -> tuple[list[list[int]], list[int]]:
        """Given the token sampled at every fed position (row by row, each row's next token's then its guesses'),
        what each row gains: its guesses up to the first its sampled token refuses, and that token; and the
        indices into `sampled` of those tokens. The drafters learn how their guesses fared."""
        gained: list[list[int]] = []
        kept: list[int] = []
        first = 0
        for guess in guesses:
            own = sampled[first : first + len(guess) + 1]
            accepted = 0
            while accepted < len(guess) and own[accepted] == guess[accepted]:
                accepted += 1
            gained.append(own[: accepted + 1])
            kept.extend(range(first, first + accepted + 1))
            first += len(guess) + 1
        self._account(rows, guesses, gained)
        return gained, kept

    def _account(self, rows: list[Answer], guesses: list[list[int]], gained: list[list[int]]) -> None:
        stats = self.stats
        stats.steps += 1
        for row, guess, tokens in zip(rows, guesses, gained, strict=True):
            drafter = self._drafters.get(row.id)
            if drafter is None:
                continue
            drafter.extend(tokens)
            if guess:
                drafter.judged(len(guess), len(tokens) - 1)
                stats.guesses += 1
                stats.drafted += len(guess)
                stats.accepted += len(tokens) - 1
                stats.tokens += len(tokens)
