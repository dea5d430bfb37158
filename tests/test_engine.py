"""The builtin engine on the tiny trained model, beyond the contract every engine passes
(tests/test_engine_contract.py): its in-place KV cache, chunked prefill, top-p sampler, a failed
prefill, templates, a Llama model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from inference.engine import Engine, GenerationRequest, GenerationUpdate, Loaded
from inference.engines.detokenize import IncrementalDecoder
from inference.errors import EngineOutOfMemory, GraphsUnavailable
from inference.settings import WorkerSettings
from testkit import trained
from testkit.drafts import knowing_the_answers
from testkit.engines import IN_PROCESS_MODEL
from testkit.settings import settings_of

if TYPE_CHECKING:
    from inference.engines.builtin import BuiltinEngine

# torch and transformers are imported by the tests that run, not at collection: a test process that runs none
# of them (pytest-xdist gives them all to one) never pays for importing them.
pytestmark = IN_PROCESS_MODEL


def load(model_dir: Path, **overrides: object) -> Loaded:
    """The tiny model behind ENGINE (default builtin), greedy."""
    values: dict[str, object] = {"model_id": str(model_dir), "do_sample": False, **overrides}
    settings = settings_of(WorkerSettings, **values)
    from inference.engine import engine_factory

    return engine_factory(settings.engine)(settings)


def transformers_engine(loaded: Loaded) -> BuiltinEngine:
    from inference.engines.builtin import BuiltinEngine

    assert isinstance(loaded.engine, BuiltinEngine)
    return loaded.engine


@pytest.fixture(scope="module")
def loaded(model_dir: Path) -> Loaded:
    return load(model_dir, max_batch_size=8)


def request(loaded: Loaded, rid: str, question: str, context: str = "", max_new_tokens: int = 512) -> GenerationRequest:
    prompt = loaded.prompts.build(question, context=context, max_new_tokens=max_new_tokens)
    return GenerationRequest(rid, prompt.text, max_new_tokens)


def run(engine: Engine, finished: dict[str, GenerationUpdate], steps: int | None = None) -> int:
    """Step until every request finished (or `steps` ran); returns the largest batch decoded."""
    done = peak = 0
    while engine.active and (steps is None or done < steps):
        for update in engine.step():
            if update.finished:
                finished[update.id] = update
        peak = max(peak, engine.last_batch)
        done += 1
    return peak


def test_a_failed_prefill_keeps_its_newcomers_and_reset_lists_the_batch_first(
    loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = transformers_engine(loaded)
    engine.max_batch_size = 2
    engine.add(request(loaded, "running", "긴 이야기를 들려줘"))
    engine.step()
    for rid in ("new1", "new2"):
        engine.add(request(loaded, rid, "한국의 수도는 어디야?"))

    import torch

    def out_of_memory(requests: list[GenerationRequest]) -> list[GenerationUpdate]:
        raise torch.OutOfMemoryError("injected")  # what CUDA raises; the engine says it as EngineOutOfMemory

    monkeypatch.setattr(engine, "_prefill", out_of_memory)
    with pytest.raises(EngineOutOfMemory):
        engine.step()  # decodes "running", then prefilling "new1" fails
    monkeypatch.undo()
    assert engine.active == 3, "nobody is dropped by a failed step"
    assert engine.reset() == ["running", "new1", "new2"]  # the failed batch (cap 2), then the waiting one
    engine.max_batch_size = 8


def test_sampling_follows_the_seed_settings(model_dir: Path) -> None:
    def sample() -> str:
        sampled = load(model_dir, do_sample=True, temperature=0.7, top_p=0.9, seed=1234)
        sampled.engine.add(request(sampled, "s", "딥러닝이 뭐야?", max_new_tokens=40))
        finished: dict[str, GenerationUpdate] = {}
        run(sampled.engine, finished)
        return finished["s"].text

    first = sample()
    assert first and first == sample()  # same seed, same text


def test_incremental_decoder_never_shows_half_a_syllable(loaded: Loaded) -> None:
    tokenizer = transformers_engine(loaded).tokenizer
    text = "고려대학교 구름 🌥️ 딥러닝"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    # Byte-level BPE splits unseen characters into bytes; every delta must still be valid text.
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(i) for i in ids]
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)


def test_top_p_matches_the_transformers_warper() -> None:
    import torch
    from transformers import TopPLogitsWarper

    from inference.engines.builtin.sampling import sample_top_p

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 30080, generator=generator) * 3
    probs = torch.softmax(logits, dim=-1)
    allowed = TopPLogitsWarper(0.9)(None, logits.clone()) > float("-inf")
    for _ in range(50):
        tokens = sample_top_p(probs, 0.9, generator)
        assert bool(allowed[torch.arange(4), tokens].all())
    # Flat distributions need more than the sorted head: the fallback still respects top_p.
    flat = torch.full((2, 30080), 1 / 30080)
    assert sample_top_p(flat, 0.9, generator).shape == (2,)


@pytest.mark.parametrize(
    ("template", "question", "answer"),
    [
        ("kullm-v2", "템플릿 두 번째 버전으로 답해줘", trained.V2_ANSWER),
        ("chat", "채팅 템플릿으로 답해줘", trained.CHAT_ANSWER),
    ],
)
def test_other_templates_through_the_real_tokenizer(model_dir: Path, template: str, question: str, answer: str) -> None:
    loaded = load(model_dir, template=template)
    finished: dict[str, GenerationUpdate] = {}
    loaded.engine.add(request(loaded, "t", question))
    run(loaded.engine, finished)
    assert finished["t"].text == answer


def test_decode_steps_and_a_fitting_newcomer_write_the_cache_in_place(loaded: Loaded) -> None:
    engine = transformers_engine(loaded)
    finished: dict[str, GenerationUpdate] = {}
    engine.add(request(loaded, "story", "긴 이야기를 들려줘"))
    engine.add(request(loaded, "dl", "딥러닝이 뭐야?"))
    run(engine, finished, steps=2)
    cache = engine.cache
    buffer: Any = getattr(cache.layers[0], "keys", None)
    assert buffer is not None and cache.rows == 2
    copies, address = cache.copies, buffer.data_ptr()
    run(engine, finished, steps=10)
    engine.add(request(loaded, "capital", "한국의 수도는 어디야?"))  # shorter than the rows' columns: fits
    run(engine, finished, steps=3)
    assert cache.rows == 3 and cache.copies == copies, "no step and no join copied the cache"
    assert buffer.data_ptr() == address and getattr(cache.layers[0], "keys", None) is buffer
    run(engine, finished)
    assert finished["story"].text == trained.LONG_STORY
    assert finished["dl"].text == trained.DEEP_LEARNING
    assert finished["capital"].text == trained.CAPITAL


def test_a_long_prompt_is_prefilled_in_chunks_while_the_batch_decodes(model_dir: Path) -> None:
    loaded = load(model_dir, max_batch_size=4, prefill_chunk_tokens=16)
    engine = transformers_engine(loaded)
    finished: dict[str, GenerationUpdate] = {}
    engine.add(request(loaded, "story", "긴 이야기를 들려줘"))
    assert [u.id for u in engine.step()] == ["story"]  # its prompt fits one chunk: prefilled, first token out
    context = "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다."
    long_request = request(loaded, "ctx", "이 글을 요약해줘", context)
    assert 16 < engine.count_tokens(long_request.prompt) <= 2 * 16
    engine.add(long_request)
    assert [u.id for u in engine.step()] == ["story"]  # its first chunk: the story streams on meanwhile
    assert engine.active == 2 and engine.last_batch == 1
    assert sorted(u.id for u in engine.step()) == ["ctx", "story"]  # the rest of it: it joins with its first token
    run(engine, finished)
    assert finished["ctx"].text == trained.CONTEXT_ANSWER  # the same answer as one prefill gives
    assert finished["story"].text == trained.LONG_STORY


def test_a_short_question_goes_past_a_long_prompt_still_being_read(model_dir: Path) -> None:
    # A summary part of a few thousand tokens used to hold every question behind it for all its chunks (7 s in the
    # soak's hostile row); a short prompt now starts at the next step, and the long one still finishes.
    loaded = load(model_dir, max_batch_size=4, prefill_chunk_tokens=24)
    engine = transformers_engine(loaded)
    long_context = "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다. " * 6
    long_request = request(loaded, "long", "이 글을 요약해줘", long_context)
    assert engine.count_tokens(long_request.prompt) > 4 * 24
    engine.add(long_request)
    engine.add(request(loaded, "capital", "한국의 수도는 어디야?"))
    assert [u.id for u in engine.step()] == ["capital"], "the short one starts at once, past the long one"
    finished: dict[str, GenerationUpdate] = {}
    run(engine, finished)
    assert finished["capital"].text == trained.CAPITAL and finished["long"].finished, "and the long one is not starved"


def test_a_burst_is_prefilled_oldest_first_then_shortest_first(model_dir: Path) -> None:
    # Short prompts pad little: after the oldest, the shortest join it, so more of a burst starts in one step.
    loaded = load(model_dir, max_batch_size=8)
    engine = transformers_engine(loaded)
    context = "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다."
    burst = [
        request(loaded, "oldest", "고려대학교는 어디에 있어?"),
        request(loaded, "long", "이 글을 요약해줘", context),
        request(loaded, "short", "딥러닝이 뭐야?"),
        request(loaded, "shortest", "인사해줘"),
    ]
    lengths = {r.id: engine.count_tokens(r.prompt) for r in burst}
    assert lengths["long"] > lengths["oldest"] > lengths["short"] > lengths["shortest"]
    engine.prefill_chunk = 3 * lengths["oldest"]  # the oldest and two short ones, padded to the oldest's length
    for item in burst:
        engine.add(item)
    first = engine.step()
    assert engine.last_batch == 3, "the oldest and the two short ones (in arrival order: the oldest alone)"
    assert "long" not in {u.id for u in first}
    finished: dict[str, GenerationUpdate] = {}
    run(engine, finished)
    assert finished["long"].text == trained.CONTEXT_ANSWER and finished["oldest"].text == trained.KOREA_UNIV
    assert finished["short"].text == trained.DEEP_LEARNING and finished["shortest"].text == trained.GREETING


def test_top_p_draws_the_nucleus_renormalised(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from inference.engines.builtin import sampling as module

    probs = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02])
    # top_p 0.75: 0.4 + 0.25 = 0.65 is short of it, so 0.15 is the last token in; renormalised by 0.8.
    expected = torch.tensor([0.5, 0.3125, 0.1875, 0, 0, 0, 0])
    generator = torch.Generator().manual_seed(7)
    for rounds in (module.TOP_P_ROUNDS, 0):  # rejection rounds; then one draw each, the rest by sorting
        monkeypatch.setattr(module, "TOP_P_ROUNDS", rounds)
        drawn = module.sample_top_p(probs.repeat(20000, 1), 0.75, generator)
        frequencies = torch.bincount(drawn, minlength=7).float() / 20000
        assert frequencies[3:].sum() == 0, "nothing outside the nucleus"
        assert torch.allclose(frequencies, expected, atol=0.015), (rounds, frequencies)


def tiny_llama(tokenizer: Any) -> Any:
    """KULLM3's architecture (Llama, grouped-query attention), tiny, with random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.5,  # peaky logits: batching's rounding cannot flip a greedy choice
        eos_token_id=2,
    )
    model: Any = LlamaForCausalLM(config)
    return model.eval()


