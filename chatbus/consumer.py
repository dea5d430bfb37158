"""The workers' side of the queue: reading through the `workers` consumer group, keeping owned entries fresh,
reclaiming the entries of dead workers, fenced answer writes, dead letters, and the answered/cancelled checks
admission makes.

Every worker write about a delivery (answer events, ack, heartbeat, release, dead letter) is fenced: a Lua
script checks, in the same call as the write, that the entry is still pending for this consumer with this
delivery count, and drops the write otherwise. The first entry to claim a question id (`entry:{id}`, SET NX)
answers it; later entries with that id are copies.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from chatbus.connection import Link, as_text, replied, translated
from chatbus.errors import MalformedMessage
from chatbus.keys import FIELD, WORKER_GROUP
from chatbus.messages import AnswerEvent, DeadLetter, Question, decode_event, is_final

log = logging.getLogger(__name__)

ANSWER_TTL_S = 3600
# XCLAIM ... IDLE this long marks an entry as abandoned so any worker reclaims it at once.
RELEASED_IDLE_MS = 10 * 24 * 3600 * 1000
DEAD_MAXLEN = 10000
# The dead stream keeps at most DEAD_MAXLEN entries of at most about this many characters each.
DEAD_RAW_MAX_CHARS = 4096

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

    @property
    def question_id(self) -> str | None:
        """Whom to answer: the question's id, or for a malformed entry the id when enough of it parses to tell."""
        return self.question.id if self.question is not None else _salvaged_id(self.raw)


@dataclass(frozen=True)
class Write:
    """A worker's fenced writes for one delivery: answer events, then (optionally) the ack."""

    entry_id: str
    deliveries: int  # the fencing token with the consumer name: a reclaim raises it
    question_id: str
    events: tuple[AnswerEvent, ...] = ()
    ack: bool = False


