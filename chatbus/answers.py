"""Following answers: the handle every follower uses (the relay, the API and `kullm ask`).

A follower reads one question's answer events in order until `done` or `error`. Every answer a process follows
is read by one shared XREAD (`AnswerReader`), so a thousand waiting answers hold one connection. The question
and its events survive in Redis (AOF): when the connection drops or Redis stops answering, a follower given an
`outage_s` waits for Redis to come back and reads on after the last event it saw, so nothing is shown twice or
skipped; an outage longer than that is given up (`BusDown` is raised).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from chatbus.connection import Link, as_text, cancel_requested, stream_id, translate
from chatbus.errors import AnswerTimeout, BusDown, MalformedMessage
from chatbus.messages import AnswerEvent, decode_event, is_final
from chatbus.queue import Queue

log = logging.getLogger(__name__)

# One XREAD follows every answer a process waits for (`AnswerReader`); a stream that starts being followed
# joins it when the current read returns, so this is the most a newly followed answer's first event can wait.
FOLLOW_BLOCK_MS = 100
# How often a follower riding out an outage tries Redis again.
OUTAGE_RETRY_S = 0.5


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
                key: min((f.after for f in followers), key=stream_id) for key, followers in self._followers.items()
            }
            try:
                response: Any = await self.redis.xread(streams, count=100, block=self.block_ms)
            except (RedisError, OSError) as exc:
                for followers in list(self._followers.values()):
                    for follower in followers:
                        follower.inbox.put_nowait(exc)
                await asyncio.sleep(self.block_ms / 1000)  # they left or subscribe again: never a busy loop
                continue
            for raw_key, entries in response or []:
                self._hand_out(as_text(raw_key), [(as_text(raw_id), fields) for raw_id, fields in entries])

    def _hand_out(self, key: str, entries: list[tuple[str, Any]]) -> None:
        for follower in self._followers.get(key, []):
            after = stream_id(follower.after)
            fresh = [(event_id, fields) for event_id, fields in entries if stream_id(event_id) > after]
            if fresh:
                follower.after = fresh[-1][0]
                follower.inbox.put_nowait(fresh)


class Answers:
    """Follow an answer (riding out Redis outages), or ask its worker to stop it."""

    def __init__(self, link: Link, queue: Queue) -> None:
        self.redis, self.keys = link.redis, link.keys
        self._queue = queue
        self._reader: AnswerReader | None = None

    async def cancel(self, question_id: str, by: str = "") -> None:
        """Ask the worker to stop this answer (the queue's cancel flag); `by` names who asked, for the notice."""
        await self._queue.request_cancel(question_id, by)

    async def follow(
        self,
        question_id: str,
        *,
        after: str = "0-0",
        start_timeout_s: float | None = None,
        stall_timeout_s: float | None = None,
        outage_s: float = 0.0,
        on_outage: Callable[[], object] | None = None,
    ) -> AsyncIterator[tuple[str, AnswerEvent]]:
        """Yield (event id, event) of one answer after `after`, until `done` or `error`.

        `start_timeout_s` bounds the wait for the first event, `stall_timeout_s` the gap between later ones;
        past either, `AnswerTimeout` is raised. With `outage_s`, a Redis that drops or stops answering is
        waited for that long (`on_outage` is called when it goes), then `BusDown` is raised; without, at once.
        """
        outage_since: float | None = None
        while True:
            try:
                async for event_id, event in self._read(question_id, after, start_timeout_s, stall_timeout_s):
                    after, outage_since = event_id, None
                    yield event_id, event
                return
            except BusDown:  # down, or up but not answering (paused, stuck)
                if cancel_requested():  # the "outage" was a cancellation redis-py turned into a connection error
                    raise asyncio.CancelledError from None
                if outage_s <= 0:
                    raise
                now = time.monotonic()
                if outage_since is None:
                    outage_since = now
                    if on_outage is not None:
                        on_outage()
                if now - outage_since >= outage_s:
                    raise
                await asyncio.sleep(OUTAGE_RETRY_S)

    async def _read(
        self, question_id: str, after: str, start_timeout_s: float | None, stall_timeout_s: float | None
    ) -> AsyncIterator[tuple[str, AnswerEvent]]:
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
                    raise translate(batch) from batch
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
