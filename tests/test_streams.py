"""The Redis Streams operations against a real redis-server: groups, pending entries, reclaim, NOGROUP."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from chatbus import (
    AnswerEvent,
    Bus,
    BusDown,
    BusError,
    Delivery,
    Delta,
    Done,
    ErrorEvent,
    InflightRecord,
    NotAnswering,
    PasswordRefused,
    Question,
    QueueFull,
    Started,
    Turn,
    Unreachable,
    WorkerStatus,
    Write,
    WritesRefused,
    connect,
)
from chatbus.errors import AnswerTimeout
from chatbus.keys import FIELD, WORKER_GROUP
from testkit.reads import add_entry, stream_entries
from testkit.redis_server import RedisServer

DONE = Done(text="끝", finish_reason="stop", prompt_tokens=1, completion_tokens=1, queued_s=0, generate_s=0)


def question(text: str = "딥러닝이 뭐야?", ttl_s: float = 60) -> Question:
    return Question.new("terminal", text, ttl_s=ttl_s)


def held(delivery: Delivery, *events: AnswerEvent, ack: bool = False) -> Write:
    """A worker's fenced writes for a delivery it was handed."""
    assert delivery.question is not None
    return Write(delivery.entry_id, delivery.deliveries, delivery.question.id, events, ack)


def unqueued(question_id: str, *events: AnswerEvent) -> Write:
    """Writes for an answer whose entry is in neither the stream nor the group (as after Redis lost its data)."""
    return Write("1-1", 1, question_id, events)


async def test_enqueue_read_ack_deletes(bus: Bus) -> None:
    await bus.consumer.ensure_group()
    q = question()
    assert await bus.queue.enqueue(q) == 0
    assert await bus.queue.enqueue(question("두 번째")) == 1
    deliveries = await bus.consumer.read("w1", count=1, block_ms=None)
    assert [d.question for d in deliveries] == [q]
    assert deliveries[0].deliveries == 1
    await bus.consumer.ack(deliveries[0].entry_id)
    assert await bus.queue.depth() == 1  # acked entries are deleted: the length is the queue depth
    assert (await bus.workers.stats()).pending == 0


async def test_read_takes_only_free_slots(bus: Bus) -> None:
    await bus.consumer.ensure_group()
    for i in range(5):
        await bus.queue.enqueue(question(f"q{i}"))
    assert len(await bus.consumer.read("w1", count=2, block_ms=None)) == 2
    assert await bus.consumer.read("w1", count=0, block_ms=None) == []
    assert len(await bus.consumer.read("w2", count=10, block_ms=None)) == 3


async def test_queue_full_is_refused_atomically(bus: Bus) -> None:
    await bus.queue.enqueue(question(), max_queue=2)
    await bus.queue.enqueue(question(), max_queue=2)
    with pytest.raises(QueueFull) as info:
        await bus.queue.enqueue(question(), max_queue=2)
    assert info.value.depth == 2
    assert await bus.queue.depth() == 2


async def test_heartbeat_keeps_entries_from_being_reclaimed(bus: Bus) -> None:
    await bus.consumer.ensure_group()
    await bus.queue.enqueue(question())
    [delivery] = await bus.consumer.read("alive", count=1, block_ms=None)
    await asyncio.sleep(0.3)
    assert await bus.consumer.heartbeat("alive", [held(delivery)]) == set()
    assert await bus.consumer.reclaim("other", min_idle_ms=200, count=10) == []
    await asyncio.sleep(0.3)
    [taken] = await bus.consumer.reclaim("other", min_idle_ms=200, count=10)
    assert taken.entry_id == delivery.entry_id
    assert taken.deliveries == 2


async def test_release_makes_an_entry_reclaimable_at_once(bus: Bus) -> None:
    await bus.consumer.ensure_group()
    await bus.queue.enqueue(question())
    [delivery] = await bus.consumer.read("leaving", count=1, block_ms=None)
    await bus.consumer.release("leaving", [held(delivery)])
    [taken] = await bus.consumer.reclaim("other", min_idle_ms=30_000, count=10)
    assert taken.question == delivery.question


