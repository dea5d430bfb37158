"""The shared relay with a real worker loop (scripted engine, in-process) and Redis: edits, splitting, history,
limits, resume, and riding out a Redis outage."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.relay import Relay
from bot.settings import ClientSettings
from bot.surface import Asked, PlaceholderGone
from bot.texts import text
from chatbus import Bus, InflightRecord, Keys, Turn, connect
from chatbus.messages import Vote
from inference.metrics import WorkerMetrics
from inference.worker import Worker
from kullm import operator
from testkit import engines, trained
from testkit.engines import RunWorker, worker_settings
from testkit.polling import eventually
from testkit.reads import stream_entries
from testkit.redis_server import RedisServer
from testkit.settings import settings_of


@dataclass(frozen=True)
class Spot:
    """A placeholder of the in-memory platform, in a conversation."""

    message: str
    thread: str = ""

    @property
    def conversation(self) -> str:
        return self.thread or self.message

    def to_fields(self) -> dict[str, str]:
        return {"message": self.message, "thread": self.thread}


@dataclass
class RecordingSurface:
    """An in-memory platform: messages by id, every edit timed; a question's origin is its placeholder's id."""

    platform: str = "test"
    max_chars: int = 2000
    edit_interval_s: float = 0.2
    footer_style: str = "-# {}"
    messages: dict[str, str] = field(default_factory=dict)
    edits: list[tuple[float, str, str, bool]] = field(default_factory=list)
    posts: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # posted messages' ids, in order (the placeholder's first)
    stop_on: set[str] = field(default_factory=set)  # messages showing the stop control
    deleted: set[str] = field(default_factory=set)  # placeholders a moderator deleted (404 on edit)
    thread_gone: bool = False  # the whole thread too (404 on post)

    refusals: list[str] = field(default_factory=list)
    vote_buttons: dict[str, str] = field(default_factory=dict)  # message → the question its 👍/👎 rate
    started_on: list[str] = field(default_factory=list)  # placeholders told a worker began generating

    def target(self, fields: Mapping[str, str]) -> Spot:
        return Spot(fields["message"], fields.get("thread", ""))

    async def refuse(self, origin: Spot, notice: str) -> None:
        self.refusals.append(notice)

    async def post_placeholder(
        self, origin: Spot, asked: Asked, content: str, question_id: str, *, ahead: int = 0
    ) -> Spot:
        self.messages[origin.message] = content
        self.order.append(origin.message)
        self.stop_on.add(origin.message)
        return origin

    async def edit(self, target: Spot, content: str, *, final: bool, feedback: str | None = None) -> None:
        if target.message in self.deleted:
            raise PlaceholderGone("404")
        self.messages[target.message] = content
        if feedback:
            self.vote_buttons[target.message] = feedback
        if final:
            self.stop_on.discard(target.message)
        self.edits.append((time.monotonic(), target.message, content, final))

    async def post_part(
        self, target: Spot, content: str, question_id: str, *, final: bool, feedback: str | None = None
    ) -> Spot:
        if self.thread_gone:
            raise PlaceholderGone("404")
        self.posts.append(content)
        posted = Spot(f"{target.message}+{len(self.posts)}", target.thread)
        self.messages[posted.message] = content
        self.order.append(posted.message)
        if not final:
            self.stop_on.add(posted.message)
        if feedback:
            self.vote_buttons[posted.message] = feedback
        if final:
            self.edits.append((time.monotonic(), posted.message, content, final))
        return posted

    async def delete(self, target: Spot) -> None:
        self.messages.pop(target.message, None)

    def working(self, target: Spot) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    async def started(self, target: Spot) -> None:
        self.started_on.append(target.message)

    async def stream(self, target: Spot, shown: str) -> tuple[Spot, bool]:
        return target, False

    async def progress(self, target: Spot, done: int, total: int) -> tuple[Spot, bool]:
        return target, False

    async def finish(self, target: Spot, answer: str, feedback: str | None = None) -> bool:
        return False

    def finals(self, message: str) -> list[str]:
        """The final texts of a message, without the footer line naming the model (`footer` checks that)."""
        return [without_footer(content) for _, mid, content, final in self.edits if mid == message and final]


def without_footer(content: str) -> str:
    body, _, footer = content.rpartition("\n-# ")
    return body if body and "초" in footer else content


def settings(**overrides: object) -> ClientSettings:
    return settings_of(ClientSettings, lease_ttl_s=1.0, **overrides)


RelayEnv = tuple[Bus, RecordingSurface, Relay[Spot, Spot]]


@pytest.fixture
async def relay_env(bus: Bus, worker: Worker) -> AsyncIterator[RelayEnv]:
    surface = RecordingSurface()
    relay = Relay(bus, surface, settings())
    yield bus, surface, relay
    await relay.close()


async def nothing_tracked(bus: Bus) -> bool:
    return await bus.inflight.tracked("test") == []


async def test_answer_streams_into_the_placeholder_then_is_forgotten(relay_env: RelayEnv) -> None:
    bus, surface, relay = relay_env
    await relay.ask(Spot("m1", "t1"), Asked("u1", "긴 이야기를 들려줘"))
    await eventually(lambda: bool(surface.finals("m1")))
    assert surface.finals("m1") == [trained.LONG_STORY]
    streaming = [(at, content) for at, mid, content, final in surface.edits if mid == "m1" and not final]
    assert streaming and all(content.endswith("▌") for _, content in streaming)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(streaming)]
    assert all(gap >= surface.edit_interval_s * 0.9 for gap in gaps), "edits are throttled"
    await eventually(lambda: nothing_tracked(bus))
    assert await bus.threads.history("test", "t1") == [Turn(question="긴 이야기를 들려줘", answer=trained.LONG_STORY)]


async def test_a_context_cut_to_fit_is_said_under_the_answer_and_the_persona_goes_with_it(
    bus: Bus, run_worker: RunWorker
) -> None:
    run_worker(context_window=300, max_new_tokens=100)
    surface = RecordingSurface()
    relay = Relay(bus, surface, settings())
    await relay.ask(Spot("c1"), Asked("u1", "이 글을 요약해줘", "구름은 한국어 언어 모델입니다. " * 50))
    await eventually(lambda: bool(surface.finals("c1")))
    [final] = [content for _, mid, content, done in surface.edits if mid == "c1" and done]
    footer = final.rpartition("\n-# ")[2]
    assert footer.endswith("초 · 📎 맥락이 길어 앞부분만 읽음"), "answered, and told in the small line under it"
    await relay.personas.command("/kullm-설정", "chan", "admin", "set", trained.PIRATE_PERSONA)
    await relay.ask(Spot("c2"), Asked("u2", "한국의 수도는 어디야?", channel="chan"))
    await eventually(lambda: bool(surface.finals("c2")))
    assert surface.finals("c2") == [trained.PIRATE_CAPITAL], "the channel's persona heads 맥락 (kullm-v1)"
    await relay.close()


async def test_history_is_sent_with_the_next_question(relay_env: RelayEnv) -> None:
    bus, surface, relay = relay_env
    await bus.threads.remember("test", "t2", Turn(question="내 이름은 민수야", answer="반가워요, 민수님!"), 10, 60)
    await relay.ask(Spot("m2", "t2"), Asked("u1", "내 이름이 뭐라고 했지?", continues=True))
    await eventually(lambda: bool(surface.finals("m2")))
    assert surface.finals("m2") == [trained.HISTORY_ANSWER]  # trained on the prompt with that history


async def test_a_long_answer_streams_on_into_numbered_parts_with_the_buttons_under_the_last(
    relay_env: RelayEnv,
) -> None:
    """Past one message the stream goes on in the next: earlier parts settle (no stop control, their text
    intact, never rewound to a "… tail" view), every part is numbered, and 👍/👎 and the footer sit under the last."""
    _, surface, relay = relay_env
    surface.max_chars = 300
    question_id = await relay.ask(Spot("m3", "t3"), Asked("u1", "긴 이야기를 들려줘"))
    await eventually(lambda: len(surface.order) >= 2, what="a second part while streaming")
    first = surface.messages["m3"]
    assert first.endswith("(1/…)") and "▌" not in first and "m3" not in surface.stop_on, "part 1 settled"
    await eventually(lambda: bool(surface.vote_buttons), 60, what="the final answer")
    parts = [surface.messages[m] for m in surface.order]
    total = len(parts)
    assert total >= 3 and all(len(p) <= 300 for p in parts)
    assert [p.rsplit("\n\n", 1)[1].split("\n")[0] for p in parts] == [f"({i}/{total})" for i in range(1, total + 1)]
    assert list(surface.vote_buttons) == [surface.order[-1]] and surface.vote_buttons[surface.order[-1]] == question_id
    assert "\n-# " in parts[-1] and not any("\n-# " in p for p in parts[:-1]), "the footer under the last part"
    assert not surface.stop_on, "no stop control is left on any part"
    bodies = [p.rsplit("\n\n", 1)[0] for p in parts]
    assert "".join(bodies).replace(" ", "").replace("\n", "") == trained.LONG_STORY.replace(" ", "").replace("\n", "")
    for mid in surface.order[:-1]:  # a settled part is edited again only to learn the total
        settled = [c for _, m, c, _ in surface.edits if m == mid and "(" in c.rsplit("\n\n", 1)[-1]]
        assert {c.rsplit("\n\n", 1)[0] for c in settled} == {surface.messages[mid].rsplit("\n\n", 1)[0]}


async def test_a_short_answer_has_the_model_and_time_under_it(relay_env: RelayEnv) -> None:
    _, surface, relay = relay_env
    await relay.ask(Spot("f1"), Asked("u1", "한국의 수도는 어디야?"))
    await eventually(lambda: bool(surface.finals("f1")))
    final = [c for _, m, c, f in surface.edits if m == "f1" and f][-1]
    answer, footer = final.rsplit("\n-# ", 1)
    assert answer == trained.CAPITAL and re.fullmatch(r"\S+ · \d+\.\d초", footer), footer


async def test_cancel_keeps_the_text_so_far_with_a_notice(relay_env: RelayEnv) -> None:
    bus, surface, relay = relay_env
    question_id = await relay.ask(Spot("m4"), Asked("u1", "긴 이야기를 들려줘"))
    assert question_id is not None
    await eventually(lambda: any(mid == "m4" and not f for _, mid, _, f in surface.edits))
    await bus.queue.request_cancel(question_id, by="밥")
    await eventually(lambda: bool(surface.finals("m4")))
    final = surface.finals("m4")[0]
    partial, notice = final.rsplit("\n\n", 1)
    assert notice == "⏹️ 밥 님이 답변을 멈췄어요.", "who stopped it"
    assert trained.LONG_STORY.startswith(partial) and partial != trained.LONG_STORY


async def test_a_stopped_adapter_hands_its_answer_to_another_at_once(bus: Bus, worker: Worker) -> None:
    # A killed adapter's lease lapses instead (tests/test_discord.py kills a real bot process).
    first_surface, second_surface = RecordingSurface(), RecordingSurface()
    first = Relay(bus, first_surface, settings())
    question_id = await first.ask(Spot("m5"), Asked("u1", "긴 이야기를 들려줘"))
    await eventually(lambda: bool(first_surface.edits))
    await first.close()  # a clean stop releases the lease
    second = Relay(bus, second_surface, settings())
    assert await second.resume() == 1
    await eventually(lambda: bool(second_surface.finals("m5")))
    assert second_surface.finals("m5") == [trained.LONG_STORY]
    assert first_surface.finals("m5") == []
    await asyncio.sleep(0.3)
    assert await second.resume() == 0 and await bus.inflight.tracked("test") == []
    assert question_id
    await second.close()


async def test_limits_refuse_with_clear_messages(bus: Bus) -> None:
    relay = Relay(
        bus, RecordingSurface(), settings(user_questions_per_minute=2, user_concurrent_questions=1, max_queue=1)
    )
    assert await relay.refusal("u1", "   ") == "❓ 질문을 입력해 주세요."
    assert "너무 길어요" in str(await relay.refusal("u1", "가" * 5000))
    assert await relay.refusal("u1", "질문") is None
    await relay.submit(Spot("x"), Asked("u1", "질문"))  # no worker: it stays in flight
    assert "이미 답변을 기다리는 질문이 1개" in str(await relay.refusal("u1", "질문"))
    assert "1분에 2개까지" in str(await relay.refusal("u1", "질문"))
    assert "질문이 너무 많이 밀려" in str(await relay.refusal("u2", "질문"))
    english = Relay(bus, RecordingSurface(), settings(bot_language="en", max_queue=1))
    assert "Too many questions" in str(await english.refusal("u3", "question"))
    await relay.close()


async def test_a_daily_token_quota_counts_what_the_workers_recorded(relay_env: RelayEnv) -> None:
    bus, surface, _ = relay_env
    relay = Relay(bus, surface, settings(user_tokens_per_day=300))
    # The prompt's bound (its bytes and 256 for the template) is held, and the answer may use the rest of the 300.
    await relay.ask(Spot("q1", "t9"), Asked("u9", "딥러닝이 뭐야?"))
    await eventually(lambda: bool(surface.finals("q1")))
    await eventually(lambda: bus_tokens(bus, "u9"))
    assert await bus.ledger.tokens_today("test", "u9") <= 300
    refusal = await relay.refusal("u9", "한 번 더")
    assert refusal is not None and refusal.startswith("🪫") and "300" in refusal
    assert await relay.refusal("u10", "다른 사람") is None, "per user"
    await relay.close()


async def test_questions_asked_at_once_cannot_take_a_user_past_the_daily_cap(relay_env: RelayEnv) -> None:
    bus, surface, _ = relay_env
    relay = Relay(bus, surface, settings(user_tokens_per_day=700, user_concurrent_questions=5))
    # Both pass the early check (nothing used yet); the first to be queued holds its most: the second is refused.
    await asyncio.gather(
        relay.ask(Spot("c1", "t1"), Asked("u7", "긴 이야기를 들려줘")),
        relay.ask(Spot("c2", "t2"), Asked("u7", "딥러닝이 뭐야?")),
    )
    await eventually(lambda: bool(surface.finals("c1")) and bool(surface.finals("c2")))
    finals = surface.finals("c1") + surface.finals("c2")
    assert sum(final.startswith("🪫") for final in finals) == 1, finals
    await eventually(lambda: bus_tokens(bus, "u7"))
    assert await bus.ledger.tokens_today("test", "u7") <= 700
    await relay.close()


async def test_a_long_task_counts_as_the_questions_its_parts_cost(relay_env: RelayEnv) -> None:
    bus, surface, _ = relay_env
    relay = Relay(bus, surface, settings(user_questions_per_minute=6))
    transcript = "사람: 회의록 " * 4000  # 32,000 characters: a summary of about 9 parts
    refusal = await relay.refusal("u8", "요약", transcript, "summarize")
    assert refusal is not None and "1분에 6개까지" in refusal, "one summary of this size is more than a minute's share"
    assert await relay.refusal("u9", "요약", "사람: 짧은 회의록", "summarize") is None, "a short one costs one"
    await relay.close()


async def bus_tokens(bus: Bus, user: str) -> bool:
    return await bus.ledger.tokens_today("test", user) > 0


async def test_a_deleted_placeholder_gets_the_answer_as_a_fresh_message(relay_env: RelayEnv) -> None:
    bus, surface, relay = relay_env
    await relay.ask(Spot("m6"), Asked("u1", "긴 이야기를 들려줘"))
    await eventually(lambda: any(mid == "m6" for _, mid, _, _ in surface.edits))
    surface.deleted.add("m6")  # deleted mid-answer
    await eventually(lambda: bool(surface.posts))
    assert [without_footer(p) for p in surface.posts] == [trained.LONG_STORY] and surface.finals("m6") == []
    await eventually(lambda: nothing_tracked(bus))


async def test_a_record_whose_answer_ended_is_not_offered_for_cancelling(bus: Bus) -> None:
    # The record outlives the answer by the last edits: a stop click in that moment hears "already finished".
    relay = Relay(bus, RecordingSurface(), settings())
    record = InflightRecord(question_id="q-end", platform="test", target=Spot("m").to_fields(), user="u1", created_at=1)
    await bus.inflight.track(record)
    assert await relay.record_for("q-end") == record
    await bus.redis.xadd(bus.keys.answers("q-end"), {"m": '{"v":1,"type":"error","code":"cancelled","message":""}'})
    assert await bus.inflight.tracked("test") == [record] and await relay.record_for("q-end") is None


async def test_nobody_is_locked_out_by_a_record_that_cannot_finish(bus: Bus) -> None:
    relay = Relay(bus, RecordingSurface(deleted={"gone"}, thread_gone=True), settings(user_concurrent_questions=1))
    surface = relay.surface
    assert isinstance(surface, RecordingSurface)
    # Placeholder and thread deleted: nowhere to answer. The record is ended, the user's slot freed.
    await bus.inflight.track(
        InflightRecord(
            question_id="q-gone", platform="test", target=Spot("gone").to_fields(), user="u1", created_at=time.time()
        )
    )
    await bus.redis.xadd(bus.keys.answers("q-gone"), {"m": '{"v":1,"type":"error","code":"failed","message":""}'})
    assert await relay.resume() == 1
    await eventually(lambda: nothing_tracked(bus))
    # A record older than any question can live: given up with a notice, not followed.
    old = time.time() - relay.poster.record_max_age_s - 1
    surface.deleted.clear()
    await bus.inflight.track(
        InflightRecord(question_id="q-old", platform="test", target=Spot("old").to_fields(), user="u1", created_at=old)
    )
    assert "이미 답변을 기다리는" not in str(await relay.refusal("u1", "질문"))  # a dead record holds no slot
    assert await relay.resume() == 0
    assert surface.finals("old") == [
        "⌛ 이 질문은 너무 오래되어 답변을 마치지 못했어요. 다시 물어봐 주세요. "
        "계속되면 관리자에게 참조 번호 `q-old`를 알려 주세요."
    ], "with the reference an operator finds in the logs"
    assert await bus.inflight.tracked("test") == []
    # A record nobody can decode is removed the first time it is read.
    await bus.redis.hset(bus.keys.inflight("test"), "q-bad", b"\xff not json")
    assert await bus.inflight.tracked("test") == [] and await bus.redis.hlen(bus.keys.inflight("test")) == 0
    # Every record expires: the platform's hash lives `ttl_s` past its newest record.
    await bus.inflight.track(
        InflightRecord(question_id="q-new", platform="test", target={}, user="u2", created_at=time.time()), 60
    )
    assert 0 < await bus.redis.ttl(bus.keys.inflight("test")) <= 60
    await relay.close()


async def test_an_answer_followed_through_a_redis_restart_is_finished_on_its_placeholder(tmp_path: Path) -> None:
    # Redis as compose runs it (AOF): killed mid-answer and restarted, the relay reads on where it was.
    server = RedisServer(tmp_path / "aof-redis", appendonly=True)
    server.start()
    client = connect(server.url)
    bus = Bus(client, Keys())
    settings_ = worker_settings(server.url)
    worker = Worker(bus, engines.scripted(settings_), settings_, WorkerMetrics())
    serving = asyncio.create_task(worker.run())
    surface = RecordingSurface()
    relay = Relay(bus, surface, settings(redis_outage_s=30))
    try:
        await relay.ask(Spot("m7"), Asked("u1", "긴 이야기를 들려줘"))
        await eventually(lambda: any(mid == "m7" and not final for _, mid, _, final in surface.edits))
        server.kill()
        await asyncio.sleep(0.3)  # both sides see it down: the worker's first retry comes after 0.5 s
        server.start()
        await eventually(lambda: surface.finals("m7"), 60, what="the final answer after the restart")
        assert surface.finals("m7") == [trained.LONG_STORY]
        shown = [len(content) for _, mid, content, final in surface.edits if mid == "m7" and not final]
        assert shown == sorted(shown), "read on after the last event seen, not from the start again"
    finally:
        await relay.close()
        worker.request_drain()
        await asyncio.wait_for(serving, 30)
        await client.aclose()
        server.stop()


async def test_closing_stops_the_resumer_even_when_cancelled_mid_command(bus: Bus) -> None:
    # redis-py can swallow a CancelledError that lands inside a command: the loop must still end.
    for delay_s in (0.0, 0.001, 0.003, 0.01):
        relay = Relay(bus, RecordingSurface(), settings())
        relay.start()
        await asyncio.sleep(delay_s)
        await asyncio.wait_for(relay.close(), 2)


async def test_a_finished_answer_gets_vote_buttons_and_each_person_has_one_changeable_vote(
    relay_env: RelayEnv, redis_server: RedisServer
) -> None:
    bus, surface, relay = relay_env
    question_id = await relay.ask(Spot("m1", "t1"), Asked("u1", "딥러닝이 뭐야?"))
    assert question_id is not None
    await eventually(lambda: bool(surface.finals("m1")))
    assert surface.vote_buttons == {"m1": question_id}, "👍/👎 under the finished answer, for its question"
    assert surface.started_on == ["m1"], "told once that a worker began"
    assert await relay.feedback.vote(question_id, "u1", "up") == text("vote_up", "ko")
    assert await relay.feedback.vote(question_id, "u1", "down") == text("vote_down", "ko"), "changed, not added"
    assert await relay.feedback.vote(question_id, "u2", "up") == text("vote_up", "ko")
    votes = await bus.feedback.votes()
    assert [v.vote for v in votes] == ["down", "up"] and len({v.voter for v in votes}) == 2
    assert all(v.voter not in ("u1", "u2") and v.platform == "test" for v in votes), "who voted is not kept"
    assert (votes[0].model, votes[0].template, votes[0].engine) == ("scripted", "kullm-v1", "builtin")
    answered = await bus.feedback.answered_record(question_id)
    assert answered is not None and answered.question is None and answered.answer is None, "no text by default"
    assert await relay.feedback.vote("0" * 32, "u1", "up") == text("vote_expired", "ko")
    assert await bus.feedback.votes(since=time.time() + 60) == []

    out = io.StringIO()
    client = settings(redis_url=redis_server.url)
    assert await operator.feedback(client, as_json=True, out=out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["vote"] for line in lines] == ["down", "up"] and "question" not in lines[0]
    out = io.StringIO()
    assert await operator.feedback(client, out=out) == 0
    assert "votes: 2 on 1 answers (👍 1, 👎 1)" in out.getvalue() and "kullm-v1" in out.getvalue()


async def test_hostile_clicks_file_little_and_voters_cannot_be_recovered(bus: Bus, worker: Worker) -> None:
    surface = RecordingSurface()
    keeping = Relay(bus, surface, settings(feedback_keep_text=True))
    question_id = await keeping.ask(Spot("h1", "t1"), Asked("u1", "딥러닝이 뭐야?"))
    assert question_id is not None
    await eventually(lambda: bool(surface.finals("h1")))
    said = [await keeping.feedback.vote(question_id, "u6", "up" if i % 2 else "down") for i in range(100)]
    assert said.count(text("vote_rate_limited", "ko", limit=20)) == 80, "a person's clicks are limited"
    entries = await stream_entries(bus.redis, bus.keys.feedback)
    with_texts = [f for _, f in entries if Vote.model_validate_json(f["m"]).question is not None]
    assert len(entries) == 20 and len(with_texts) == 1, "the texts are copied once per voter, not once per click"
    votes = await bus.feedback.votes()
    assert len(votes) == 1 and votes[0].question == "딥러닝이 뭐야?", "the latest vote still reads with its texts"
    unsalted = hashlib.sha256(b"test:u6").hexdigest()[:16]
    assert votes[0].voter != unsalted, "a known user id cannot be hashed to find their vote"
    await keeping.close()


async def test_answer_text_is_kept_with_votes_only_when_asked_and_no_buttons_when_feedback_is_off(
    bus: Bus, worker: Worker, redis_server: RedisServer
) -> None:
    surface = RecordingSurface()
    keeping = Relay(bus, surface, settings(feedback_keep_text=True))
    question_id = await keeping.ask(Spot("m1", "t1"), Asked("u1", "딥러닝이 뭐야?"))
    assert question_id is not None
    await eventually(lambda: bool(surface.finals("m1")))
    await keeping.feedback.vote(question_id, "u1", "up")
    out = io.StringIO()
    await operator.feedback(settings(redis_url=redis_server.url, feedback_keep_text=True), as_json=True, out=out)
    line = json.loads(out.getvalue())
    assert (line["question"], line["answer"]) == ("딥러닝이 뭐야?", trained.DEEP_LEARNING)
    await keeping.close()

    off = Relay(bus, surface, settings(feedback_ttl_days=0))
    second = await off.ask(Spot("m2", "t2"), Asked("u1", "한국의 수도는 어디야?"))
    await eventually(lambda: bool(surface.finals("m2")))
    assert "m2" not in surface.vote_buttons and await bus.feedback.answered_record(str(second)) is None
    assert await off.feedback.vote(str(second), "u1", "up") == text("vote_expired", "ko")
    await off.close()


def test_the_waiting_line_shows_a_place_only_when_someone_is_ahead() -> None:
    from bot.texts import waiting_line

    assert waiting_line(0) == "⏳ 생각 중…" and waiting_line(0, "en") == "⏳ Thinking…"
    assert waiting_line(2) == "⏳ 순서를 기다리는 중… (앞에 질문 2개)"
    assert waiting_line(1, "en") == "⏳ Waiting for your turn… (1 question ahead)"
    assert waiting_line(3, "en") == "⏳ Waiting for your turn… (3 questions ahead)"


def test_a_task_is_quoted_as_a_request_and_a_question_as_a_question() -> None:
    from bot.texts import object_particle, quote_of

    assert quote_of("밥", "스레드 요약", "summarize", "ko") == "**밥** 님이 스레드 요약을 요청했어요"
    assert quote_of("밥", "맞춤법 교정", "proofread", "ko", slack=True) == "*밥* 님이 맞춤법 교정을 요청했어요"
    assert quote_of("Bob", "Thread summary", "summarize", "en") == "**Bob** requested: Thread summary"
    assert quote_of("밥", "서울은?", "ask", "ko") == "**밥** 님의 질문: 서울은?"
    assert (object_particle("요약"), object_particle("검사"), object_particle("번역")) == ("을", "를", "을")
