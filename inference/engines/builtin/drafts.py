"""Prompt-lookup drafts for speculative decoding: answers that copy their input take several tokens per step.

맞춤법 교정 returns its text with a few edits; a translation keeps names and code; a summary or an answer
grounded in a 맥락 repeats spans of it. For such a row, the tokens that followed the latest earlier
occurrence of its last few tokens (in the prompt or the answer so far) are a good guess of what comes
next. The engine feeds a row its next token and that guess in one step and keeps the guessed tokens the
model would have sampled anyway (`engine.BuiltinEngine`, "speculative steps"): the answer's distribution is
unchanged, only the number of steps falls.

`Drafter` holds one row's tokens and an index of their n-grams, updated as tokens arrive (no search of
the whole text per step), and how its guesses fare: how many it is expected to keep (which bounds how many
it makes, and which the engine weighs against what a step's guesses cost the whole batch), and a row whose
guesses keep being refused stops guessing for a while, longer each time, so a question that copies nothing
costs next to nothing.
"""

from __future__ import annotations

# Lengths of the n-gram looked up, longest first: a longer match is a better guess.
LONGEST_NGRAM = 3
SHORTEST_NGRAM = 2
# A row guesses while the guesses it had kept lately (a moving average of kept guesses per step that guessed) stay
# at least this many: what a guessing step gains over a plain one. Acceptance as a share would rest a row that
# keeps 3 of 8 guesses, four tokens a step.
MIN_KEPT = 0.5
# Weight of the latest step in that average, and where it starts: a row whose request says its answer copies is
# expected to keep several guesses (eight steps in a row that keep nothing make it rest), another one (two steps).
KEPT_WEIGHT = 0.3
FIRST_KEPT = 1.0
COPYING_KEPT = 6.0
# A row guesses at most this many tokens per guess it is expected to keep: a row on trial, or one whose guesses
# were refused lately, guesses few (a step feeds every row as many tokens as the longest guess).
GUESSES_PER_KEPT = 3
# Steps a row rests after that average fell below MIN_KEPT: the first time, then doubled each time, to at most
# LONGEST_REST.
FIRST_REST = 8
LONGEST_REST = 256


class Drafter:
    """One row's tokens (prompt, answer so far, its next token) and its n-gram index, for drafting."""

    def __init__(self, tokens: list[int], expected: float = FIRST_KEPT) -> None:
        self.tokens: list[int] = []
        # n → {n-gram: the index just past its latest occurrence that is not the current last n tokens}
        self._seen: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(SHORTEST_NGRAM, LONGEST_NGRAM + 1)}
        self.drafted = 0  # tokens guessed so far
        self.accepted = 0  # of which the model kept
        self.steps = 0  # steps that fed guesses
        self._first = expected
        self._kept = expected  # guesses kept per guessing step, lately
        self._resting = 0  # steps left before this row drafts again
        self._rest = FIRST_REST
        self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        """Tokens the row gained (its prompt first, then each step's)."""
        for token in tokens:
            length = len(self.tokens)
            for n, seen in self._seen.items():
                if length >= n:  # the last n tokens become an earlier occurrence, followed by `token`
                    seen[tuple(self.tokens[length - n :])] = length
            self.tokens.append(token)

    @property
    def expected(self) -> float:
        """Guesses this row is expected to keep in a step that feeds them (its recent average)."""
        return self._kept

    def draft(self, limit: int) -> list[int]:
        """Up to `limit` guessed tokens (`guess`), at most GUESSES_PER_KEPT per token the row is expected to keep;
        none while it rests.

        Tied to the recent average, not cut after every refusal: transformers' schedule for assisted generation
        (two more after a step that kept all, one fewer after one that did not) made 맞춤법 교정 on the CPU 1.88x
        plain decoding where always guessing the most gave 2.43x."""
        if self._resting:
            self._resting -= 1
            return []
        return self.guess(min(limit, max(1, round(GUESSES_PER_KEPT * self._kept))))

    def guess(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the latest earlier occurrence of the row's last n tokens (the longest
        n that occurred)."""
        tokens = self.tokens
        for n in range(LONGEST_NGRAM, SHORTEST_NGRAM - 1, -1):
            if len(tokens) > n:
                after = self._seen[n].get(tuple(tokens[-n:]))
                if after is not None:
                    return tokens[after : after + limit]
        return []

    def judged(self, drafted: int, accepted: int) -> None:
        """A step kept `accepted` of the row's `drafted` guesses: a row that keeps fewer than MIN_KEPT a step on
        average rests."""
        self.drafted += drafted
        self.accepted += accepted
        self.steps += 1
        self._kept += KEPT_WEIGHT * (accepted - self._kept)
        if self._kept < MIN_KEPT:
            self._resting, self._kept = self._rest, self._first
            self._rest = min(2 * self._rest, LONGEST_REST)
