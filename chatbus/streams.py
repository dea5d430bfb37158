"""The Redis Streams operations of the contract, used by adapters and workers alike.

Adapters enqueue questions, follow answer streams and set cancel flags. Workers read
through the `workers` consumer group, keep their pending entries fresh, reclaim entries
of dead workers, dead-letter poison questions and publish answer events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatbus.errors import ChatbusError, MalformedMessage, QueueFull
from chatbus.keys import FIELD, WORKER_GROUP, Keys
from chatbus.messages import (
    AnswerEvent,
    DeadLetter,
    InflightRecord,
    Question,
    Started,
    Turn,
    WorkerStatus,
    decode_event,
    is_final,
)

log = logging.getLogger(__name__)

ANSWER_TTL_S = 3600
CANCEL_TTL_S = 3600
# XCLAIM ... IDLE this long marks an entry as abandoned so any worker reclaims it at once.
RELEASED_IDLE_MS = 10 * 24 * 3600 * 1000
FOLLOW_BLOCK_MS = 1000

# Leases are renewed and released only by the process that holds them.
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Enqueue is refused atomically when the stream already holds `max_queue` entries.
_ENQUEUE_LUA = """
local depth = redis.call('XLEN', KEYS[1])
if tonumber(ARGV[1]) >= 0 and depth >= tonumber(ARGV[1]) then
  return {-1, depth}
