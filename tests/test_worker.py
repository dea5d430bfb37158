"""The worker loop in-process on a scripted engine: outcomes, cancel, duplicates, failures, out of memory.

Real Redis, the real `Worker`, `Outbox` and `BatchGovernor`; only the engine is scripted (the
tiny model's answers, no torch), so each test takes a second or less. What needs processes —
killing, freezing or signalling a worker, `kullm ask` itself — is in tests/test_worker_e2e.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading

from bot.settings import ClientSettings
from chatbus import AnswerEvent, Bus, Delta, Done, ErrorEvent, Question, Restart
from chatbus.keys import FIELD
from inference.engine import DelegatingEngine, GenerationUpdate
from inference.governor import OOM_CEILING_S, RESTORE_BATCH_AFTER_STEPS, BatchGovernor
from inference.worker import Worker
from kullm import operator
from testkit import trained
from testkit.engines import RunWorker
from testkit.faults import POISON, OutOfMemoryOnce, PoisonEngine
from testkit.reads import entry_fields, stream_entries
from testkit.redis_server import RedisServer
from testkit.settings import settings_of


async def follow(bus: Bus, question_id: str) -> list[AnswerEvent]:
    return [event async for _, event in bus.answers.follow(question_id, start_timeout_s=30, stall_timeout_s=30)]


def counted(worker: Worker, outcome: str) -> float:
    return float(worker.metrics.questions.labels(outcome)._value.get())


async def test_each_refused_question_gets_its_outcome(bus: Bus, run_worker: RunWorker) -> None:
    expired = Question.new("terminal", "딥러닝이 뭐야?", ttl_s=-1)
    cancelled = Question.new("terminal", "딥러닝이 뭐야?", ttl_s=60)
    too_long = Question.new("terminal", "아주 긴 질문입니다. " * 60, ttl_s=60)
    await bus.queue.request_cancel(cancelled.id)
    for question in (expired, cancelled, too_long):
        await bus.queue.enqueue(question)
    await bus.redis.xadd(bus.keys.questions, {FIELD: b"\xff\xfe not json"})
    await bus.redis.xadd(bus.keys.questions, {FIELD: '{"v": 1, "id": "half-a-question", "platform": "x"}'})
    huge = {"v": 1, "id": "huge-one", "platform": "x", "question": "가" * 20_000, "created_at": 1, "expires_at": 9e9}
    await bus.redis.xadd(bus.keys.questions, {FIELD: json.dumps(huge)})  # past the contract's limit
    good = Question.new("terminal", "인사해줘", ttl_s=60)
    await bus.queue.enqueue(good)
    run_worker(context_window=300, max_new_tokens=200)
    assert await follow(bus, expired.id) == [ErrorEvent(code="expired", message="the question waited past its expiry")]
    assert await follow(bus, cancelled.id) == [ErrorEvent(code="cancelled", message="cancelled before generation")]
    too_long_events = await follow(bus, too_long.id)
    assert isinstance(too_long_events[-1], ErrorEvent) and too_long_events[-1].code == "too_long"
    assert await follow(bus, "half-a-question") == [ErrorEvent(code="failed", message="malformed question entry")]
    [refused] = await follow(bus, "huge-one")
    assert isinstance(refused, ErrorEvent) and refused.code == "too_long"
    good_events = await follow(bus, good.id)
    assert isinstance(good_events[-1], Done) and good_events[-1].text == trained.GREETING
    assert await bus.redis.xlen(bus.keys.dead) == 3
    dead = [fields[FIELD] for _, fields in await stream_entries(bus.redis, bus.keys.dead)]
    assert all(len(raw.encode()) < 20_000 for raw in dead)  # a truncated copy: dead letters are capped in bytes too
    assert await bus.queue.depth() == 0


async def test_cancel_mid_answer_keeps_the_partial_text(bus: Bus, run_worker: RunWorker) -> None:
    run_worker()
    story = Question.new("terminal", "긴 이야기를 들려줘", ttl_s=60)
    await bus.queue.enqueue(story)
    events = []
    async for _, event in bus.answers.follow(story.id, start_timeout_s=30):
        events.append(event)
        if isinstance(event, Delta) and len(events) == 3:
            await bus.queue.request_cancel(story.id)
    assert events[-1] == ErrorEvent(code="cancelled", message="cancelled by the user")
    partial = "".join(e.text for e in events if isinstance(e, Delta))
    assert partial and trained.LONG_STORY.startswith(partial) and partial != trained.LONG_STORY
    after = Question.new("terminal", "한국의 수도는 어디야?", ttl_s=60)
    await bus.queue.enqueue(after)
    final = (await follow(bus, after.id))[-1]
    assert isinstance(final, Done) and final.text == trained.CAPITAL


async def test_a_repeated_question_id_is_acked_and_never_answered_twice(bus: Bus, run_worker: RunWorker) -> None:
    worker = run_worker()
    answered = Question.new("terminal", "한국의 수도는 어디야?", ttl_s=60)
    await bus.queue.enqueue(answered)
    final = (await follow(bus, answered.id))[-1]
    assert isinstance(final, Done) and final.text == trained.CAPITAL
    story = Question.new("terminal", "긴 이야기를 들려줘", ttl_s=60)
    await bus.queue.enqueue(story)
    async for _, event in bus.answers.follow(story.id, start_timeout_s=30):
        if isinstance(event, Delta):
            break
    await bus.queue.enqueue(answered)  # already answered
    await bus.queue.enqueue(story)  # in flight right now, from another entry
    for question in (answered, story):
        kinds = [type(e).__name__ for e in await follow(bus, question.id)]
        assert kinds.count("Done") == 1 and kinds.count("Started") == 1 and "Restart" not in kinds, kinds
    assert counted(worker, "duplicate") == 2
    assert await bus.queue.depth() == 0 and (await bus.workers.stats()).pending == 0


async def test_a_poison_question_is_dead_lettered_and_its_batch_mates_answered(
    bus: Bus, redis_server: RedisServer, run_worker: RunWorker
) -> None:
    poison = Question.new("terminal", f"{POISON} 이 질문은 생성을 망가뜨립니다", ttl_s=60)
    innocent = Question.new("terminal", "한국의 수도는 어디야?", ttl_s=60)
    for question in (poison, innocent):
        await bus.queue.enqueue(question)
    worker = run_worker(wrap=PoisonEngine, max_deliveries=2, reclaim_idle_s=0.5)
    innocent_events = await follow(bus, innocent.id)  # failed in a batch with the poison, then retried alone
    assert isinstance(innocent_events[-1], Done) and innocent_events[-1].text == trained.CAPITAL
    [*_, failed] = await follow(bus, poison.id)
    assert isinstance(failed, ErrorEvent) and failed.code == "failed" and "생성" not in failed.message
    dead = await stream_entries(bus.redis, bus.keys.dead)
    assert len(dead) == 1 and poison.id in dead[0][1][FIELD]
    assert counted(worker, "dead") == 1 and await bus.queue.depth() == 0
    shown = io.StringIO()
    await operator.status(settings_of(ClientSettings, redis_url=redis_server.url), out=shown)
    assert "dead letters: 1" in shown.getvalue()
    greeting = Question.new("terminal", "인사해줘", ttl_s=60)  # still serving
    await bus.queue.enqueue(greeting)
    final = (await follow(bus, greeting.id))[-1]
    assert isinstance(final, Done) and final.text == trained.GREETING


async def test_out_of_memory_restarts_the_batch_smaller(bus: Bus, run_worker: RunWorker) -> None:
    questions = [Question.new("terminal", q, ttl_s=60) for q in ("딥러닝이 뭐야?", "고려대학교는 어디에 있어?")]
    for question in questions:
        await bus.queue.enqueue(question)
    worker = run_worker(wrap=OutOfMemoryOnce)
    answers = [await follow(bus, q.id) for q in questions]
    finals = [events[-1] for events in answers]
    assert [f.text for f in finals if isinstance(f, Done)] == [trained.DEEP_LEARNING, trained.KOREA_UNIV]
    assert all(any(isinstance(e, Restart) for e in events) for events in answers)
    assert worker.metrics.oom._value.get() == 1
    assert worker.engine.max_batch_size == 1 and worker.health()[0]


async def test_every_step_runs_on_the_one_engine_thread(bus: Bus, run_worker: RunWorker) -> None:
    threads: list[str] = []

    class Recording(DelegatingEngine):
        def step(self) -> list[GenerationUpdate]:
            threads.append(threading.current_thread().name)
            return self.inner.step()

    run_worker(wrap=Recording)
    questions = [Question.new("terminal", q, ttl_s=60) for q in ("딥러닝이 뭐야?", "인사해줘")]
    for question in questions:
        await bus.queue.enqueue(question)
    for question in questions:
        assert isinstance((await follow(bus, question.id))[-1], Done)
    assert len(threads) > 10 and set(threads) == {threads[0]} and threads[0].startswith("engine")


async def test_a_burst_that_wakes_an_idle_worker_is_prefilled_together(bus: Bus, run_worker: RunWorker) -> None:
    # The blocked read returns at the burst's first entry; the rest are read at once, not one step later.
    batches: list[int] = []

    class Recording(DelegatingEngine):
        def step(self) -> list[GenerationUpdate]:
            batches.append(self.inner.active)
            return self.inner.step()

    run_worker(wrap=Recording, max_batch_size=8)
    await asyncio.sleep(0.3)  # idle: blocked in XREADGROUP
    texts = ("딥러닝이 뭐야?", "인사해줘", "고려대학교는 어디에 있어?")
    questions = [Question.new("terminal", text, ttl_s=60) for text in texts]
    async with bus.redis.pipeline(transaction=False) as pipe:  # one write, as a busy channel's questions arrive
        for question in questions:
            pipe.xadd(bus.keys.questions, entry_fields(question.to_fields()))
        await pipe.execute()
    for question in questions:
        assert isinstance((await follow(bus, question.id))[-1], Done)
    assert batches[0] == len(questions)


def test_the_governor_halves_after_out_of_memory_and_grows_back_below_the_failed_size() -> None:
    now = [0.0]
    governor = BatchGovernor(8, clock=lambda: now[0])
    assert governor.out_of_memory(1) == 0, "a question that does not fit alone is failed, not retried here"
    size = governor.out_of_memory(6)
    assert size == 3
    for _ in range(10 * RESTORE_BATCH_AFTER_STEPS):
        size = governor.stepped(size)
    assert size == 5, "grown back one row at a time, never into the size that failed"
    now[0] += OOM_CEILING_S + 1
    for _ in range(10 * RESTORE_BATCH_AFTER_STEPS):
        size = governor.stepped(size)
    assert size == 8, "the ceiling lapses: back to MAX_BATCH_SIZE, not above"
