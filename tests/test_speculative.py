"""Speculative steps with prompt-lookup drafts (SPECULATIVE): the same answers' distribution in fewer steps."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from inference.engine import GenerationRequest, GenerationUpdate, Sampling
from inference.engines.builtin import BuiltinEngine
from inference.engines.builtin.drafts import COPYING_KEPT, FIRST_KEPT, FIRST_REST, Drafter
from testkit.drafts import knowing_the_answers

pytestmark = pytest.mark.xdist_group("speculative")

# ------------------------------------------------------------------ the drafter


def test_a_drafter_guesses_what_followed_the_latest_earlier_occurrence_longest_match_first() -> None:
    drafter = Drafter([1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 1, 2])
    # (1, 2) occurred at the start (then 3, 4, 5 ...); (2,) alone is not looked up
    assert drafter.guess(3) == [3, 4, 5]
    drafter.extend([3])  # last three (1, 2, 3): only at the start
    assert drafter.guess(2) == [4, 5]
    drafter.extend([7])  # (2, 3, 7) occurred at index 6: 8 followed
    assert drafter.guess(8) == [8, 1, 2, 3, 7]  # up to what is known
    assert Drafter([5, 6, 7]).guess(4) == []  # the last n tokens never occurred before
    assert Drafter([]).guess(4) == []
    # A row guesses at most three tokens per token it expects to keep
    assert len(Drafter([1, 2, 3, 4, 5, 6, 1, 2], expected=1.0).draft(8)) == 3
    assert len(Drafter([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2], expected=COPYING_KEPT).draft(8)) == 8


def test_a_drafter_whose_guesses_are_refused_rests_longer_each_time() -> None:
    drafter = Drafter([1, 2, 1, 2, 1, 2])
    assert drafter.draft(2)
    rested = []
    for _ in range(3):
        while drafter.draft(2):
            drafter.judged(2, 0)
        steps = 1
        while not drafter.draft(2):
            steps += 1
        rested.append(steps)
    assert rested == [FIRST_REST, 2 * FIRST_REST, 4 * FIRST_REST]  # steps without a guess, each time
    for _ in range(20):  # kept guesses keep it drafting
        assert drafter.draft(2)
        drafter.judged(2, 2)


# ------------------------------------------------------------------ the engine

# The tiny model knows its answers by heart: with its output layer scaled down, its next-token distributions
# spread over many tokens. A drafter that guesses, at each position of the answer, the token plain decoding gave
# there most often (a deterministic guess, as prompt lookup's is) is then kept and refused often.
SPREAD = 0.45
PROMPT = "### 질문: 다음 글을 고쳐 주세요.\n\n### 맥락: 한국의 수도는 서울이라네, 한국의 수도는 서울이라네\n\n### 답변:"
ANSWER_TOKENS = 4
ROWS = 200
DRAWS = 6_000


class GuessesTheMode(Drafter):
    """Guesses, after each answer so far, the token plain decoding most often gave after it, and so on."""

    modes: ClassVar[dict[tuple[int, ...], int]] = {}

    def __init__(self, tokens: list[int], expected: float = FIRST_KEPT) -> None:
        super().__init__(tokens, expected)
        self.prompt = len(tokens)

    def guess(self, limit: int) -> list[int]:
        answer = tuple(self.tokens[self.prompt :])
        guesses: list[int] = []
        while len(guesses) < limit and (guess := self.modes.get(answer)) is not None:
            guesses.append(guess)
            answer += (guess,)
        return guesses


def guessing_the_mode(monkeypatch: pytest.MonkeyPatch, plain: list[tuple[int, ...]]) -> None:
    following: dict[tuple[int, ...], Counter[int]] = {}
    for answer in plain:
        for position in range(1, ANSWER_TOKENS):
            following.setdefault(answer[:position], Counter())[answer[position]] += 1
    modes = {prefix: counts.most_common(1)[0][0] for prefix, counts in following.items()}
    monkeypatch.setattr(GuessesTheMode, "modes", modes)
    monkeypatch.setattr("inference.engines.builtin.drafts.Drafter", GuessesTheMode)


@pytest.fixture(scope="module")
def spread_model(model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(SPREAD)
    return model, AutoTokenizer.from_pretrained(model_dir)


def answers(
    model: Any, tokenizer: Any, speculative: str, seed: int, draws: int = DRAWS
) -> tuple[list[tuple[int, ...]], BuiltinEngine]:
    """`draws` answers of ANSWER_TOKENS tokens to PROMPT, under the seed's sampling (temperature 0.7, top-p 0.9),
    ROWS at a time."""
    engine = BuiltinEngine(
        model,
        tokenizer,
        model_id="t",
        sampling=Sampling(seed=seed),
        max_batch_size=ROWS,
        prefill_chunk=10**6,
        speculative=speculative,
        draft_tokens=ANSWER_TOKENS,
        step_tokens=ROWS * (1 + ANSWER_TOKENS),
    )
    drawn: list[tuple[int, ...]] = []
    while len(drawn) < draws:
        for i in range(ROWS):
            engine.add(GenerationRequest(f"{len(drawn)}-{i}", PROMPT, ANSWER_TOKENS, ignore_eos=True))
        rows = {}
        while engine.active:
            engine.step()
            rows.update({row.id: row for row in engine.running})
        drawn += [tuple(row.decoder.ids) for row in rows.values() if row.decoder is not None]
    return drawn, engine


def chi_square_p(first: Counter[Any], second: Counter[Any]) -> float:
    """Two-sample chi-square test of equal-sized samples over categories (those seen fewer than 10 times in both
    together merged into one): the p-value of "both from the same distribution"."""
    kept = [key for key in first.keys() | second.keys() if first[key] + second[key] >= 10]
    pairs = [(first[key], second[key]) for key in kept]
    rest = (first.total() - sum(a for a, _ in pairs), second.total() - sum(b for _, b in pairs))
    if sum(rest):
        pairs.append(rest)
    statistic = sum((a - b) ** 2 / (a + b) for a, b in pairs)
    freedom = len(pairs) - 1
    return float(torch.special.gammaincc(torch.tensor(freedom / 2), torch.tensor(statistic / 2)))


def test_speculative_sampling_draws_from_the_plain_distribution(
    spread_model: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten thousand answers each way: every position's token, and each pair of neighbours, follow the same
    distribution with and without speculative steps (which kept and refused thousands of guesses)."""
    plain, _ = answers(*spread_model, "off", seed=1)
    guessing_the_mode(monkeypatch, plain)
    guessed, engine = answers(*spread_model, "on", seed=2)
    stats = engine.speculation
    assert stats.drafted > DRAWS and 0.3 < stats.acceptance < 0.95  # both branches, thousands of times
    assert stats.steps < DRAWS // ROWS * (ANSWER_TOKENS - 1)  # and fewer steps than one token each
    tests: dict[str, tuple[Counter[Any], Counter[Any]]] = {}
    for position in range(ANSWER_TOKENS):
        tests[f"token {position + 1}"] = (Counter(a[position] for a in plain), Counter(a[position] for a in guessed))
    for position in range(ANSWER_TOKENS - 1):
        pair = slice(position, position + 2)
        tests[f"tokens {position + 1}-{position + 2}"] = (
            Counter(a[pair] for a in plain),
            Counter(a[pair] for a in guessed),
        )
    p_values = {name: chi_square_p(*counts) for name, counts in tests.items()}
    assert min(p_values.values()) > 1e-4, p_values
    assert len(tests["token 3"][0]) >= 4  # a spread distribution, not one answer by heart