def test_a_llama_model_batched_matches_its_own_generate(model_dir: Path) -> None:
    """KULLM3's architecture (Llama, grouped-query attention) through the same engine and cache."""
    from transformers import AutoTokenizer

    from inference.engine import Sampling
    from inference.engines.builtin import BuiltinEngine
    from inference.prompt import visible_answer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = tiny_llama(tokenizer)
    engine = BuiltinEngine(
        model,
        tokenizer,
        model_id="tiny-llama",
        sampling=Sampling(do_sample=False),
        max_batch_size=4,
        prefill_chunk=24,
    )
    questions = ["딥러닝이 뭐야?", "한국의 수도는 어디야?", "고려대학교는 어디에 있어? 자세히 설명해 줘. " * 3]
    expected, answers = {}, {}
    for i, question in enumerate(questions):
        ids = tokenizer(question, add_special_tokens=False, return_tensors="pt").input_ids
        generated = model.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)
        text = tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)
        # The engine holds back a last token that ends inside a UTF-8 sequence (random weights produce those).
        expected[str(i)] = visible_answer(str(text), final=True)[0].rstrip("\ufffd")
        engine.add(GenerationRequest(str(i), question, 12, ignore_eos=True))
        for update in engine.step():  # each joins a batch that is already decoding (the longest in chunks)
            answers[update.id] = update.text
    while engine.active:
        answers |= {update.id: update.text for update in engine.step()}
    assert answers == expected


