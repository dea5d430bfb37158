"""The shared relay with a real worker and Redis: placeholder edits, splitting, history, limits, resume."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from bot.relay import PlaceholderGone, Relay
from bot.settings import ClientSettings
from chatbus import Bus, InflightRecord, Turn
from tests import tiny_model


@dataclass
class RecordingSurface:
    """An in-memory platform: messages by id, every edit timed."""

    platform: str = "test"
    max_chars: int = 2000
    edit_interval_s: float = 0.2
    messages: dict[str, str] = field(default_factory=dict)
    edits: list[tuple[float, str, str, bool]] = field(default_factory=list)
    posts: list[str] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)  # placeholders a moderator deleted (404 on edit)
    thread_gone: bool = False  # the whole thread too (404 on post)

    async def edit(self, target: dict[str, str], content: str, *, final: bool) -> None:
        if target["message"] in self.deleted:
            raise PlaceholderGone("404")
        self.messages[target["message"]] = content
        self.edits.append((time.monotonic(), target["message"], content, final))

    async def post_more(self, target: dict[str, str], content: str) -> None:
        if self.thread_gone:
            raise PlaceholderGone("404")
        self.posts.append(content)

    def working(self, target: dict[str, str]) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    def finals(self, message: str) -> list[str]:
        return [content for _, mid, content, final in self.edits if mid == message and final]


def settings(**overrides: object) -> ClientSettings:
    return ClientSettings(_env_file=None, lease_ttl_s=1.0, **overrides)  # type: ignore[call-arg,arg-type]


@pytest.fixture
async def relay_env(bus: Bus, start_worker) -> AsyncIterator[tuple[Bus, RecordingSurface, Relay]]:  # type: ignore[no-untyped-def]
    start_worker()
    surface = RecordingSurface()
    relay = Relay(bus, surface, settings())
    yield bus, surface, relay
    await relay.close()


async def until(predicate, timeout_s: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_answer_streams_into_the_placeholder_then_is_forgotten(relay_env) -> None:  # type: ignore[no-untyped-def]
    bus, surface, relay = relay_env
    await relay.submit({"message": "m1"}, user="u1", question="긴 이야기를 들려줘", thread="t1")
    await until(lambda: _async(bool(surface.finals("m1"))))
    assert surface.finals("m1") == [tiny_model.LONG_STORY]
    streaming = [(at, content) for at, mid, content, final in surface.edits if mid == "m1" and not final]
    assert streaming and all(content.endswith("▌") for _, content in streaming)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(streaming)]
    assert all(gap >= surface.edit_interval_s * 0.9 for gap in gaps), "edits are throttled"
    await until(lambda: _async_call(bus.tracked("test"), lambda r: r == []))
    assert await bus.history("test", "t1") == [Turn(question="긴 이야기를 들려줘", answer=tiny_model.LONG_STORY)]


async def test_history_is_sent_with_the_next_question(relay_env) -> None:  # type: ignore[no-untyped-def]
    bus, surface, relay = relay_env
    await bus.remember("test", "t2", Turn(question="내 이름은 민수야", answer="반가워요, 민수님!"), 10, 60)
    history = await relay.history("t2")
    await relay.submit({"message": "m2"}, user="u1", question="내 이름이 뭐라고 했지?", thread="t2", history=history)
    await until(lambda: _async(bool(surface.finals("m2"))))
    assert surface.finals("m2") == [tiny_model.HISTORY_ANSWER]  # trained on the prompt with that history


async def test_long_answers_are_split_at_the_limit(relay_env) -> None:  # type: ignore[no-untyped-def]
    _, surface, relay = relay_env
    surface.max_chars = 300
    await relay.submit({"message": "m3"}, user="u1", question="긴 이야기를 들려줘")
    await until(lambda: _async(bool(surface.finals("m3"))))
    pieces = [*surface.finals("m3"), *surface.posts]
    assert len(pieces) >= 3 and all(len(p) <= 300 for p in pieces)
    assert "".join(pieces).replace(" ", "") == tiny_model.LONG_STORY.replace(" ", "")


async def test_cancel_keeps_the_text_so_far_with_a_notice(relay_env) -> None:  # type: ignore[no-untyped-def]
    bus, surface, relay = relay_env
    question_id = await relay.submit({"message": "m4"}, user="u1", question="긴 이야기를 들려줘")
    await until(lambda: _async(any(mid == "m4" and not f for _, mid, _, f in surface.edits)))
    await bus.request_cancel(question_id)
    await until(lambda: _async(bool(surface.finals("m4"))))
    final = surface.finals("m4")[0]
    partial, notice = final.rsplit("\n\n", 1)
    assert notice == "⏹️ 답변을 멈췄습니다."
    assert tiny_model.LONG_STORY.startswith(partial) and partial != tiny_model.LONG_STORY


async def test_a_stopped_adapter_hands_its_answer_to_another_at_once(bus: Bus, start_worker) -> None:  # type: ignore[no-untyped-def]
    # A killed adapter's lease lapses instead (tests/test_discord.py kills a real bot process).
    start_worker()
    first_surface, second_surface = RecordingSurface(), RecordingSurface()
    first = Relay(bus, first_surface, settings())
    question_id = await first.submit({"message": "m5"}, user="u1", question="긴 이야기를 들려줘")
    await until(lambda: _async(bool(first_surface.edits)))
    await first.close()  # a clean stop releases the lease
    second = Relay(bus, second_surface, settings())
    assert await second.resume() == 1
    await until(lambda: _async(bool(second_surface.finals("m5"))))
    assert second_surface.finals("m5") == [tiny_model.LONG_STORY]
    assert first_surface.finals("m5") == []
    await asyncio.sleep(0.3)
    assert await second.resume() == 0 and await bus.tracked("test") == []
    assert question_id
    await second.close()


async def test_limits_refuse_with_clear_messages(bus: Bus) -> None:
    relay = Relay(
        bus, RecordingSurface(), settings(user_questions_per_minute=2, user_concurrent_questions=1, max_queue=1)
    )
    assert await relay.refusal("u1", "   ") == "❓ 질문을 입력해 주세요."
    assert "너무 깁니다" in str(await relay.refusal("u1", "가" * 5000))
    assert await relay.refusal("u1", "질문") is None
    await relay.submit({"message": "x"}, user="u1", question="질문")  # no worker: it stays in flight
    assert "이미 답변을 기다리는 질문이 1개" in str(await relay.refusal("u1", "질문"))
    assert "1분에 2개까지" in str(await relay.refusal("u1", "질문"))
    assert "질문이 너무 많이 밀려" in str(await relay.refusal("u2", "질문"))
    english = Relay(bus, RecordingSurface(), settings(bot_language="en", max_queue=1))
    assert "Too many questions" in str(await english.refusal("u3", "question"))
    await relay.close()


async def test_a_deleted_placeholder_gets_the_answer_as_a_fresh_message(relay_env) -> None:  # type: ignore[no-untyped-def]
    bus, surface, relay = relay_env
    await relay.submit({"message": "m6"}, user="u1", question="긴 이야기를 들려줘")
    await until(lambda: _async(any(mid == "m6" for _, mid, _, _ in surface.edits)))
    surface.deleted.add("m6")  # deleted mid-answer
    await until(lambda: _async(bool(surface.posts)))
    assert surface.posts == [tiny_model.LONG_STORY] and surface.finals("m6") == []
    await until(lambda: _async_call(bus.tracked("test"), lambda r: r == []))


async def test_nobody_is_locked_out_by_a_record_that_cannot_finish(bus: Bus) -> None:
    relay = Relay(bus, RecordingSurface(deleted={"gone"}, thread_gone=True), settings(user_concurrent_questions=1))
    surface = relay.surface
    assert isinstance(surface, RecordingSurface)
    # Placeholder and thread deleted: nowhere to answer. The record is ended, the user's slot freed.
    await bus.track(
        InflightRecord(
            question_id="q-gone", platform="test", target={"message": "gone"}, user="u1", created_at=time.time()
        )
    )
    await bus.redis.xadd(bus.keys.answers("q-gone"), {"m": '{"v":1,"type":"error","code":"failed","message":""}'})
    assert await relay.resume() == 1
    await until(lambda: _async_call(bus.tracked("test"), lambda r: r == []))
    # A record older than any question can live: given up with a notice, not followed.
    old = time.time() - relay.record_max_age_s - 1
    surface.deleted.clear()
    await bus.track(
        InflightRecord(question_id="q-old", platform="test", target={"message": "old"}, user="u1", created_at=old)
    )
    assert "이미 답변을 기다리는" not in str(await relay.refusal("u1", "질문"))  # a dead record holds no slot
    assert await relay.resume() == 0
    assert surface.finals("old") == ["⌛ 이 질문은 너무 오래되어 답변을 마치지 못했습니다. 다시 물어봐 주세요."]
    assert await bus.tracked("test") == []
    # A record nobody can decode is removed the first time it is read.
    await bus.redis.hset(bus.keys.inflight("test"), "q-bad", b"\xff not json")
    assert await bus.tracked("test") == [] and await bus.redis.hlen(bus.keys.inflight("test")) == 0
    # Every record expires: the platform's hash lives `ttl_s` past its newest record.
    await bus.track(
        InflightRecord(question_id="q-new", platform="test", target={}, user="u2", created_at=time.time()), 60
    )
    assert 0 < await bus.redis.ttl(bus.keys.inflight("test")) <= 60
    await relay.close()


async def _async(value: object) -> object:
    return value


async def _async_call(awaitable, check) -> object:  # type: ignore[no-untyped-def]
    return check(await awaitable)