def test_a_wrong_acceptance_rule_is_caught(spread_model: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: keeping every guess (as if the draft were always right) moves the answers'
    distribution towards the guesses, and the same test sees it."""
    verify = BuiltinEngine._verify

    def keeps_every_guess(self: BuiltinEngine, drafts: list[list[int]], logits: torch.Tensor) -> Any:
        logits = logits.clone()
        for i, draft in enumerate(drafts):
            for q, token in enumerate(draft):
                logits[i, q, token] = 1e4
        return verify(self, drafts, logits)

    plain, _ = answers(*spread_model, "off", seed=1, draws=10 * ROWS)  # 5 × ROWS once gave p = 1.3e-6
    guessing_the_mode(monkeypatch, plain)
    monkeypatch.setattr(BuiltinEngine, "_verify", keeps_every_guess)
    guessed, _ = answers(*spread_model, "on", seed=2, draws=10 * ROWS)
    assert chi_square_p(Counter(a[2] for a in plain), Counter(a[2] for a in guessed)) < 1e-6


# ------------------------------------------------------------------ endings, log-probabilities, when rows draft


@pytest.fixture(scope="module")
def tiny(model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)


def finish(engine: BuiltinEngine, requests: list[GenerationRequest]) -> dict[str, GenerationUpdate]:
    """Run `requests` to their ends; their last updates, and the steps that took."""
    for request in requests:
        engine.add(request)
    finished: dict[str, GenerationUpdate] = {}
    while engine.active:
        finished.update((u.id, u) for u in engine.step() if u.finished)
    return finished


def engine_on(model_and_tokenizer: tuple[Any, Any], speculative: str, **options: Any) -> BuiltinEngine:
    model, tokenizer = model_and_tokenizer
    greedy = Sampling(do_sample=False)
    return BuiltinEngine(
        model, tokenizer, model_id="t", sampling=greedy, max_batch_size=8, speculative=speculative, **options
    )


QUESTIONS = ["딥러닝이 뭐야?", "한국의 수도는 어디야?", "인사해줘", "오늘 날씨 어때?"]


def asked(question: str) -> str:
    return f"### 질문: {question}\n\n### 답변:"


def test_guessed_answers_end_and_score_exactly_as_plain_ones(
    tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Greedy: the same text, finish reason, token count and log-probabilities, whether the answer ends at eos
    inside a step's guesses, at a `###` section, or at max_new_tokens in the middle of kept guesses."""
    requests = [GenerationRequest(f"q{i}", asked(q), 60, logprobs=2) for i, q in enumerate(QUESTIONS)]
    requests += [GenerationRequest(f"short{n}", asked(QUESTIONS[0]), n, logprobs=1) for n in (1, 3, 7)]
    plain = finish(engine_on(tiny, "off"), requests)
    knowing_the_answers(monkeypatch, *tiny, [asked(q) for q in QUESTIONS], wrong_every=5)
    engine = engine_on(tiny, "on", step_tokens=64)
    guessed = finish(engine, requests)
    assert engine.speculation.accepted > 40
    assert {u.finish_reason for u in plain.values()} == {"stop", "length"}
    for rid, update in plain.items():
        other = guessed[rid]
        assert (other.text, other.finish_reason, other.completion_tokens) == (
            update.text,
            update.finish_reason,
            update.completion_tokens,
        )
        assert [t.token for t in other.logprobs] == [t.token for t in update.logprobs]
        assert [[a.token for a in t.top] for t in other.logprobs] == [[a.token for a in t.top] for t in update.logprobs]
        for mine, theirs in zip(other.logprobs, update.logprobs, strict=True):
            assert mine.logprob == pytest.approx(theirs.logprob, abs=1e-4)


def test_auto_drafts_only_for_answers_that_copy(tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    knowing_the_answers(monkeypatch, *tiny, [asked(q) for q in QUESTIONS])
    for copies, drafts in ((False, False), (True, True)):
        engine = engine_on(tiny, "auto")
        finish(engine, [GenerationRequest("a", asked(QUESTIONS[0]), 40, copies=copies)])
        assert (engine.speculation.drafted > 0) == drafts
    engine = engine_on(tiny, "off")
    finish(engine, [GenerationRequest("a", asked(QUESTIONS[0]), 40, copies=True)])
    assert engine.speculation.drafted == 0


def test_guesses_that_keep_failing_are_soon_not_made(tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A text crafted so that every guess is wrong (here: the drafter's every guess is) costs a few speculative
    steps, not one per token: the row rests, longer each time."""
    texts = [asked(QUESTIONS[2])]
    knowing_the_answers(monkeypatch, *tiny, texts, wrong_every=1)
    request = GenerationRequest("a", texts[0], 100, ignore_eos=True)
    plain = finish(engine_on(tiny, "off"), [request])
    engine = engine_on(tiny, "on")
    assert finish(engine, [request])["a"].text == plain["a"].text
    assert engine.speculation.accepted == 0 and engine.speculation.steps <= 20  # of 100 steps


def test_a_full_batch_guesses_less_or_not_at_all(tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Past SPECULATIVE_STEP_TOKENS tokens in a step (here 16) guessing costs more than it saves: eight rows guess
    one token each, sixteen none."""
    texts = [asked(q) for q in QUESTIONS]
    knowing_the_answers(monkeypatch, *tiny, texts, wrong_every=100)
    for rows, most in ((8, 1), (16, 0)):
        engine = engine_on(tiny, "on", step_tokens=16)
        engine.max_batch_size = rows
        fed: list[int] = []
        step = engine._decode_eager

        def recorded(tokens: torch.Tensor, step: Any = step, rows: int = rows, fed: list[int] = fed) -> torch.Tensor:
            if tokens.shape[0] == rows:
                fed.append(tokens.shape[1])
            logits: torch.Tensor = step(tokens)
            return logits

        monkeypatch.setattr(engine, "_decode_eager", recorded)
        finish(engine, [GenerationRequest(str(i), texts[i % 4], 12, ignore_eos=True) for i in range(rows)])
        assert fed and max(fed) == 1 + most


def test_the_worker_settings_reach_the_engine(tiny: tuple[Any, Any], model_dir: Path) -> None:
    from inference.engines import builtin
    from inference.settings import WorkerSettings
    from testkit.settings import settings_of

    settings = settings_of(
        WorkerSettings, model_id=str(model_dir), speculative="on", speculative_tokens=3, speculative_step_tokens=40
    )
    engine = builtin.on_model(*tiny, settings).engine
    assert isinstance(engine, BuiltinEngine)
    assert (engine.speculator.mode, engine.speculator.draft_tokens, engine.speculator.step_tokens) == ("on", 3, 40)
    default = builtin.on_model(*tiny, settings_of(WorkerSettings, model_id=str(model_dir))).engine
    assert isinstance(default, BuiltinEngine)
    speculator = default.speculator
    assert (speculator.mode, speculator.draft_tokens, speculator.step_tokens) == ("auto", 16, 64)  # on a CPU
