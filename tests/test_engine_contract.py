"""One contract, every engine ENGINE names, on the tiny trained model (greedy, so answers are the trained ones).

`builtin` (our batcher), `builtin+graphs` (the same with CUDA_GRAPHS=1: on a CPU its decode steps run at
the fixed shapes a GPU captures as graphs), `paged` (transformers' continuous batching; the tiny model
is GPT-NeoX, so this runs our adapter) and `openai` (a real `transformers serve` process on the same model,
streamed over HTTP): they stream, stop at eos and at a new `###` section, end at
`max_new_tokens`, keep at most `max_batch_size` in flight, free a cancelled request's slot at
once, and come back from a reset or a failed step able to serve. Then the worker on each
non-default engine, through the real queue.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatbus import Bus, Done, ErrorEvent, Question
from chatbus.keys import FIELD
from inference.engine import Engine, GenerationRequest, GenerationUpdate, Loaded, Sampling, engine_factory
from inference.errors import EngineLoadError, EngineOutOfMemory
from inference.settings import WorkerSettings
from testkit import trained
from testkit.engines import IN_PROCESS_MODEL, RunWorker
from testkit.faults import ModelsFront
from testkit.processes import ServeProcess
from testkit.reads import stream_entries
from testkit.redis_server import RedisServer, free_port
from testkit.settings import settings_of

pytestmark = IN_PROCESS_MODEL

ENGINES = ["builtin", "builtin+graphs", "paged", pytest.param("openai", marks=pytest.mark.e2e)]
WAIT_STEPS = 2000  # a bound on any loop below (an openai step waits up to 50 ms for text)


def settings_for(model_dir: Path, engine: str, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "model_id": str(model_dir),
        "hf_hub_offline": True,
        "do_sample": False,
        "max_batch_size": 8,
        "engine": engine,
        "engine_start_timeout_s": 5,
        **overrides,
    }
    return settings_of(WorkerSettings, **values)


@pytest.fixture(scope="module", params=ENGINES)
def loaded(request: pytest.FixtureRequest, model_dir: Path) -> Iterator[Loaded]:
    engine, _, graphs = request.param.partition("+")
    url = request.getfixturevalue("engine_server").url if engine == "openai" else None
    built = engine_factory(engine)(settings_for(model_dir, engine, engine_url=url, cuda_graphs=bool(graphs)))
    yield built
    built.engine.close()


@pytest.fixture
def engine(loaded: Loaded) -> Iterator[Engine]:
    loaded.engine.max_batch_size = 8
    yield loaded.engine
    loaded.engine.reset()  # a failed assertion leaves nothing running for the next test


def ask(loaded: Loaded, rid: str, question: str, context: str = "", max_new_tokens: int = 512) -> GenerationRequest:
    prompt = loaded.prompts.build(question, context=context, max_new_tokens=max_new_tokens)
    return GenerationRequest(rid, prompt.text, max_new_tokens)


def run(engine: Engine, finished: dict[str, GenerationUpdate], until: str | None = None) -> int:
    """Step until every request finished (or `until` did); returns the largest batch seen."""
    peak = 0
    for _ in range(WAIT_STEPS):
        if not engine.active or (until is not None and until in finished):
            return peak
        for update in engine.step():
            assert update.error is None, update.error
            if update.finished:
                finished[update.id] = update
        peak = max(peak, engine.last_batch)
    raise AssertionError(f"still running after {WAIT_STEPS} steps: {engine.active}")


def test_a_solo_answer_is_the_trained_one_and_eos_ends_it(loaded: Loaded, engine: Engine) -> None:
    finished: dict[str, GenerationUpdate] = {}
    engine.add(ask(loaded, "dl", "딥러닝이 뭐야?"))
    run(engine, finished)
    assert finished["dl"].text == trained.DEEP_LEARNING
    assert finished["dl"].finish_reason == "stop"  # the trained answer ends with eos (id 2)
    assert finished["dl"].prompt_tokens > 0 and finished["dl"].completion_tokens > 50


def test_batched_and_joining_requests_get_their_solo_answers(
    loaded: Loaded, engine: Engine, request: pytest.FixtureRequest
) -> None:
    finished: dict[str, GenerationUpdate] = {}
    engine.add(ask(loaded, "story", "긴 이야기를 들려줘"))
    engine.add(ask(loaded, "capital", "한국의 수도는 어디야?"))
    run(engine, finished, until="capital")
    engine.add(ask(loaded, "dl", "딥러닝이 뭐야?"))  # joins while the story runs (on our batchers)
    engine.add(
        ask(loaded, "ctx", "이 글을 요약해줘", "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다.")
    )
    peak = run(engine, finished)
    assert finished["story"].text == trained.LONG_STORY
    assert finished["capital"].text == trained.CAPITAL
    assert finished["dl"].text == trained.DEEP_LEARNING
    assert finished["ctx"].text == trained.CONTEXT_ANSWER
    # In flight at once: on ours, story, dl and ctx; `transformers serve` (plain mode) may finish the story first.
    assert peak >= (2 if request.node.callspec.params["loaded"] == "openai" else 3)


def test_a_new_section_stops_the_answer(loaded: Loaded, engine: Engine) -> None:
    finished: dict[str, GenerationUpdate] = {}
    engine.add(ask(loaded, "hi", "인사해줘"))
    run(engine, finished)
    assert finished["hi"].text == trained.GREETING  # the trained "### 질문: …" that follows is cut
    assert finished["hi"].finish_reason == "stop"


def test_max_new_tokens_ends_with_length(loaded: Loaded, engine: Engine) -> None:
    finished: dict[str, GenerationUpdate] = {}
    engine.add(ask(loaded, "short", "딥러닝이 뭐야?", max_new_tokens=5))
    run(engine, finished)
    assert finished["short"].finish_reason == "length"
    assert finished["short"].completion_tokens == 5
    assert trained.DEEP_LEARNING.startswith(finished["short"].text)


def test_at_most_max_batch_size_run_at_once(loaded: Loaded, engine: Engine) -> None:
    engine.max_batch_size = 2
    finished: dict[str, GenerationUpdate] = {}
    for rid, question in [("a", "딥러닝이 뭐야?"), ("b", "인사해줘"), ("c", "한국의 수도는 어디야?")]:
        engine.add(ask(loaded, rid, question))
    assert run(engine, finished) == 2
    assert [finished[r].text for r in "abc"] == [trained.DEEP_LEARNING, trained.GREETING, trained.CAPITAL]


def test_cancel_frees_the_slot_at_once(loaded: Loaded, engine: Engine) -> None:
    engine.max_batch_size = 1
    finished: dict[str, GenerationUpdate] = {}
    engine.add(ask(loaded, "story", "긴 이야기를 들려줘"))
    engine.add(ask(loaded, "dl", "딥러닝이 뭐야?"))
    engine.step()  # the story runs; the other waits for its slot
    assert engine.active == 2 and engine.last_batch == 1
    engine.cancel("story")
    assert engine.active == 1  # gone now, not after the story's next token
    run(engine, finished)
    assert "story" not in finished
    assert finished["dl"].text == trained.DEEP_LEARNING


def test_streamed_texts_grow_into_the_final_answer(loaded: Loaded, engine: Engine) -> None:
    texts: list[str] = []
    engine.add(ask(loaded, "dl", "딥러닝이 뭐야?"))
    for _ in range(WAIT_STEPS):
        if not engine.active:
            break
        texts += [update.text for update in engine.step()]
    assert texts[-1] == trained.DEEP_LEARNING
    assert all(texts[i + 1].startswith(texts[i]) for i in range(len(texts) - 1))
    assert len(texts) > 10


def test_reset_drops_everything_and_the_engine_serves_on(loaded: Loaded, engine: Engine) -> None:
    engine.max_batch_size = 1
    engine.add(ask(loaded, "running", "긴 이야기를 들려줘"))
    engine.step()
    engine.add(ask(loaded, "waiting", "인사해줘"))
    assert engine.reset() == ["running", "waiting"]  # the batch first, then those still waiting
    assert engine.active == 0
    finished: dict[str, GenerationUpdate] = {}
    engine.add(ask(loaded, "running", "한국의 수도는 어디야?"))  # the same id again: a retried question
    run(engine, finished)
    assert finished["running"].text == trained.CAPITAL


# ------------------------------------------------------------------ failures, engine by engine


def test_paged_out_of_memory_is_said_as_such_and_a_reset_serves_on(model_dir: Path) -> None:
    import torch

    from inference.engines.paged import PagedEngine

    loaded = engine_factory("paged")(settings_for(model_dir, "paged"))
    engine = loaded.engine
    assert isinstance(engine, PagedEngine)
    model: Any = engine.model
    forward = model.forward

    def out_of_memory(*args: object, **kwargs: object) -> object:
        raise torch.OutOfMemoryError("injected")  # what CUDA raises inside transformers' thread

    try:
        model.forward = out_of_memory
        engine.add(ask(loaded, "a", "딥러닝이 뭐야?"))
        engine.add(ask(loaded, "b", "인사해줘"))
        with pytest.raises(EngineOutOfMemory):
            for _ in range(WAIT_STEPS):
                engine.step()
        assert engine.active == 2, "nobody is dropped by a failed step"
        model.forward = forward
        assert engine.reset() == ["a", "b"]
        finished: dict[str, GenerationUpdate] = {}
        engine.add(ask(loaded, "a", "딥러닝이 뭐야?"))
        run(engine, finished)
        assert finished["a"].text == trained.DEEP_LEARNING
    finally:
        model.forward = forward
        engine.close()


def test_openai_a_server_that_is_down_fails_each_question_and_says_why() -> None:
    from inference.engines.openai.engine import OpenAIEngine, Server

    down = Server(f"http://127.0.0.1:{free_port()}/v1", "kullm", None, read_timeout_s=5)
    engine = OpenAIEngine(down, sampling=Sampling(), max_batch_size=4, count_tokens=len)
    try:
        engine.add(GenerationRequest("q1", "### 질문: 안녕\n\n### 답변:", 16))
        engine.add(GenerationRequest("q2", "### 질문: 안녕\n\n### 답변:", 16))
        failed: list[GenerationUpdate] = []
        for _ in range(WAIT_STEPS):
            if not engine.active:
                break
            failed += engine.step()
        assert sorted(u.id for u in failed) == ["q1", "q2"] and engine.active == 0
        assert all(u.error and "cannot reach the engine server" in u.error for u in failed)
    finally:
        engine.close()


def test_openai_refuses_to_start_without_a_reachable_server(model_dir: Path) -> None:
    with pytest.raises(EngineLoadError, match="ENGINE_URL"):
        engine_factory("openai")(settings_for(model_dir, "openai"))
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineLoadError, match="did not answer in 0 s"):
        engine_factory("openai")(settings_for(model_dir, "openai", engine_url=url, engine_start_timeout_s=0))


def test_openai_a_model_the_server_does_not_serve_is_refused(engine_server: ServeProcess, model_dir: Path) -> None:
    settings = settings_for(model_dir, "openai", engine_url=engine_server.url, engine_model="kullm-elsewhere")
    with pytest.raises(EngineLoadError, match="is not served"):
        engine_factory("openai")(settings)


def test_openai_a_server_that_cannot_list_its_models_is_asked_for_a_first_token(
    engine_server: ServeProcess, model_dir: Path
) -> None:
    """transformers serve 5.17 answers GET /v1/models with 500 on a host with no Hugging Face cache; the worker waited
    out ENGINE_START_TIMEOUT_S (600 s) and then blamed the server for not answering."""
    with ModelsFront(engine_server.url, 500) as front:
        started = time.monotonic()
        loaded = engine_factory("openai")(settings_for(model_dir, "openai", engine_url=front.url))
        assert time.monotonic() - started < 30 and front.models_asked == 1
        try:
            loaded.engine.add(ask(loaded, "q", "한국의 수도는 어디야?"))
            finished: dict[str, GenerationUpdate] = {}
            run(loaded.engine, finished)
            assert finished["q"].text == trained.CAPITAL
        finally:
            loaded.engine.close()
        elsewhere = settings_for(model_dir, "openai", engine_url=front.url, engine_model="kullm-elsewhere")
        with pytest.raises(EngineLoadError, match=r"lists no models, .*'kullm-elsewhere' was refused \(HTTP 400"):
            engine_factory("openai")(elsewhere)


def test_openai_a_model_probe_that_meets_no_openai_server_says_so(redis_server: RedisServer) -> None:
    from inference.engines.openai.engine import probe_model

    # Redis hangs up on anything that looks like HTTP: the worker stops with a sentence, not a traceback.
    with pytest.raises(EngineLoadError, match=r"first completion from ENGINE_MODEL='kullm' failed: cannot reach"):
        probe_model(f"http://127.0.0.1:{redis_server.port}/v1", "kullm", None, timeout_s=10)


def test_openai_waits_while_a_front_says_the_server_is_starting(engine_server: ServeProcess, model_dir: Path) -> None:
    with ModelsFront(engine_server.url, 503, times=2) as front:
        loaded = engine_factory("openai")(settings_for(model_dir, "openai", engine_url=front.url))
        loaded.engine.close()
        assert front.models_asked == 3


def test_openai_a_server_error_fails_that_question_alone(engine_server: ServeProcess, model_dir: Path) -> None:
    loaded = engine_factory("openai")(settings_for(model_dir, "openai", engine_url=engine_server.url))
    engine = loaded.engine
    try:
        engine.add(ask(loaded, "ok", "한국의 수도는 어디야?"))
        engine.add(
            GenerationRequest("bad", ask(loaded, "x", "인사해줘").prompt, max_new_tokens=0)
        )  # the server refuses
        updates: dict[str, GenerationUpdate] = {}
        for _ in range(WAIT_STEPS):
            if not engine.active:
                break
            updates |= {u.id: u for u in engine.step() if u.finished}
        assert (
            updates["bad"].error
            and "engine server" in updates["bad"].error
            and "max_new_tokens" in updates["bad"].error
        )
        assert updates["ok"].error is None and updates["ok"].text == trained.CAPITAL
    finally:
        engine.close()


# ------------------------------------------------------------------ the worker on each engine, through the queue


@pytest.mark.parametrize("kind", ["builtin+graphs", "paged", pytest.param("openai", marks=pytest.mark.e2e)])
async def test_the_worker_answers_through_the_queue_on(
    kind: str, bus: Bus, run_worker: RunWorker, request: pytest.FixtureRequest
) -> None:
    engine, _, graphs = kind.partition("+")
    url = request.getfixturevalue("engine_server").url if kind == "openai" else None
    run_worker(engine, engine_url=url, engine_start_timeout_s=5, cuda_graphs=bool(graphs))
    questions = [Question.new("terminal", q, ttl_s=60) for q in ("딥러닝이 뭐야?", "인사해줘", "한국의 수도는 어디야?")]
    for question in questions:
        await bus.queue.enqueue(question)
    finals = [
        [e async for _, e in bus.answers.follow(q.id, start_timeout_s=60, stall_timeout_s=60)][-1] for q in questions
    ]
    assert [f.text for f in finals if isinstance(f, Done)] == [trained.DEEP_LEARNING, trained.GREETING, trained.CAPITAL]


async def test_a_worker_whose_server_is_down_dead_letters_and_tells_the_user(bus: Bus, run_worker: RunWorker) -> None:
    from inference.engines.openai.engine import OpenAIEngine, Server

    down = Server(f"http://127.0.0.1:{free_port()}/v1", "kullm", None, read_timeout_s=5)

    def server_down(_: Engine) -> Engine:
        return OpenAIEngine(down, sampling=Sampling(), max_batch_size=4, count_tokens=len)

    question = Question.new("terminal", "한국의 수도는 어디야?", ttl_s=60)
    await bus.queue.enqueue(question)
    run_worker(wrap=server_down, max_deliveries=2)
    [*_, final] = [e async for _, e in bus.answers.follow(question.id, start_timeout_s=30, stall_timeout_s=30)]
    assert isinstance(final, ErrorEvent) and final.code == "failed"
    assert "cannot reach the engine server" in final.message and "서울" not in final.message
    dead = await stream_entries(bus.redis, bus.keys.dead)
    assert len(dead) == 1 and question.id in dead[0][1][FIELD]
