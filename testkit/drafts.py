"""Drafters for the tests of speculative steps: guesses whose rights and wrongs the test decides.

Any guess that depends only on a row's tokens leaves the answers' distribution as it is (the engine's
docstring says why); these make the engine keep and refuse guesses as often as a test needs.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import pytest
import torch

from inference.engines.builtin.drafts import FIRST_KEPT, Drafter


class KnowsTheAnswers(Drafter):
    """Guesses an answer's next tokens from its greedy answer found beforehand (`knowing_the_answers`); every
    `wrong_every`-th token of the answer is guessed wrong (one more than it), so rows keep several guesses, refuse
    the rest, and gain different numbers of tokens in a step."""

    answers: ClassVar[dict[tuple[int, ...], list[int]]] = {}
    wrong_every = 7

    def __init__(self, tokens: list[int], expected: float = FIRST_KEPT) -> None:
        super().__init__(tokens, expected)
        self.prompt = tuple(tokens)

    def guess(self, limit: int) -> list[int]:
        done = len(self.tokens) - len(self.prompt)
        guesses = self.answers.get(self.prompt, [])[done : done + limit]
        wrong = self.wrong_every
        return [token + 1 if (done + j) % wrong == wrong - 1 else token for j, token in enumerate(guesses)]


def greedy_answer(model: Any, tokenizer: Any, text: str, tokens: int) -> tuple[list[int], list[int]]:
    """The prompt's tokens and its first `tokens` greedy answer tokens, past eos (generate would stop there)."""
    from transformers import DynamicCache

    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    cache, fed, answer = DynamicCache(), ids, []
    with torch.no_grad():
        for _ in range(tokens):
            logits = model(input_ids=torch.tensor([fed]), use_cache=True, **{name: cache}).logits
            answer.append(int(logits[0, -1].argmax()))
            fed = answer[-1:]
    return ids, answer


def knowing_the_answers(
    monkeypatch: pytest.MonkeyPatch, model: Any, tokenizer: Any, texts: list[str], wrong_every: int = 7
) -> dict[tuple[int, ...], list[int]]:
    """From now on the engine's rows draft with `KnowsTheAnswers`, knowing these prompts' greedy answers."""
    answers = {tuple(ids): answer for ids, answer in (greedy_answer(model, tokenizer, t, 100) for t in texts)}
    monkeypatch.setattr(KnowsTheAnswers, "answers", answers)
    monkeypatch.setattr(KnowsTheAnswers, "wrong_every", wrong_every)
    monkeypatch.setattr("inference.engines.builtin.drafts.Drafter", KnowsTheAnswers)
    return answers