# ------------------------------------------------------------------ CUDA_GRAPHS=1: decode steps at fixed shapes


def decode_both_ways(
    model: Any, tokenizer: Any, seed: int | None, speculative: str = "off"
) -> tuple[dict[str, str], BuiltinEngine]:
    """The same questions, joining a running batch and leaving it, decoded eagerly and at fixed shapes: the
    eager answers, and the fixed-shape engine (which must have given the same ones)."""
    from bench.engine import prompts
    from inference.engine import Sampling
    from inference.engines.builtin import BuiltinEngine

    answers = []
    for fixed in (False, True):
        sampling = Sampling(do_sample=seed is not None, seed=seed)
        engine = BuiltinEngine(
            model,
            tokenizer,
            model_id="t",
            sampling=sampling,
            max_batch_size=8,
            fixed_shapes=fixed,
            speculative=speculative,
            step_tokens=64,
        )
        texts = prompts(11)
        for i, text in enumerate(texts[:5]):
            engine.add(GenerationRequest(str(i), text, 20 + 9 * i, ignore_eos=True))
        finished: dict[str, GenerationUpdate] = {}
        run(engine, finished, steps=4)
        for i, text in enumerate(texts[5:], 5):  # join the running batch, as rows leave it
            engine.add(GenerationRequest(str(i), text, 10 + 7 * i, ignore_eos=True))
        run(engine, finished)
        answers.append({rid: update.text for rid, update in finished.items()})
    assert answers[1] == answers[0]
    return answers[0], engine