async def test_dead_letter_moves_and_acks(bus: Bus) -> None:
    await bus.consumer.ensure_group()
    await bus.queue.enqueue(question())
    [delivery] = await bus.consumer.read("w", count=1, block_ms=None)
    assert await bus.consumer.dead_letter(delivery, "poison", "w")
    assert await bus.queue.depth() == 0
    [(_, fields)] = await stream_entries(bus.redis, bus.keys.dead)
    assert "poison" in fields[FIELD]
    assert (await bus.workers.stats()).dead == 1


async def test_malformed_entries_are_delivered_as_errors(bus: Bus) -> None:
    await bus.consumer.ensure_group()
    await bus.redis.xadd(bus.keys.questions, {FIELD: b"\xff garbage"})
    [delivery] = await bus.consumer.read("w", count=1, block_ms=None)
    assert delivery.question is None
    assert delivery.error is not None and "UTF-8" in delivery.error.reason


async def test_publish_and_follow_until_final(bus: Bus) -> None:
    qid = "q1"
    assert await bus.consumer.publish("w", [unqueued(qid, Started(worker="w", attempt=1), Delta(text="안녕"))]) == set()
    await bus.consumer.publish("w", [unqueued(qid, DONE)])
    assert await bus.consumer.publish("w", [unqueued(qid, Delta(text="after the end"))]) == {
        "1-1"
    }  # the answer is final
    seen = [event async for _, event in bus.answers.follow(qid)]
    assert seen == [Started(worker="w", attempt=1), Delta(text="안녕"), DONE]
    ttl = await bus.redis.ttl(bus.keys.answers(qid))
    assert 3500 < ttl <= 3600


async def test_follow_resumes_after_an_event_id(bus: Bus) -> None:
    qid = "q2"
    await bus.consumer.publish("w", [unqueued(qid, Delta(text="a"), Delta(text="b"), ErrorEvent(code="cancelled"))])
    first_id = await anext(eid async for eid, _ in bus.answers.follow(qid))
    rest = [event async for _, event in bus.answers.follow(qid, after=first_id)]
    assert rest == [Delta(text="b"), ErrorEvent(code="cancelled")]


async def test_follow_times_out_without_events(bus: Bus) -> None:
    started = time.monotonic()
    with pytest.raises(AnswerTimeout):
        async for _ in bus.answers.follow("nobody", start_timeout_s=0.2):
            pass
    # Ends when the limit runs out: a read blocking its whole second (FOLLOW_BLOCK_MS) could not end before 1 s.
    assert 0.2 <= time.monotonic() - started < 1.0


async def test_cancel_flags(bus: Bus) -> None:
    await bus.queue.request_cancel("b")
    assert await bus.consumer.cancelled(["a", "b", "c"]) == {"b"}
    assert await bus.consumer.cancelled([]) == set()


async def test_group_recreated_after_redis_lost_its_data(bus: Bus, redis_server: RedisServer) -> None:
    await bus.consumer.ensure_group()
    redis_server.restart(empty=True)
    await bus.queue.enqueue(question("after the loss"))
    [delivery] = await bus.consumer.read("w", count=1, block_ms=None)  # NOGROUP → group recreated → read again
    assert delivery.question is not None and delivery.question.question == "after the loss"
    groups = await bus.redis.xinfo_groups(bus.keys.questions)
    assert [g["name"] for g in groups] == [WORKER_GROUP.encode()]


async def test_stats_count_live_workers_only(bus: Bus) -> None:
    now = time.time()
    await bus.workers.report(WorkerStatus(name="live", model="m", active=1, slots=4, seen_at=now))
    await bus.workers.report(WorkerStatus(name="gone", model="m", active=0, slots=4, seen_at=now - 3600))
    stats = await bus.workers.stats()
    assert [w.name for w in stats.workers] == ["live"]
    await bus.workers.forget("live")
    assert (await bus.workers.stats()).workers == ()


