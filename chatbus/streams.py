"""The Redis Streams operations of the contract, used by adapters and workers alike.

Adapters enqueue questions, follow answer streams and set cancel flags. Workers read
through the `workers` consumer group, keep their pending entries fresh, reclaim entries
of dead workers, dead-letter poison questions and publish answer events.

Every worker write about a delivery (answer events, ack, heartbeat, release, dead letter) is
fenced: a Lua script checks, in the same call as the write, that the entry is still pending
for this consumer with this delivery count, and drops the write otherwise. The first entry to
claim a question id (`entry:{id}`, SET NX) answers it; later entries with that id are copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import SecretStr
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from chatbus.errors import AnswerTimeout, MalformedMessage, QueueFull
from chatbus.keys import FIELD, WORKER_GROUP, Keys
from chatbus.messages import (
    AnsweredRecord,
    AnswerEvent,
    ApiKey,
    DeadLetter,
    InflightRecord,
    Persona,
    Question,
    Turn,
    Vote,
    WorkerStatus,
    decode_event,
    is_final,
)

log = logging.getLogger(__name__)

ANSWER_TTL_S = 3600
CANCEL_TTL_S = 3600
# XCLAIM ... IDLE this long marks an entry as abandoned so any worker reclaims it at once.
RELEASED_IDLE_MS = 10 * 24 * 3600 * 1000
DEAD_MAXLEN = 10000
# The dead stream keeps at most DEAD_MAXLEN entries of at most about this many characters each.
DEAD_RAW_MAX_CHARS = 4096
# One XREAD follows every answer a process waits for (`AnswerReader`); a stream that starts being followed
# joins it when the current read returns, so this is the most a newly followed answer's first event can wait.
FOLLOW_BLOCK_MS = 100
CONNECT_TIMEOUT_S = 5.0  # a host that drops packets is "unreachable" after this, not after the OS's minutes
# A Redis that accepts connections but does not answer (paused, swapping, stuck on a slow script) is
# "unreachable" after this: callers refuse clearly instead of hanging. Longer than any BLOCK the project uses.
SOCKET_TIMEOUT_S = 4.0
# Each process holds at most this many connections; a command that finds none free waits POOL_WAIT_S, then fails.
MAX_CONNECTIONS = 64
POOL_WAIT_S = 4.0

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

# Fencing (every worker write checks ownership in the same script as the write). A delivery is owned
# by (consumer, delivery count): a reclaim by another worker changes the consumer and raises the
# count, so a worker that stalled past RECLAIM_IDLE_S and woke up finds its token stale and its
# writes are dropped, never merged. An entry that is neither pending nor in the stream, with no
# final event in its answer stream, was lost with Redis's data: its holder may still finish it.
# KEYS[1] is the questions stream; ARGV[1] the group and ARGV[2] the consumer in every script.
_OWNED_LUA = """
local function owned(entry, count, answers)
  local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], entry, entry, 1)
  if type(pending) == 'table' and pending.err == nil and pending[1] ~= nil then
    return pending[1][2] == ARGV[2] and tonumber(pending[1][4]) == tonumber(count)
  end
  if #redis.call('XRANGE', KEYS[1], entry, entry) > 0 then return false end
  if answers == nil then return false end
  local last = redis.call('XREVRANGE', answers, '+', '-', 'COUNT', 1)
  if #last == 0 then return true end
  local ok, event = pcall(cjson.decode, last[1][2][2])
  return not (ok and type(event) == 'table' and (event.type == 'done' or event.type == 'error'))
end
"""

# ARGV: group, consumer, field, ttl_s, then per write: entry, count, ack (1/0), n events, events…
# KEYS[1 + i] is the answer stream of write i. Returns the entries whose writes were dropped.
_PUBLISH_LUA = (
    _OWNED_LUA
    + """
local at, dropped = 5, {}
for k = 2, #KEYS do
  local entry, count, ack, n = ARGV[at], ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
  if owned(entry, count, KEYS[k]) then
    for e = 1, n do redis.call('XADD', KEYS[k], '*', ARGV[3], ARGV[at + 3 + e]) end
    if n > 0 then redis.call('EXPIRE', KEYS[k], ARGV[4]) end
    if ack == '1' and type(redis.pcall('XACK', KEYS[1], ARGV[1], entry)) == 'number' then
      redis.call('XDEL', KEYS[1], entry)
    end
  else
    table.insert(dropped, entry)
  end
  at = at + 4 + n