@pytest.mark.parametrize("architecture", ["gpt-neox", "llama"])
def test_fixed_shape_decoding_gives_the_eager_answers(
    model_dir: Path, architecture: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through padded batches (rows 1 to 8), several attention widths and reallocated buffers: the same
    tokens as eager decoding, greedy and sampled with a seed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from inference.engines.builtin import decode_graphs

    monkeypatch.setattr(decode_graphs, "COLUMN_BUCKET", 16)  # widths change every 16 columns here
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = tiny_llama(tokenizer) if architecture == "llama" else AutoModelForCausalLM.from_pretrained(model_dir)
    seen: set[tuple[int, int, int]] = set()
    step = decode_graphs.FixedShapeDecoder.step

    def recorded(self: Any, cache: Any, tokens: Any, positions: Any, lags: Any) -> Any:
        logits = step(self, cache, tokens, positions, lags)
        seen.add((self.last.rows, self.last.width, self.last.queries))
        assert self.alive <= 8 * 6  # shapes too narrow for the cache's end are dropped (1, 2, 3, 5, 9, 17 queries)
        return logits

    monkeypatch.setattr(decode_graphs.FixedShapeDecoder, "step", recorded)
    greedy, engine = decode_both_ways(model, tokenizer, seed=None)
    assert len(greedy) == 11 and all(greedy.values())
    assert engine.graphs is not None and engine.cache.copies >= 1
    assert engine.cache.compactions >= 1  # the live columns moved back to column 0 along the way
    assert {rows for rows, _, _ in seen} >= {1, 2, 4, 8}
    assert len({width for _, width, _ in seen}) >= 4
    decode_both_ways(model, tokenizer, seed=7)
    # Speculative steps, the rows' guesses kept or refused: greedy, the very same answers.
    guessed, _ = decode_both_ways(model, tokenizer, seed=None, speculative="on")  # prompt lookup's guesses
    assert guessed == greedy
    from bench.engine import prompts

    knowing_the_answers(monkeypatch, model, tokenizer, prompts(11))
    guessed, engine = decode_both_ways(model, tokenizer, seed=None, speculative="on")
    assert guessed == greedy
    stats = engine.speculation
    assert stats.steps >= 10 and stats.drafted * 0.3 < stats.accepted < stats.drafted * 0.9, stats
    fed = {queries for _, _, queries in seen}  # speculative steps at fixed shapes, padded: 1, 2, 3, 5, 9 or 17 tokens
    assert fed >= {1, 17} and len(fed) >= 3 and fed <= {1, 2, 3, 5, 9, 17}


@pytest.mark.parametrize(("architecture", "queries"), [("gpt-neox", 1), ("llama", 1), ("gpt-neox", 3), ("llama", 3)])
def test_the_fixed_shape_step_traces_as_one_graph(model_dir: Path, architecture: str, queries: int) -> None:
    """What a CUDA graph records must not read a tensor back into Python (a capture fails on that, or worse,
    bakes in one step's value): torch's tracer, with no graph break allowed, finds any such read on a CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from inference.engine import Sampling
    from inference.engines.builtin import BuiltinEngine

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = tiny_llama(tokenizer) if architecture == "llama" else AutoModelForCausalLM.from_pretrained(model_dir)
    engine = BuiltinEngine(
        model, tokenizer, model_id="t", sampling=Sampling(do_sample=False), max_batch_size=4, fixed_shapes=True
    )
    for rid, question in [("a", "딥러닝이 뭐야?"), ("b", "한국의 수도는 어디야?"), ("c", "인사해줘")]:
        engine.add(GenerationRequest(rid, f"### 질문: {question}\n\n### 답변:", 8, ignore_eos=True))
    engine.step()
    engine.step()  # a decode step of 3 rows, padded to 4
    decoder = engine.graphs
    assert decoder is not None and decoder.last is not None and decoder.last.rows == 4
    if queries > 1:  # a speculative step: each row's next token and two guesses
        engine.cache.make_room(queries)
        with torch.inference_mode():
            tokens = torch.tensor([[5, 6, 7]] * 3)
            decoder.step(engine.cache, tokens, torch.tensor([20, 21, 22]), torch.tensor([0, 1, 0]))
        assert decoder.last.queries == queries
    with torch.inference_mode():
        eager = decoder.forward(decoder.last, engine.cache)  # rewrites the same column with the same keys
        torch._dynamo.reset()
        traced = torch.compile(decoder.forward, backend="eager", fullgraph=True)(decoder.last, engine.cache)
    torch.testing.assert_close(traced, eager, atol=1e-4, rtol=1e-3)  # the tracer may order a sum differently


def test_a_failed_graph_capture_leaves_the_engine_decoding_eagerly(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fails(*_: Any) -> Any:
        raise GraphsUnavailable("RuntimeError: operation not permitted when stream is capturing")

    loaded = load(model_dir, max_batch_size=4, cuda_graphs=True)
    engine = transformers_engine(loaded)
    assert engine.graphs is not None
    monkeypatch.setattr(engine.graphs, "step", fails)
    finished: dict[str, GenerationUpdate] = {}
    loaded.engine.add(request(loaded, "dl", "딥러닝이 뭐야?"))
    loaded.engine.add(request(loaded, "capital", "한국의 수도는 어디야?"))
    run(loaded.engine, finished)
    assert engine.graphs is None
    assert "CUDA graphs are off for this worker, decoding eagerly: RuntimeError: operation not permitted" in caplog.text
    assert finished["dl"].text == trained.DEEP_LEARNING and finished["capital"].text == trained.CAPITAL


def test_a_model_on_several_devices_is_not_graphed(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A graph records one device's stream; DEVICE_MAP=auto over GPUs would lose the other devices' kernels."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from inference.engine import Sampling
    from inference.engines.builtin import BuiltinEngine

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.lm_head.to("meta")  # a second device, as far as the engine can tell
    engine = BuiltinEngine(
        model,
        AutoTokenizer.from_pretrained(model_dir),
        model_id="t",
        sampling=Sampling(),
        max_batch_size=2,
        fixed_shapes=True,
    )
    assert engine.graphs is None
    assert "CUDA_GRAPHS=1 needs the model on one device; it spans 2: decoding eagerly" in caplog.text


@pytest.mark.parametrize(
    ("setting", "device", "paged", "on"),
    [
        ("auto", "cuda", False, True),  # builtin's graphs: 1.2-2.3x eager on an H200 (bench/RESULTS.md)
        ("auto", "cpu", False, False),  # no graph to replay; fixed shapes only cost a CPU time
        ("auto", "cuda", True, False),  # transformers' graphs under paged: 0.34-0.58x its eager path
        (True, "cpu", False, True),
        (True, "cuda", True, True),
        (False, "cuda", False, False),
    ],
)
def test_cuda_graphs_auto_graphs_builtin_on_a_gpu_only(setting: bool | str, device: str, paged: bool, on: bool) -> None:
    import torch

    from inference.model import cuda_graphs_on

    assert cuda_graphs_on(setting, torch.device(device), paged=paged) is on


def test_the_default_worker_settings_decode_eagerly_on_a_cpu(loaded: Loaded) -> None:
    from inference.settings import WorkerSettings

    assert settings_of(WorkerSettings).cuda_graphs == "auto"
    assert transformers_engine(loaded).graphs is None
