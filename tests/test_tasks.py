"""Summaries, translations and proofreading as tasks in the queue: how a long text is split, that every part
goes to the engine in one batch, the order outputs are put back together in, and the progress reported.

The worker loop is the real one on real Redis; the engine is scripted (`engines.task_answer`): its output
is made from the text each request got, so the chunk boundaries and the order are asserted exactly. The
scripted engine counts a character as a token.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from chatbus import AnswerEvent, Bus, Delta, Done, ErrorEvent, Progress, Question, Restart
from chatbus.messages import MAX_CONTEXT_CHARS, MAX_TASK_PARTS
from inference import tasks
from inference.prompt import PromptBuilder, Template
from inference.worker import Worker
from testkit import trained
from testkit.engines import RunWorker, ScriptedEngine
from testkit.polling import eventually
from testkit.processes import StartWorker, run_kullm
from testkit.redis_server import RedisServer

KOREAN = [f"{i}번째 문장은 구름이 번역할 글입니다." for i in range(1, 13)]
THREAD = [f"사람{i % 3}: {i}번 메시지, 오늘 회의에서 정한 일 {i}가지를 정리했습니다." for i in range(1, 31)]


async def follow(bus: Bus, question_id: str) -> list[AnswerEvent]:
    return [event async for _, event in bus.answers.follow(question_id, start_timeout_s=30, stall_timeout_s=30)]


async def run_task(bus: Bus, task: str, text: str) -> list[AnswerEvent]:
    question = Question.new("terminal", task, ttl_s=60, task=task, context=text)
    await bus.queue.enqueue(question)
    return await follow(bus, question.id)


def engine_of(worker: Worker) -> ScriptedEngine:
    assert isinstance(worker.engine, ScriptedEngine)
    return worker.engine


def context_of(prompt: str) -> str:
    match = re.fullmatch(r"### 질문: .*?\n\n### 맥락: (.*)\n\n### 답변:", prompt, re.DOTALL)
    assert match, prompt
    return match[1]


def streamed(events: list[AnswerEvent]) -> str:
    assert not any(isinstance(e, Restart) for e in events)
    return "".join(e.text for e in events if isinstance(e, Delta))


def test_text_splits_after_sentences_and_line_breaks_and_joins_back() -> None:
    text = "첫 문장입니다. 둘째 문장이에요! 셋째?\n\n새 문단 “인용.” 끝"
    pieces = tasks.sentences(text)
    assert "".join(pieces) == text
    assert pieces == ["첫 문장입니다. ", "둘째 문장이에요! ", "셋째?\n\n", "새 문단 “인용.” ", "끝"]
    assert tasks.chunks(["가나다라마바사"], lambda piece: len(piece) <= 3) == ["가나다", "라마바", "사"]
    assert tasks.translation_instruction("안녕하세요, 구름입니다.") == tasks.TRANSLATE_TO_ENGLISH
    assert tasks.translation_instruction("Hello, I am KULLM.") == tasks.TRANSLATE_TO_KOREAN


async def test_a_long_text_is_translated_in_sentence_chunks_of_one_batch_and_joined_in_order(
    bus: Bus, run_worker: RunWorker
) -> None:
    worker = run_worker(context_window=300, max_new_tokens=100)
    text = " ".join(KOREAN)
    events = await run_task(bus, "translate", text)
    done = events[-1]
    requests = engine_of(worker).received
    contexts = [context_of(r.prompt) for r in requests]
    assert len(contexts) > 1 and len({tasks.question_of(r.id) for r in requests}) == 1
    assert " ".join(contexts) == text, "contiguous, in order, nothing lost"
    assert all(c.endswith("입니다.") for c in contexts), "split only after a sentence"
    assert all(len(c) <= 75 for c in contexts), "each chunk's output fits MAX_NEW_TOKENS (75 %)"
    assert all(len(r.prompt) + 100 <= 300 for r in requests), "each prompt fits the window"
    assert all(tasks.TRANSLATE_TO_ENGLISH in r.prompt for r in requests)
    assert all(r.copies for r in requests), "a task's answers copy its text: SPECULATIVE=auto drafts for them"
    assert isinstance(done, Done) and done.text == " ".join(f"[EN] {c}" for c in contexts)
    assert streamed(events) == done.text, "streamed in order as the chunks came"
    assert not any(isinstance(e, Progress) for e in events), "one pass: nothing to count"
    assert done.prompt_tokens == sum(len(r.prompt) for r in requests)
    assert worker.metrics.tasks.labels("translate")._value.get() == 1


async def test_proofreading_and_english_to_korean_keep_paragraphs(bus: Bus, run_worker: RunWorker) -> None:
    run_worker(context_window=300, max_new_tokens=100)
    events = await run_task(bus, "proofread", "맞춤법이 틀린 문장 입니다.\n\n두번째 문단 이에요.")
    assert isinstance(events[-1], Done)
    assert events[-1].text == "[교정] 맞춤법이 틀린 문장 입니다.\n\n두번째 문단 이에요."
    events = await run_task(bus, "translate", "Hello. This is KULLM.")
    assert isinstance(events[-1], Done) and events[-1].text == "[KO] Hello. This is KULLM."


async def test_a_thread_that_fits_is_summarised_at_once(bus: Bus, run_worker: RunWorker) -> None:
    worker = run_worker()
    events = await run_task(bus, "summarize", "\n".join(THREAD[:3]))
    assert isinstance(events[-1], Done) and events[-1].text == f"요약({THREAD[0][:20]} ~ {THREAD[2][:20]}, 3줄)"
    assert len(engine_of(worker).received) == 1 and not any(isinstance(e, Progress) for e in events)
    question = Question.new("terminal", "이 글에서 회의 날짜만 알려 줘", ttl_s=60, context=THREAD[0])
    await bus.queue.enqueue(question)
    await follow(bus, question.id)
    plain = Question.new("terminal", "딥러닝이 뭐야?", ttl_s=60)
    await bus.queue.enqueue(plain)
    await follow(bus, plain.id)
    received = {r.id: r for r in engine_of(worker).received}
    assert received[question.id].copies and not received[plain.id].copies  # a 맥락 is copied from; a question not


async def test_a_long_thread_is_summarised_by_parts_in_one_batch_then_merged_in_order(
    bus: Bus, run_worker: RunWorker
) -> None:
    worker = run_worker(context_window=700, max_new_tokens=250, max_batch_size=16)
    events = await run_task(bus, "summarize", "\n".join(THREAD))
    requests = engine_of(worker).received
    parts = [r for r in requests if tasks.SUMMARIZE_PART in r.prompt]
    merges = [r for r in requests if tasks.MERGE in r.prompt]
    assert len(parts) > 2 and len(merges) == 1 and requests == [*parts, *merges], "all parts first, then one merge"
    assert all(tasks.question_of(r.id) == tasks.question_of(parts[0].id) != r.id for r in requests)
    part_lines = [context_of(r.prompt).split("\n") for r in parts]
    assert [line for lines in part_lines for line in lines] == THREAD, "parts split between messages, in order"
    assert all(len(r.prompt) + r.max_new_tokens <= 700 for r in requests)
    for lines, following in itertools.pairwise(part_lines):  # greedy: the next message did not fit
        wider = tasks.SUMMARIZE_PART, "\n".join([*lines, following[0]])
        assert len(f"### 질문: {wider[0]}\n\n### 맥락: {wider[1]}\n\n### 답변:") + 200 > 700
    summaries = [
        f"[{i + 1}부] 요약({lines[0][:20]} ~ {lines[-1][:20]}, {len(lines)}줄)" for i, lines in enumerate(part_lines)
    ]
    assert context_of(merges[0].prompt) == "\n".join(summaries), "the parts' summaries, in the thread's order"
    progress = [(e.done, e.total) for e in events if isinstance(e, Progress)]
    assert progress[0] == (0, len(parts)) and progress[-1] == (len(parts), len(parts))
    assert progress == sorted(progress), "counts only up"
    done = events[-1]
    assert (
        isinstance(done, Done)
        and done.text == f"합친 요약({summaries[0][:40]} ~ {summaries[-1][-40:]}, {len(parts)}부)"
    )
    assert streamed(events) == done.text, "only the merge streams"
    assert worker.policy.peak_batch >= len(parts), "the parts ran in one batch"


async def test_summaries_too_many_to_merge_at_once_are_merged_in_groups(bus: Bus, run_worker: RunWorker) -> None:
    worker = run_worker(context_window=520, max_new_tokens=200, max_batch_size=32)
    thread = THREAD * 2
    events = await run_task(bus, "summarize", "\n".join(thread))
    requests = engine_of(worker).received
    passes = sorted({r.id.split(tasks.SEPARATOR)[1].split(".")[0] for r in requests})
    assert len(passes) >= 3, "parts, merges of groups, the final merge"
    final = [r for r in requests if r.id.split(tasks.SEPARATOR)[1].startswith(passes[-1])]
    assert len(final) == 1
    done = events[-1]
    assert isinstance(done, Done) and done.text.startswith("합친 요약([1부] 합친 요약(")
    assert "사람1: 1번 메시" in done.text, "from the first message"
    assert "30번 메시지" in done.text and not done.context_cut, "to the last message, nothing cut"
    totals = [e.total for e in events if isinstance(e, Progress)]
    assert len(set(totals)) >= 2, "each pass reports its own parts"


async def test_a_cancelled_summary_stops_every_part(bus: Bus, run_worker: RunWorker) -> None:
    worker = run_worker(context_window=900, max_new_tokens=300)
    question = Question.new("terminal", "요약", ttl_s=60, task="summarize", context="\n".join(THREAD * 3))
    await bus.queue.enqueue(question)
    events = []
    async for _, event in bus.answers.follow(question.id, start_timeout_s=30):
        events.append(event)
        if isinstance(event, Progress) and event.done == 1:
            await bus.queue.request_cancel(question.id)
    assert events[-1] == ErrorEvent(code="cancelled", message="cancelled by the user")
    assert engine_of(worker).active == 0, "no part runs on for nobody"


@pytest.mark.parametrize("task", ["summarize", "translate", "proofread"])
async def test_an_empty_text_fails_clearly(bus: Bus, run_worker: RunWorker, task: str) -> None:
    run_worker()
    events = await run_task(bus, task, "   ")
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == "failed" and "empty" in events[-1].message


# ---------------------------------------------------------------------------------------------- kullm ask --task


def test_kullm_ask_translates_proofreads_and_summarises_a_file(
    start_worker: StartWorker, redis_server: RedisServer, tmp_path: Path
) -> None:
    start_worker(engine="scripted", CONTEXT_WINDOW="700", MAX_NEW_TOKENS="250")
    translated = run_kullm(["ask", "--task", "translate", "안녕하세요. 반갑습니다."], redis_server.url)
    assert translated.returncode == 0, translated.stderr
    assert translated.stdout.strip() == "[EN] 안녕하세요. 반갑습니다."
    checked = run_kullm(["ask", "--task", "proofread", "--context", "틀린 문장 입니다."], redis_server.url)
    assert checked.stdout.strip() == "[교정] 틀린 문장 입니다."
    thread = tmp_path / "thread.txt"
    thread.write_text("\n".join(THREAD), encoding="utf-8")
    summary = run_kullm(["ask", "--json", "--task", "summarize", "--context-file", str(thread)], redis_server.url)
    events = [json.loads(line) for line in summary.stdout.splitlines()]
    assert [e["type"] for e in events][:2] == ["queued", "started"]
    assert [(e["done"], e["total"]) for e in events if e["type"] == "progress"][-1] == (3, 3)
    assert events[-1]["type"] == "done" and events[-1]["text"].startswith("합친 요약([1부] 요약(사람1: 1번")
    plain = run_kullm(["ask", "--task", "summarize", "--context-file", str(thread)], redis_server.url)
    assert "요약하는 중… 3/3" in plain.stderr
    empty = run_kullm(["ask", "--task", "translate", "  "], redis_server.url)
    assert empty.returncode == 2 and "번역할 글이 없어요" in empty.stderr


# ---------------------------------------------------------------------------------------------- one summary, many users


class CountingLength:
    """A character-per-token counter that adds up how many characters it was asked to count."""

    def __init__(self) -> None:
        self.counted = 0

    def __call__(self, text: str) -> int:
        self.counted += len(text)
        return len(text)


@pytest.mark.parametrize("shape", ["one line", "short lines"])
def test_planning_a_maximal_summary_is_linear_and_bounded_in_parts(shape: str) -> None:
    text = (
        "가나다라 마바사 " * 25_000 if shape == "one line" else "\n".join(f"사람{i}: " + "가" * 50 for i in range(3600))
    )
    text = text[:MAX_CONTEXT_CHARS]
    count = CountingLength()
    question = Question.new("slack", "요약", ttl_s=60, task="summarize", context=text)
    run = tasks.TaskRun(question, PromptBuilder(Template.KULLM_V1, count, 2048), 512)
    # Before, every growing part was counted again at each message: 96 s of CPU for the one-line transcript.
    assert count.counted < 8 * len(text), f"{count.counted:,} characters counted for {len(text):,}"
    assert run.parts == MAX_TASK_PARTS and run.context_cut, "a bounded amount of work; the answer says it was cut"


async def test_one_users_summary_leaves_room_for_another_users_question(bus: Bus, run_worker: RunWorker) -> None:
    run_worker(context_window=700, max_new_tokens=250, max_batch_size=4)
    summary = Question.new("slack", "요약", ttl_s=60, task="summarize", context="\n".join(THREAD * 5), user="U1")
    await bus.queue.enqueue(summary)
    summary_events: list[AnswerEvent] = []

    async def follow_summary() -> None:
        async for _, event in bus.answers.follow(summary.id, start_timeout_s=30, stall_timeout_s=30):
            summary_events.append(event)

    following = asyncio.create_task(follow_summary())
    await eventually(lambda: any(isinstance(e, Progress) for e in summary_events))
    question = Question.new("slack", "한국의 수도는 어디야?", ttl_s=60, user="U2")
    await bus.queue.enqueue(question)
    answer = await follow(bus, question.id)
    assert isinstance(answer[-1], Done) and answer[-1].text == trained.CAPITAL
    progress = [e for e in summary_events if isinstance(e, Progress)]
    # Before, all its parts went into the engine at once and the question waited for nearly all of them.
    assert progress[-1].done <= progress[-1].total // 2, f"answered after {progress[-1].done}/{progress[-1].total}"
    await following
    assert isinstance(summary_events[-1], Done)


async def test_a_task_planned_longer_than_the_reclaim_idle_time_is_not_taken_over(
    bus: Bus, run_worker: RunWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Planning a maximal summary took seconds under load: its entry went stale meanwhile, another worker took it, and
    # after MAX_DELIVERIES it was dead-lettered (the soak's hostile row, on a loaded machine).
    planned = tasks.TaskRun

    def slow_plan(*args: Any, **kwargs: Any) -> tasks.TaskRun:
        time.sleep(2.5)  # on the planning thread, as a long transcript's tokenising is
        return planned(*args, **kwargs)

    monkeypatch.setattr("inference.worker.admission.TaskRun", slow_plan)
    quick: dict[str, Any] = {"reclaim_idle_s": 1.0, "reclaim_interval_s": 0.2, "heartbeat_interval_s": 0.2}
    run_worker(**quick)
    run_worker(**quick)
    events = await run_task(bus, "summarize", "\n".join(THREAD))
    assert isinstance(events[-1], Done), events[-1]
    assert sum(isinstance(e, Restart) for e in events) == 0 and [e.type for e in events].count("started") == 1