end
redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[3])
return {0, depth}
"""

_T = TypeVar("_T")


class AnswerTimeout(ChatbusError):
    """No answer event arrived within the time the follower was willing to wait."""


@dataclass(frozen=True)
class Delivery:
    """One questions-stream entry handed to this worker."""

    entry_id: str
    deliveries: int
    question: Question | None
    error: MalformedMessage | None
    raw: dict[str, str]


@dataclass(frozen=True)
class BusStats:
    """Numbers `kullm status` shows."""

    queued: int
    pending: int
    consumers: int
    dead: int
    workers: tuple[WorkerStatus, ...]


class Bus:
    """Redis Streams calls of the contract, on one `redis.asyncio.Redis` client."""

    def __init__(self, redis: Redis, keys: Keys | None = None) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        self._enqueue_script = redis.register_script(_ENQUEUE_LUA)
        self._renew_script = redis.register_script(_RENEW_LUA)
        self._release_script = redis.register_script(_RELEASE_LUA)

    # ------------------------------------------------------------------ adapter side

    async def enqueue(self, question: Question, max_queue: int | None = None) -> int:
        """Add a question; returns how many were queued ahead of it. Raises `QueueFull`."""
        limit = -1 if max_queue is None else max_queue
        status, depth = await self._enqueue_script(keys=[self.keys.questions], args=[limit, FIELD, question.to_json()])
        if int(status) < 0:
            raise QueueFull(int(depth), limit)
        return int(depth)

    async def queue_depth(self) -> int:
        """Questions in the stream: waiting or being answered."""
        return int(await self.redis.xlen(self.keys.questions))

    async def request_cancel(self, question_id: str) -> None:
        """Ask the worker to stop generating this answer."""
        await self.redis.set(self.keys.cancel(question_id), b"1", ex=CANCEL_TTL_S)

    async def follow(
        self,
        question_id: str,
        *,
        after: str = "0-0",
        start_timeout_s: float | None = None,
        stall_timeout_s: float | None = None,
    ) -> AsyncIterator[tuple[str, AnswerEvent]]:
        """Yield (event id, event) of one answer until `done` or `error`.

        `start_timeout_s` bounds the wait for the first event, `stall_timeout_s` the gap
        between later ones; past either, `AnswerTimeout` is raised.
        """
        key = self.keys.answers(question_id)
        last_event_at = time.monotonic()
        started = False
        while True:
            response = await self.redis.xread({key: after}, count=100, block=FOLLOW_BLOCK_MS)
            entries = _entries(response)
            for raw_id, fields in entries:
                after = _text(raw_id)
                event = decode_event(fields, after)
                started = True
                last_event_at = time.monotonic()
                yield after, event
                if is_final(event):
                    return
            limit = stall_timeout_s if started else start_timeout_s
            if not entries and limit is not None and time.monotonic() - last_event_at > limit:
                raise AnswerTimeout(f"no answer event for {limit:.0f}s (question {question_id})")

    async def claim_event(self, platform: str, event_id: str, ttl_s: int = 3600) -> bool:
        """True the first time a platform event is seen; False for a redelivery."""
        return bool(await self.redis.set(self.keys.seen(platform, event_id), b"1", nx=True, ex=ttl_s))

    async def count_request(self, platform: str, user: str, window_s: int) -> int:
        """Questions this user asked in the current fixed window, this one included."""
        key = self.keys.rate(platform, user)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_s, nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def track(self, record: InflightRecord) -> None:
        """Remember an answer this adapter still has to post."""
        await self.redis.hset(self.keys.inflight(record.platform), record.question_id, record.to_json())

    async def untrack(self, platform: str, question_id: str) -> None:
        """The answer is posted (or given up): forget it."""
        await self.redis.hdel(self.keys.inflight(platform), question_id)

    async def tracked(self, platform: str) -> list[InflightRecord]:
        """Every answer of this platform not yet posted."""
        records = []
        for raw in (await self.redis.hgetall(self.keys.inflight(platform))).values():
            try:
                records.append(InflightRecord.from_json(raw))
            except MalformedMessage:
                log.warning("skipping a malformed inflight record on %s", platform)
        return records

    async def acquire_lease(self, question_id: str, owner: str, ttl_ms: int) -> bool:
        """Become the one process posting this answer, unless another holds it."""
        return bool(await self.redis.set(self.keys.lease(question_id), owner.encode(), nx=True, px=ttl_ms))

    async def renew_lease(self, question_id: str, owner: str, ttl_ms: int) -> bool:
        """Extend a lease this process holds; False when it was lost."""
        return bool(await self._renew_script(keys=[self.keys.lease(question_id)], args=[owner, ttl_ms]))

    async def release_lease(self, question_id: str, owner: str) -> None:
        """Give up a lease this process holds."""
        await self._release_script(keys=[self.keys.lease(question_id)], args=[owner])

    async def history(self, platform: str, thread: str) -> list[Turn]:
        """Past turns of a conversation, oldest first."""
        turns = []
        for raw in await self.redis.lrange(self.keys.thread(platform, thread), 0, -1):
            try:
                turns.append(Turn.model_validate_json(raw))
            except ValueError:
                continue
        return turns

    async def remember(self, platform: str, thread: str, turn: Turn, max_turns: int, ttl_s: int) -> None:
        """Append a turn, keeping the last `max_turns`; the conversation expires `ttl_s` after it."""
        key = self.keys.thread(platform, thread)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, turn.model_dump_json())
            pipe.ltrim(key, -max_turns, -1)
            pipe.expire(key, ttl_s)
            await pipe.execute()

    # ------------------------------------------------------------------ worker side

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists."""
        try:
            await self.redis.xgroup_create(self.keys.questions, WORKER_GROUP, id="0", mkstream=True)
            log.info("created consumer group %s on %s", WORKER_GROUP, self.keys.questions)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[Delivery]:
        """New questions for this consumer, at most `count` (XREADGROUP)."""
        if count <= 0:
            return []
        response = await self._grouped(
            lambda: self.redis.xreadgroup(
                WORKER_GROUP, consumer, {self.keys.questions: ">"}, count=count, block=block_ms
            )
        )
        return [_delivery(raw_id, fields, 1) for raw_id, fields in _entries(response) if fields]

    async def ack(self, *entry_ids: str) -> None:
        """Acknowledge and delete finished entries, so the stream length is the queue depth."""
        if not entry_ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.questions, WORKER_GROUP, *entry_ids)
            pipe.xdel(self.keys.questions, *entry_ids)
            await self._grouped(pipe.execute)

    async def heartbeat(self, consumer: str, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of entries this worker is still answering (XCLAIM JUSTID)."""
        if entry_ids:
            await self._grouped(
                lambda: self.redis.xclaim(self.keys.questions, WORKER_GROUP, consumer, 0, list(entry_ids), justid=True)
            )

    async def release(self, consumer: str, entry_ids: Sequence[str]) -> None:
        """Hand entries back: mark them long idle so the next reclaim by any worker takes them."""
        if entry_ids:
            await self._grouped(
                lambda: self.redis.xclaim(
                    self.keys.questions,
                    WORKER_GROUP,
                    consumer,
                    0,
                    list(entry_ids),
                    idle=RELEASED_IDLE_MS,
                    justid=True,
                )
            )

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Delivery]:
        """Claim entries idle for `min_idle_ms` or longer (their worker died or let go)."""
        if count <= 0:
            return []
        pending = await self._grouped(
            lambda: self.redis.xpending_range(
                self.keys.questions, WORKER_GROUP, min="-", max="+", count=count, idle=min_idle_ms
            )
        )
        if not pending:
            return []
        counts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        claimed: Any = await self._grouped(
            lambda: self.redis.xclaim(self.keys.questions, WORKER_GROUP, consumer, min_idle_ms, list(counts))
        )
        deliveries = []
        for raw_id, fields in claimed:
            entry_id = _text(raw_id)
            if fields:
                deliveries.append(_delivery(raw_id, fields, counts.get(entry_id, 0) + 1))
            else:  # deleted while pending: nothing left to answer
                await self.ack(entry_id)
        return deliveries

    async def dead_letter(self, delivery: Delivery, reason: str, worker: str) -> None:
        """Move a question to the dead stream and drop it from the queue."""
        question_id = delivery.question.id if delivery.question else None
        record = DeadLetter(
            entry_id=delivery.entry_id,
            question_id=question_id,
            reason=reason,
            deliveries=delivery.deliveries,
            worker=worker,
            at=time.time(),
            raw=delivery.raw.get(FIELD, repr(delivery.raw))[:65536],
        )
        await self.redis.xadd(self.keys.dead, _fields(record.to_fields()), maxlen=10000, approximate=True)
        await self.ack(delivery.entry_id)

    async def publish(self, events: Iterable[tuple[str, AnswerEvent]], acks: Sequence[str] = ()) -> None:
        """Append answer events (question id, event) and ack finished entries, atomically, in one round trip.

        Answer streams expire an hour after their last event. An ack that finds no group
        (Redis lost its data) is moot and ignored; any other error is raised.
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            touched = set()
            for question_id, event in events:
                key = self.keys.answers(question_id)
                pipe.xadd(key, _fields(event.to_fields()))
                touched.add(key)
            for key in touched:
                pipe.expire(key, ANSWER_TTL_S)
            if acks:
                pipe.xack(self.keys.questions, WORKER_GROUP, *acks)
                pipe.xdel(self.keys.questions, *acks)
            if not touched and not acks:
                return
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, ResponseError) and "NOGROUP" not in str(result):
                raise result

    async def cancelled(self, question_ids: Sequence[str]) -> set[str]:
        """The ids among `question_ids` whose user asked to stop."""
        if not question_ids:
            return set()
        flags = await self.redis.mget([self.keys.cancel(qid) for qid in question_ids])
        return {qid for qid, flag in zip(question_ids, flags, strict=True) if flag is not None}

    async def report_worker(self, status: WorkerStatus) -> None:
        """Record this worker's heartbeat for `kullm status`."""
        await self.redis.hset(self.keys.workers, status.name, status.to_json())

    async def forget_worker(self, name: str) -> None:
        """Remove a worker that shut down cleanly from the registry."""
        await self.redis.hdel(self.keys.workers, name)

    async def stats(self, live_within_s: float = 30.0) -> BusStats:
        """Queue depth, pending entries, consumers, dead letters and live workers."""
        queued = await self.queue_depth()
        dead = int(await self.redis.xlen(self.keys.dead))
        pending = consumers = 0
        try:
            groups = await self.redis.xinfo_groups(self.keys.questions)
        except ResponseError:  # no stream yet
            groups = []
        for group in groups:
            if _text(group["name"]) == WORKER_GROUP:
                pending, consumers = int(group["pending"]), int(group["consumers"])
        records = await self.redis.hgetall(self.keys.workers)
        now = time.time()
        workers = []
        for raw in records.values():
            try:
                status = WorkerStatus.from_json(raw)
            except MalformedMessage:
                continue
            if now - status.seen_at <= live_within_s:
                workers.append(status)
        return BusStats(queued, pending, consumers, dead, tuple(sorted(workers, key=lambda w: w.name)))

    async def _grouped(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run a consumer-group call; recreate the group once if Redis lost it (NOGROUP)."""
        try:
            return await call()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("consumer group missing (Redis lost its data?): recreating it")
            await self.ensure_group()
            return await call()


def started_event(worker: str, attempt: int) -> Started:
    """The `started` event a worker sends when it takes a question."""
    return Started(worker=worker, attempt=attempt)


def _delivery(raw_id: Any, fields: dict[Any, Any], deliveries: int) -> Delivery:
    entry_id = _text(raw_id)
    raw = {_text(k): _text(v) for k, v in fields.items()}
    try:
        return Delivery(entry_id, deliveries, Question.from_fields(fields, entry_id), None, raw)
    except MalformedMessage as exc:
        return Delivery(entry_id, deliveries, None, exc, raw)


def _entries(response: Any) -> list[tuple[Any, Any]]:
    """Entries of a single-stream XREAD/XREADGROUP reply (RESP2, which `connect` uses)."""
    return list(response[0][1]) if response else []


def _fields(fields: dict[str, str]) -> Any:
    return fields


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def connect(url: str) -> Redis:
    """A Redis client for the contract: bytes replies (entries may hold invalid UTF-8), RESP2.

    Commands are retried a few times on a dropped connection (a restarted Redis leaves stale
    pooled connections); callers still see `ConnectionError` when Redis stays down.
    """
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=3)
    return Redis.from_url(
        url,
        decode_responses=False,
        protocol=2,
        health_check_interval=30,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def redact_url(url: str) -> str:
    """A Redis URL fit for messages and logs: any password replaced by `***`."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