end
return dropped
"""
)

# ARGV: group, consumer, then entry, count pairs; KEYS[1 + i] the answer stream of pair i.
# Resets the idle time of the entries still owned (XCLAIM JUSTID); returns the ones lost.
_HEARTBEAT_LUA = (
    _OWNED_LUA
    + """
local lost = {}
for k = 2, #KEYS do
  local entry, count = ARGV[2 * k - 1], ARGV[2 * k]
  if owned(entry, count, KEYS[k]) then
    redis.pcall('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, entry, 'JUSTID')
  else
    table.insert(lost, entry)
  end
end
return lost
"""
)

# ARGV: group, consumer, idle_ms, then entry, count pairs: hand owned entries back (marked long idle).
_RELEASE_ENTRIES_LUA = (
    _OWNED_LUA
    + """
for i = 4, #ARGV, 2 do
  if owned(ARGV[i], ARGV[i + 1], nil) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
  end
end
return 0
"""
)

# KEYS[2] the dead stream. ARGV: group, consumer, entry, count, field, record, maxlen.
_DEAD_LETTER_LUA = (
    _OWNED_LUA
    + """
if not owned(ARGV[3], ARGV[4], nil) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', ARGV[5], ARGV[6])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS[1] questions. ARGV: group, the caller, idle_ms. Deletes consumers (not the caller) that have
# nothing pending and were idle that long; DELCONSUMER would drop pending entries, hence the check here.
_REAP_LUA = """
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return {} end
local gone = {}
for _, flat in ipairs(consumers) do
  local info = {}
  for i = 1, #flat, 2 do info[flat[i]] = flat[i + 1] end
  if info['name'] ~= ARGV[2] and tonumber(info['pending']) == 0 and tonumber(info['idle']) > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    table.insert(gone, info['name'])
  end
end
return gone
"""

_T = TypeVar("_T")


@dataclass(frozen=True)
class Delivery:
    """One questions-stream entry handed to this worker."""

    entry_id: str
    deliveries: int
    question: Question | None
    error: MalformedMessage | None
    raw: dict[str, str]


@dataclass(frozen=True)
class Write:
    """A worker's fenced writes for one delivery: answer events, then (optionally) the ack."""

    entry_id: str
    deliveries: int  # the fencing token with the consumer name: a reclaim raises it
    question_id: str
    events: tuple[AnswerEvent, ...] = ()
    ack: bool = False


@dataclass(frozen=True)
class BusStats:
    """Numbers `kullm status` shows."""

    queued: int
    pending: int
    consumers: int
    dead: int
    workers: tuple[WorkerStatus, ...]


@dataclass(eq=False)
class _Follower:
    """One reader of one answer stream: batches of (event id, fields) arrive in `inbox`, or the Redis error."""

    key: str
    after: str
    inbox: asyncio.Queue[list[tuple[str, Any]] | BaseException]


class AnswerReader:
    """One XREAD, in one task, for every answer stream a process follows.

    A follower per waiting answer used to block a pooled connection each: a few hundred waiting API
    clients emptied the pool and every other request failed. Here they share one blocking read of
    every followed stream (up to FOLLOW_BLOCK_MS, so a stream followed meanwhile joins soon); each
    follower gets its own stream's entries after its own last id, or the Redis error the read raised.
    """

    def __init__(self, redis: Redis, block_ms: int = FOLLOW_BLOCK_MS) -> None:
        self.redis = redis
        self.block_ms = block_ms
        self._followers: dict[str, list[_Follower]] = {}
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None

    def serves_running_loop(self) -> bool:
        return self._loop is asyncio.get_running_loop()

    def subscribe(self, key: str, after: str) -> _Follower:
        follower = _Follower(key, after, asyncio.Queue())
        self._followers.setdefault(key, []).append(follower)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read(), name="answer-reader")
        return follower

    def unsubscribe(self, follower: _Follower) -> None:
        followers = self._followers.get(follower.key, [])
        if follower in followers:
            followers.remove(follower)
        if not followers:
            self._followers.pop(follower.key, None)

    async def _read(self) -> None:
        while self._followers:
            streams: dict[Any, Any] = {
                key: min((f.after for f in followers), key=_stream_id) for key, followers in self._followers.items()
            }
            try:
                response: Any = await self.redis.xread(streams, count=100, block=self.block_ms)
            except RedisError as exc:
                for followers in list(self._followers.values()):
                    for follower in followers:
                        follower.inbox.put_nowait(exc)
                await asyncio.sleep(self.block_ms / 1000)  # they left or subscribe again: never a busy loop
                continue
            for raw_key, entries in response or []:
                self._hand_out(_text(raw_key), [(_text(raw_id), fields) for raw_id, fields in entries])

    def _hand_out(self, key: str, entries: list[tuple[str, Any]]) -> None:
        for follower in self._followers.get(key, []):
            after = _stream_id(follower.after)
            fresh = [(event_id, fields) for event_id, fields in entries if _stream_id(event_id) > after]
            if fresh:
                follower.after = fresh[-1][0]
                follower.inbox.put_nowait(fresh)