class Consumer:
    """A worker's calls on the questions stream; see the module docstring."""

    def __init__(self, link: Link) -> None:
        self.redis, self.keys = link.redis, link.keys
        self._publish_script = link.redis.register_script(_PUBLISH_LUA)
        self._heartbeat_script = link.redis.register_script(_HEARTBEAT_LUA)
        self._release_entries_script = link.redis.register_script(_RELEASE_ENTRIES_LUA)
        self._dead_letter_script = link.redis.register_script(_DEAD_LETTER_LUA)
        self._reap_script = link.redis.register_script(_REAP_LUA)

    @translated
    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists."""
        try:
            await self.redis.xgroup_create(self.keys.questions, WORKER_GROUP, id="0", mkstream=True)
            log.info("created consumer group %s on %s", WORKER_GROUP, self.keys.questions)
        except Exception as exc:
            if not replied(exc, "BUSYGROUP"):
                raise

    @translated
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

    @translated
    async def ack(self, *entry_ids: str) -> None:
        """Acknowledge and delete finished entries, so the stream length is the queue depth."""
        if not entry_ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.questions, WORKER_GROUP, *entry_ids)
            pipe.xdel(self.keys.questions, *entry_ids)
            await self._grouped(pipe.execute)

    @translated
    async def heartbeat(self, consumer: str, held: Sequence[Write]) -> set[str]:
        """Reset the idle time of entries this worker still owns; returns the entry ids it lost."""
        if not held:
            return set()
        args: list[str | int] = [WORKER_GROUP, consumer]
        for write in held:
            args += [write.entry_id, write.deliveries]
        keys = [self.keys.questions, *(self.keys.answers(w.question_id) for w in held)]
        return {as_text(entry) for entry in await self._heartbeat_script(keys=keys, args=args)}

    @translated
    async def release(self, consumer: str, held: Sequence[Write]) -> None:
        """Hand owned entries back: mark them long idle so the next reclaim by any worker takes them."""
        if held:
            args: list[str | int] = [WORKER_GROUP, consumer, RELEASED_IDLE_MS]
            for write in held:
                args += [write.entry_id, write.deliveries]
            await self._release_entries_script(keys=[self.keys.questions], args=args)

    @translated
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
        ids: list[int | bytes | str | memoryview] = [as_text(p["message_id"]) for p in pending]
        claimed: Any = await self._grouped(
            lambda: self.redis.xclaim(self.keys.questions, WORKER_GROUP, consumer, min_idle_ms, ids)
        )
        live = [(raw_id, fields) for raw_id, fields in claimed if fields]
        for raw_id, fields in claimed:
            if not fields:  # deleted while pending: nothing left to answer
                await self.ack(as_text(raw_id))
        counts = await self._delivery_counts([as_text(raw_id) for raw_id, _ in live])
        return [_delivery(raw_id, fields, counts.get(as_text(raw_id), 1)) for raw_id, fields in live]

    async def _delivery_counts(self, entry_ids: Sequence[str]) -> dict[str, int]:
        """Delivery counts as Redis has them after a claim: the fencing token of each delivery."""
        if not entry_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.xpending_range(self.keys.questions, WORKER_GROUP, min=entry_id, max=entry_id, count=1)
            replies = await pipe.execute()
        return {as_text(r[0]["message_id"]): int(r[0]["times_delivered"]) for r in replies if r}

    @translated
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

    @translated
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
        return {as_text(entry) for entry in await self._publish_script(keys=keys, args=args)}

    @translated
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
        return [reply is None or as_text(reply) == entry for reply, (_, entry, _) in zip(replies, claims, strict=True)]

    @translated
    async def answered(self, question_ids: Sequence[str]) -> set[str]:
        """The ids among `question_ids` whose answer stream already ends with `done` or `error`."""
        if not question_ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for question_id in question_ids:
                pipe.xrevrange(self.keys.answers(question_id), count=1)
            replies = await pipe.execute()
        return {qid for qid, last in zip(question_ids, replies, strict=True) if _ends_answer(last)}

    @translated
    async def cancelled(self, question_ids: Sequence[str]) -> set[str]:
        """The ids among `question_ids` whose user asked to stop."""
        if not question_ids:
            return set()
        flags = await self.redis.mget([self.keys.cancel(qid) for qid in question_ids])
        return {qid for qid, flag in zip(question_ids, flags, strict=True) if flag is not None}

    @translated
    async def reap(self, me: str, idle_ms: int) -> list[str]:
        """Delete consumers (not `me`) with nothing pending that were idle `idle_ms`: workers that are gone."""
        return [
            as_text(n) for n in await self._reap_script(keys=[self.keys.questions], args=[WORKER_GROUP, me, idle_ms])
        ]

    async def _grouped(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run a consumer-group call; recreate the group once if Redis lost it (NOGROUP)."""
        try:
            return await call()
        except Exception as exc:
            if not replied(exc, "NOGROUP"):
                raise
            log.warning("consumer group missing (Redis lost its data?): recreating it")
            await self.ensure_group()
            return await call()


def _delivery(raw_id: Any, fields: dict[Any, Any], deliveries: int) -> Delivery:
    entry_id = as_text(raw_id)
    raw = {as_text(k): as_text(v) for k, v in fields.items()}
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
        return is_final(decode_event(fields, as_text(raw_id)))
    except MalformedMessage:
        return False


def _entries(response: Any) -> list[tuple[Any, Any]]:
    """Entries of a single-stream XREAD/XREADGROUP reply (RESP2, which `connect` uses)."""
    return list(response[0][1]) if response else []


def _salvaged_id(raw: dict[str, str]) -> str | None:
    try:
        document = json.loads(raw.get(FIELD, ""))
    except (json.JSONDecodeError, TypeError):
        return None
    question_id = document.get("id") if isinstance(document, dict) else None
    if not isinstance(question_id, str) or not 0 < len(question_id) <= 64:
        return None
    return question_id if all(c.isalnum() or c in "_.:-" for c in question_id) else None
