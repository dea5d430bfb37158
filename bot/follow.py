"""Following an answer stream through a Redis outage: the relay and `kullm ask` read answers this way.

The question and its events survive in Redis (AOF): when the connection drops or Redis stops
answering, the follower waits for Redis to come back and reads on after the last event it saw, so nothing is shown
twice or skipped. An outage longer than `REDIS_OUTAGE_S` is given up (the connection error
is raised).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.settings import ClientSettings
from chatbus import AnswerEvent, Bus, cancel_requested

REDIS_RETRY_S = 0.5


async def follow_answer(
    bus: Bus,
    question_id: str,
    settings: ClientSettings,
    on_outage: Callable[[], object] | None = None,
) -> AsyncIterator[AnswerEvent]:
    """The question's answer events until the last one; `on_outage` is called when Redis drops.

    Raises `AnswerTimeout` when no event comes in time (`ClientSettings.start_timeout_s` for the
    first, ANSWER_STALL_TIMEOUT_S between the others).
    """
    after = "0-0"
    outage_since: float | None = None
    while True:
        try:
            async for event_id, event in bus.follow(
                question_id,
                after=after,
                start_timeout_s=settings.start_timeout_s,
                stall_timeout_s=settings.answer_stall_timeout_s,
            ):
                after, outage_since = event_id, None
                yield event
            return
        except (RedisConnectionError, RedisTimeoutError):  # down, or up but not answering (paused, stuck)
            if cancel_requested():  # the "outage" was a cancellation redis-py turned into a connection error
                raise asyncio.CancelledError from None
            now = time.monotonic()
            if outage_since is None:
                outage_since = now
                if on_outage is not None:
                    on_outage()
            elif now - outage_since > settings.redis_outage_s:
                raise
            await asyncio.sleep(REDIS_RETRY_S)