async def test_publish_acks_in_the_same_transaction(bus: Bus) -> None:
    await bus.consumer.ensure_group()
    await bus.queue.enqueue(question())
    [delivery] = await bus.consumer.read("w", count=1, block_ms=None)
    assert await bus.consumer.publish("w", [held(delivery, Delta(text="끝"), ack=True)]) == set()
    assert await bus.queue.depth() == 0
    assert (await bus.workers.stats()).pending == 0
    await bus.redis.flushall()  # the group is gone: the ack is moot, the event still lands
    assert await bus.consumer.publish("w", [held(delivery, DONE, ack=True)]) == set()
    assert delivery.question is not None
    assert await bus.redis.xlen(bus.keys.answers(delivery.question.id)) == 1


async def test_a_stale_worker_is_fenced_off_once_another_took_over(bus: Bus) -> None:
    await bus.consumer.ensure_group()
    await bus.queue.enqueue(question())
    [stale] = await bus.consumer.read("a", count=1, block_ms=None)
    await asyncio.sleep(0.25)  # "a" stalls past the reclaim idle time
    [fresh] = await bus.consumer.reclaim("b", min_idle_ms=200, count=10)
    assert (fresh.entry_id, fresh.deliveries) == (stale.entry_id, 2)
    assert stale.question is not None
    answers = bus.keys.answers(stale.question.id)
    # "a" wakes up: every write of its is dropped, none merged into b's answer.
    assert await bus.consumer.publish("a", [held(stale, Delta(text="stale"), DONE, ack=True)]) == {stale.entry_id}
    assert await bus.redis.xlen(answers) == 0 and await bus.queue.depth() == 1
    assert await bus.consumer.heartbeat("a", [held(stale)]) == {stale.entry_id}
    await bus.consumer.release("a", [held(stale)])
    assert not await bus.consumer.dead_letter(stale, "poison", "a")
    [entry] = await bus.redis.xpending_range(bus.keys.questions, WORKER_GROUP, "-", "+", 10)
    assert (entry["consumer"], entry["times_delivered"]) == (b"b", 2)  # still b's, not stolen back
    # The owner's writes land; afterwards the stale one still cannot add to the finished answer.
    assert await bus.consumer.publish("b", [held(fresh, Delta(text="fresh"), DONE, ack=True)]) == set()
    assert await bus.queue.depth() == 0
    assert await bus.consumer.publish("a", [held(stale, Delta(text="late"))]) == {stale.entry_id}
    assert [e for _, e in [x async for x in bus.answers.follow(stale.question.id)]] == [Delta(text="fresh"), DONE]


async def test_the_same_consumer_with_an_older_delivery_is_fenced_too(bus: Bus) -> None:
    await bus.consumer.ensure_group()
    await bus.queue.enqueue(question())
    [first] = await bus.consumer.read("a", count=1, block_ms=None)
    await asyncio.sleep(0.25)
    [again] = await bus.consumer.reclaim("a", min_idle_ms=200, count=10)  # "a" itself retries it: a new delivery
    assert again.deliveries == 2
    assert await bus.consumer.publish("a", [held(first, Delta(text="old attempt"))]) == {first.entry_id}
    assert await bus.consumer.publish("a", [held(again, Delta(text="new attempt"))]) == set()


async def test_leases_belong_to_their_owner_and_lapse(bus: Bus) -> None:
    assert await bus.inflight.acquire_lease("q", "a", ttl_ms=300)
    assert not await bus.inflight.acquire_lease("q", "b", ttl_ms=300)
    assert not await bus.inflight.renew_lease("q", "b", ttl_ms=300)
    assert await bus.inflight.renew_lease("q", "a", ttl_ms=300)
    await bus.inflight.release_lease("q", "b")  # not b's to release
    assert not await bus.inflight.acquire_lease("q", "b", ttl_ms=300)
    await asyncio.sleep(0.4)  # a crashed owner stops renewing
    assert await bus.inflight.acquire_lease("q", "b", ttl_ms=300)