class Bus:
    """Redis Streams calls of the contract, on one `redis.asyncio.Redis` client."""

    def __init__(self, redis: Redis, keys: Keys | None = None) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        self._reader: AnswerReader | None = None
        self._enqueue_script = redis.register_script(_ENQUEUE_LUA)
        self._renew_script = redis.register_script(_RENEW_LUA)
        self._release_script = redis.register_script(_RELEASE_LUA)
        self._publish_script = redis.register_script(_PUBLISH_LUA)
        self._heartbeat_script = redis.register_script(_HEARTBEAT_LUA)
        self._release_entries_script = redis.register_script(_RELEASE_ENTRIES_LUA)
        self._dead_letter_script = redis.register_script(_DEAD_LETTER_LUA)
        self._reap_script = redis.register_script(_REAP_LUA)

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

    async def request_cancel(self, question_id: str, by: str = "") -> None:
        """Ask the worker to stop generating this answer; `by` (a display name) is who asked, for the notice."""
        await self.redis.set(self.keys.cancel(question_id), by.encode() or b"1", ex=CANCEL_TTL_S)

    async def cancelled_by(self, question_id: str) -> str:
        """Who asked to stop this answer, as `request_cancel` was told ("" when unknown or nobody)."""
        flag = await self.redis.get(self.keys.cancel(question_id))
        if isinstance(flag, bytes):
            flag = flag.decode(errors="replace")
        return "" if flag in (None, "1") else str(flag)

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
        between later ones; past either, `AnswerTimeout` is raised. Every answer a process follows
        is read by one shared XREAD (`AnswerReader`), so a thousand waiting answers hold one
        connection; a Redis error reaches each follower as it was raised.
        """
        if self._reader is None or not self._reader.serves_running_loop():
            self._reader = AnswerReader(self.redis)
        follower = self._reader.subscribe(self.keys.answers(question_id), after)
        try:
            last_event_at = time.monotonic()
            started = False
            while True:
                limit = stall_timeout_s if started else start_timeout_s
                wait = None if limit is None else max(0.0, last_event_at + limit - time.monotonic())
                try:
                    batch = await asyncio.wait_for(follower.inbox.get(), wait)
                except TimeoutError:
                    raise AnswerTimeout(f"no answer event for {limit:.0f}s (question {question_id})") from None
                if isinstance(batch, BaseException):
                    raise batch
                for event_id, fields in batch:
                    try:
                        event = decode_event(fields, event_id)
                    except MalformedMessage as exc:  # one bad event must not end the answer for its reader
                        log.warning("answer %s: skipping an undecodable event (%s)", question_id, exc.reason)
                        continue
                    started = True
                    last_event_at = time.monotonic()
                    yield event_id, event
                    if is_final(event):
                        return
        finally:
            self._reader.unsubscribe(follower)

    async def claim_event(self, platform: str, event_id: str, ttl_s: int = 3600) -> bool:
        """True the first time a platform event is seen; False for a redelivery."""
        return bool(await self.redis.set(self.keys.seen(platform, event_id), b"1", nx=True, ex=ttl_s))

    async def count_request(self, platform: str, user: str, window_s: int, units: int = 1) -> int:
        """Questions this user asked in the current fixed window, this one (worth `units`) included."""
        key = self.keys.rate(platform, user)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incrby(key, units)
            pipe.expire(key, window_s, nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def track(self, record: InflightRecord, ttl_s: int | None = None) -> None:
        """Remember an answer this adapter still has to post; the platform's records expire `ttl_s` after the last."""
        key = self.keys.inflight(record.platform)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, record.question_id, record.to_json())
            if ttl_s is not None:
                pipe.expire(key, ttl_s)
            await pipe.execute()

    async def untrack(self, platform: str, question_id: str) -> None:
        """The answer is posted (or given up): forget it."""
        await self.redis.hdel(self.keys.inflight(platform), question_id)

    async def tracked(self, platform: str) -> list[InflightRecord]:
        """Every answer of this platform not yet posted."""
        records = []
        for field, raw in (await self.redis.hgetall(self.keys.inflight(platform))).items():
            try:
                records.append(InflightRecord.from_json(raw))
            except MalformedMessage:  # nobody can answer it: removed, so it holds no user's slot
                log.warning("removing a malformed inflight record on %s", platform)
                await self.redis.hdel(self.keys.inflight(platform), field)
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

    # ------------------------------------------------------------------ API keys, usage

    async def add_api_key(self, digest: str, key: ApiKey) -> None:
        await self.redis.hset(self.keys.api_keys, digest, key.to_json())

    async def api_key(self, digest: str) -> ApiKey | None:
        """The key whose SHA-256 is `digest`, or None (unknown, revoked, or unreadable)."""
        raw = await self.redis.hget(self.keys.api_keys, digest)
        if raw is None:
            return None
        try:
            return ApiKey.model_validate_json(raw)
        except ValueError:
            return None

    async def api_keys(self) -> dict[str, ApiKey]:
        """Every key, by digest."""
        found = {}
        for digest, raw in (await self.redis.hgetall(self.keys.api_keys)).items():
            with contextlib.suppress(ValueError):
                found[_text(digest)] = ApiKey.model_validate_json(raw)
        return found

    async def revoke_api_key(self, digest: str) -> None:
        await self.redis.hdel(self.keys.api_keys, digest)

    async def open_question(self, name: str, question_id: str, deadline: float, limit: int) -> bool:
        """Count a key's question as open (queued or answering) unless it already has `limit` open; the ones past
        their deadline (their asker gone without closing them) no longer count."""
        opened = await self.redis.eval(  # one script: concurrent requests of one key cannot both take the last place
            _OPEN_QUESTION, 1, self.keys.api_open(name), time.time(), limit, question_id, deadline
        )
        return bool(opened)

    async def close_question(self, name: str, question_id: str) -> None:
        await self.redis.zrem(self.keys.api_open(name), question_id)

    async def rate_reset_s(self, platform: str, user: str) -> int:
        """Seconds until a user's rate window (`count_request`) starts over."""
        return max(1, int(await self.redis.ttl(self.keys.rate(platform, user))))

    async def add_usage(
        self, day: str, counts: dict[str, int], ttl_s: int, settled: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """Add usage counts (fields as `Keys.usage` names them) to a day, kept `ttl_s`, and drop the reservations
        (`chatbus.ledger`) of the (platform, user, question id) answers they count, in one transaction: a cap
        never sees both, nor neither."""
        key = self.keys.usage(day)
        async with self.redis.pipeline(transaction=True) as pipe:
            for field, count in counts.items():
                pipe.hincrby(key, field, count)
            if counts:
                pipe.expire(key, ttl_s)
            for platform, user, question_id in settled:
                pipe.zrem(self.keys.reserved(platform, user), question_id)
                pipe.hdel(self.keys.reserved_tokens(platform, user), question_id)
            await pipe.execute()

    async def usage(self, day: str) -> dict[str, int]:
        """A day's usage counts by field."""
        return {_text(k): int(v) for k, v in (await self.redis.hgetall(self.keys.usage(day))).items()}

    async def tokens_today(self, platform: str, user: str) -> int:
        """Prompt and completion tokens a user (or API key) used today (UTC)."""
        day = time.strftime("%Y-%m-%d", time.gmtime())
        fields = [usage_field(platform, user, "*", metric) for metric in ("prompt_tokens", "completion_tokens")]
        values = await self.redis.hmget(self.keys.usage(day), fields)
        return sum(int(v) for v in values if v is not None)

    # ------------------------------------------------------------------ personas

    async def persona(self, platform: str, channel: str) -> Persona | None:
        """The persona set for a channel, or None (also for a stored value this version cannot read)."""
        raw = await self.redis.hget(self.keys.personas(platform), channel)
        if raw is None:
            return None
        try:
            return Persona.model_validate_json(raw)
        except ValueError:
            return None

    async def set_persona(self, platform: str, channel: str, persona: Persona | None) -> None:
        """Set a channel's persona, or clear it with None."""
        if persona is None:
            await self.redis.hdel(self.keys.personas(platform), channel)
        else:
            await self.redis.hset(self.keys.personas(platform), channel, persona.to_json())

    # ------------------------------------------------------------------ feedback

    async def note_answered(self, record: AnsweredRecord, ttl_s: int) -> None:
        """Keep what votes on this answer are filed under, for `ttl_s`."""
        await self.redis.set(self.keys.answered(record.question_id), record.to_json(), ex=ttl_s)

    async def answered_record(self, question_id: str) -> AnsweredRecord | None:
        """The record of an answer posted with vote buttons; None once it expired (or never was)."""
        raw = await self.redis.get(self.keys.answered(question_id))
        if raw is None:
            return None
        try:
            return AnsweredRecord.model_validate_json(raw)
        except ValueError:
            return None

    async def feedback_secret(self) -> bytes:
        """The deployment's key for voters' hashes: made on first use (SET NX), the same for every adapter after."""
        made = secrets.token_hex(32).encode()
        await self.redis.set(self.keys.feedback_secret, made, nx=True)
        stored = await self.redis.get(self.keys.feedback_secret)
        return stored if isinstance(stored, bytes) else made

    async def note_vote(self, question_id: str, voter: str, vote: str, ttl_s: int) -> str | None:
        """Record a voter's vote on an answer; returns their vote before this one (None: their first)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(self.keys.votes(question_id), voter)
            pipe.hset(self.keys.votes(question_id), voter, vote)
            pipe.expire(self.keys.votes(question_id), ttl_s)
            before, _, _ = await pipe.execute()
        return None if before is None else _text(before)

    async def add_vote(self, vote: Vote, ttl_s: int) -> None:
        """File a vote; votes older than `ttl_s` are trimmed from the stream at the same time."""
        oldest_ms = int((time.time() - ttl_s) * 1000)
        await self.redis.xadd(self.keys.feedback, {FIELD: vote.to_json()}, minid=oldest_ms, approximate=False)

    async def votes(self, since: float = 0.0) -> list[Vote]:
        """Every vote since `since` (epoch seconds), the latest one per person per answer, oldest first."""
        latest: dict[tuple[str, str], Vote] = {}
        entries: list[tuple[Any, Any]] = list(
            await self.redis.xrange(self.keys.feedback, min=f"{int(since * 1000)}-0") or []
        )
        for _, fields in entries:
            try:
                vote = Vote.model_validate_json(fields[FIELD.encode()])
            except (KeyError, ValueError):
                continue
            earlier = latest.pop((vote.question_id, vote.voter), None)  # re-inserted: the order is the latest vote's
            if earlier is not None and vote.question is None and earlier.question is not None:
                vote = vote.model_copy(update={"question": earlier.question, "answer": earlier.answer})  # filed once
            latest[(vote.question_id, vote.voter)] = vote
        return list(latest.values())

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

    async def heartbeat(self, consumer: str, held: Sequence[Write]) -> set[str]:
        """Reset the idle time of entries this worker still owns; returns the entry ids it lost."""
        if not held:
            return set()
        args: list[str | int] = [WORKER_GROUP, consumer]
        for write in held:
            args += [write.entry_id, write.deliveries]
        keys = [self.keys.questions, *(self.keys.answers(w.question_id) for w in held)]
        return {_text(entry) for entry in await self._heartbeat_script(keys=keys, args=args)}

    async def release(self, consumer: str, held: Sequence[Write]) -> None:
        """Hand owned entries back: mark them long idle so the next reclaim by any worker takes them."""
        if held:
            args: list[str | int] = [WORKER_GROUP, consumer, RELEASED_IDLE_MS]
            for write in held:
                args += [write.entry_id, write.deliveries]
            await self._release_entries_script(keys=[self.keys.questions], args=args)

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
        ids: list[int | bytes | str | memoryview] = [_text(p["message_id"]) for p in pending]
        claimed: Any = await self._grouped(
            lambda: self.redis.xclaim(self.keys.questions, WORKER_GROUP, consumer, min_idle_ms, ids)
        )
        live = [(raw_id, fields) for raw_id, fields in claimed if fields]
        for raw_id, fields in claimed:
            if not fields:  # deleted while pending: nothing left to answer
                await self.ack(_text(raw_id))
        counts = await self._delivery_counts([_text(raw_id) for raw_id, _ in live])
        return [_delivery(raw_id, fields, counts.get(_text(raw_id), 1)) for raw_id, fields in live]

    async def _delivery_counts(self, entry_ids: Sequence[str]) -> dict[str, int]:
        """Delivery counts as Redis has them after a claim: the fencing token of each delivery."""
        if not entry_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.xpending_range(self.keys.questions, WORKER_GROUP, min=entry_id, max=entry_id, count=1)
            replies = await pipe.execute()
        return {_text(r[0]["message_id"]): int(r[0]["times_delivered"]) for r in replies if r}

    async def dead_letter(self, delivery: Delivery, reason: str, worker: str) -> bool:
        """Move a question this worker owns to the dead stream and drop it from the queue; False if not owned."""
        question_id = delivery.question.id if delivery.question else None
        record = DeadLetter(
            entry_id=delivery.entry_id,
            question_id=question_id,
            reason=reason,
            deliveries=delivery.deliveries,
            worker=worker,
            at=time.time(),
            raw=_truncated(delivery.raw.get(FIELD, repr(delivery.raw)), DEAD_RAW_MAX_CHARS),
        )
        args: list[str | int] = [WORKER_GROUP, worker, delivery.entry_id, delivery.deliveries, FIELD, record.to_json()]
        args.append(DEAD_MAXLEN)
        return bool(await self._dead_letter_script(keys=[self.keys.questions, self.keys.dead], args=args))

    async def publish(self, consumer: str, writes: Sequence[Write]) -> set[str]:
        """Append answer events and ack finished entries in one script, fenced by ownership.

        Writes for entries another worker now owns are dropped whole; their entry ids are
        returned. Answer streams expire an hour after their last event. An ack that finds no
        group (Redis lost its data) is moot and skipped.
        """
        writes = [w for w in writes if w.events or w.ack]
        if not writes:
            return set()
        args: list[str | int] = [WORKER_GROUP, consumer, FIELD, ANSWER_TTL_S]
        for write in writes:
            args += [write.entry_id, write.deliveries, int(write.ack), len(write.events)]
            args += [event.to_json() for event in write.events]
        keys = [self.keys.questions, *(self.keys.answers(w.question_id) for w in writes)]
        return {_text(entry) for entry in await self._publish_script(keys=keys, args=args)}

    async def claim_questions(self, claims: Sequence[tuple[str, str, int]]) -> list[bool]:
        """For each (question id, entry id, ttl_s): True if this entry answers the question (first come, or itself).

        A second entry with a question id already claimed by another entry is a copy (a redelivered
        platform event enqueued twice, a replayed XADD): it must be dropped, not answered again.
        """
        if not claims:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for question_id, entry_id, ttl_s in claims:
                pipe.set(self.keys.entry(question_id), entry_id, nx=True, ex=ttl_s, get=True)
            replies = await pipe.execute()
        return [reply is None or _text(reply) == entry for reply, (_, entry, _) in zip(replies, claims, strict=True)]

    async def answered(self, question_ids: Sequence[str]) -> set[str]:
        """The ids among `question_ids` whose answer stream already ends with `done` or `error`."""
        if not question_ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for question_id in question_ids:
                pipe.xrevrange(self.keys.answers(question_id), count=1)
            replies = await pipe.execute()
        return {qid for qid, last in zip(question_ids, replies, strict=True) if _ends_answer(last)}

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

    async def reap(self, me: str, idle_ms: int) -> list[str]:
        """Remove workers that are gone: consumers with nothing pending, silent for `idle_ms`, and their records.

        Run by live workers after they reclaimed a dead one's questions, so `kullm status` and the
        consumer group only show workers that exist. A removed worker that was merely frozen comes
        back on its own: its next read recreates the consumer, its next heartbeat the record.
        """
        gone = [_text(n) for n in await self._reap_script(keys=[self.keys.questions], args=[WORKER_GROUP, me, idle_ms])]
        now = time.time()
        for name, raw in (await self.redis.hgetall(self.keys.workers)).items():
            try:
                stale = not WorkerStatus.from_json(raw).live(now - idle_ms / 1000)
            except MalformedMessage:
                stale = True
            if stale or _text(name) in gone:
                await self.redis.hdel(self.keys.workers, name)
        return gone

    async def stats(self) -> BusStats:
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
        return BusStats(queued, pending, consumers, dead, await self.live_workers())

    async def live_workers(self) -> tuple[WorkerStatus, ...]:
        """The workers that reported within their last three heartbeats (serving, draining or loading), by name."""
        now = time.time()
        return tuple(w for w in await self.worker_records() if w.live(now))

    async def worker_records(self) -> tuple[WorkerStatus, ...]:
        """Every worker record, live or gone silent (frozen, or dead and not yet reaped by a live worker), by name;
        a worker that stopped cleanly has removed its own."""
        workers = []
        for raw in (await self.redis.hgetall(self.keys.workers)).values():
            try:
                workers.append(WorkerStatus.from_json(raw))
            except MalformedMessage:
                continue
        return tuple(sorted(workers, key=lambda w: w.name))

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


def _delivery(raw_id: Any, fields: dict[Any, Any], deliveries: int) -> Delivery:
    entry_id = _text(raw_id)
    raw = {_text(k): _text(v) for k, v in fields.items()}
    try:
        return Delivery(entry_id, deliveries, Question.from_fields(fields, entry_id), None, raw)
    except MalformedMessage as exc:
        return Delivery(entry_id, deliveries, None, exc, raw)


def _truncated(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more characters cut]"


def _ends_answer(entries: Any) -> bool:
    """True when the (last) entry given is a final answer event."""
    if not entries:
        return False
    raw_id, fields = entries[0]
    try:
        return is_final(decode_event(fields, _text(raw_id)))
    except MalformedMessage:
        return False


def _entries(response: Any) -> list[tuple[Any, Any]]:
    """Entries of a single-stream XREAD/XREADGROUP reply (RESP2, which `connect` uses)."""
    return list(response[0][1]) if response else []


def _stream_id(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def cancel_requested() -> bool:
    """True once the running task was cancelled, even if the CancelledError was swallowed.

    redis-py can turn a cancellation that lands mid-command into a ConnectionError; a loop that
    catches errors and goes on must check this, or a cancelled task never ends and whoever
    awaits it (a shutdown) hangs.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def connect(url: str, password: SecretStr | str | None = None, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """A Redis client for the contract: bytes replies (entries may hold invalid UTF-8), RESP2.

    `password` (REDIS_PASSWORD) is used when the URL carries none; one in the URL wins.

    Commands are retried a few times on a dropped connection (a restarted Redis leaves stale
    pooled connections); callers still see `ConnectionError` when Redis stays down. A Redis that
    does not answer is not retried: a command fails with `TimeoutError` after SOCKET_TIMEOUT_S.
    The pool is bounded (MAX_CONNECTIONS): past it a command waits up to POOL_WAIT_S for a free
    connection, then fails with `ConnectionError` like an unreachable Redis.
    """
    # Only a dropped connection is retried: a stalled Redis would otherwise cost four timeouts, not one.
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=3, supported_errors=(RedisConnectionError,))
    pool = BlockingConnectionPool.from_url(
        url,
        retry=retry,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        decode_responses=False,
        protocol=2,
        health_check_interval=30,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        password=password.get_secret_value() if isinstance(password, SecretStr) else password,
    )
    client = Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # what `Redis.from_url` sets: closing the client closes its pool
    return client


def redact_url(url: str) -> str:
    """A Redis URL fit for messages and logs: any password replaced by `***`."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def usage_field(platform: str, user: str, channel: str, metric: str) -> str:
    """A usage hash field: tabs cannot occur in platform names, user ids, channel ids or key names."""
    return "\t".join((platform, user, channel, metric))


# KEYS[1] a key's open questions (sorted set, score = deadline). ARGV: now, limit, question id, deadline.
_OPEN_QUESTION = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('EXPIREAT', KEYS[1], math.floor(tonumber(ARGV[4])) + 1)
return 1
"""