async def test_duplicate_events_and_rate_windows(bus: Bus) -> None:
    assert await bus.queue.claim_event("slack", "Ev1")
    assert not await bus.queue.claim_event("slack", "Ev1")
    assert [await bus.queue.count_request("discord", "u", 60) for _ in range(3)] == [1, 2, 3]
    assert await bus.queue.count_request("discord", "other", 60) == 1
    assert 0 < await bus.redis.ttl(bus.keys.rate("discord", "u")) <= 60


async def test_history_keeps_the_last_turns(bus: Bus) -> None:
    for i in range(5):
        await bus.threads.remember("discord", "t", Turn(question=f"q{i}", answer=f"a{i}"), max_turns=3, ttl_s=60)
    assert [t.question for t in await bus.threads.history("discord", "t")] == ["q2", "q3", "q4"]


async def test_inflight_records_round_trip(bus: Bus) -> None:
    record = InflightRecord(
        question_id="q", platform="discord", target={"channel": "1", "message": "2"}, user="u", created_at=time.time()
    )
    await bus.inflight.track(record)
    await bus.redis.hset(bus.keys.inflight("discord"), "junk", b"not json")
    assert await bus.inflight.tracked("discord") == [record]
    await bus.inflight.untrack("discord", "q")
    assert await bus.inflight.tracked("discord") == []


async def test_one_entry_answers_a_question_id_and_copies_are_told_apart(bus: Bus) -> None:
    claims = [("q", "1-1", 60), ("q", "2-1", 60), ("q", "1-1", 60), ("r", "3-1", 60)]
    assert await bus.consumer.claim_questions(claims) == [True, False, True, True]  # first come; itself again; others
    assert 0 < await bus.redis.ttl(bus.keys.entry("q")) <= 60


async def test_a_follower_skips_an_undecodable_event_and_reads_on(bus: Bus) -> None:
    key = bus.keys.answers("q-garbled")
    await add_entry(bus.redis, key, Delta(text="앞").to_fields())
    await bus.redis.xadd(key, {FIELD: b"\xff not an event"})
    await bus.redis.xadd(key, {FIELD: '{"v": 1, "type": "done", "created_at": Infinity}'})
    await add_entry(bus.redis, key, DONE.to_fields())
    assert [event async for _, event in bus.answers.follow("q-garbled")] == [Delta(text="앞"), DONE]


async def test_redis_failures_reach_callers_as_the_contracts_own_errors(redis_server: RedisServer) -> None:
    """Nothing outside chatbus catches a Redis exception: refusing writes, a wrong password, a Redis that stops
    answering and one that is gone each arrive as the contract's error, the Redis exception as its cause."""
    admin = connect(redis_server.url)
    bus = Bus(connect(redis_server.url))
    try:
        await admin.config_set("maxmemory", "1")  # below what it holds: `noeviction` refuses every write
        with pytest.raises(WritesRefused) as refused:
            await bus.queue.enqueue(question())
        assert refused.value.reason == "OOM" and isinstance(refused.value, BusError)
        assert type(refused.value.__cause__).__module__.startswith("redis")
        await admin.config_set("maxmemory", "0")

        wrong = Bus(connect(redis_server.url.replace("redis://", "redis://:wrong-pass@")))
        await admin.config_set("requirepass", "right-pass")
        try:
            with pytest.raises(PasswordRefused):
                await wrong.queue.depth()
        finally:
            await admin.auth("right-pass")
            await admin.config_set("requirepass", "")
            await wrong.aclose()

        await admin.client_pause(600)  # up, connected, silent
        fresh = Bus(Redis.from_url(redis_server.url, socket_timeout=0.2))  # the contract's own timeout is 4 s
        try:
            with pytest.raises(NotAnswering):
                await fresh.queue.depth()
        finally:
            await admin.client_unpause()
            await fresh.aclose()

        redis_server.kill()
        with pytest.raises(Unreachable):
            await bus.queue.depth()
        with pytest.raises(BusDown):  # a follower without an outage allowance gives up at once
            async for _ in bus.answers.follow("q1"):
                pass
    finally:
        await bus.aclose()
        await admin.aclose()
