"""The front-ends' side of the question queue: admission (depth bound, dedupe of platform events, per-user
rate windows), and the cancel flags a user's "stop" sets for the worker to read."""

from __future__ import annotations

from chatbus.connection import Link, as_text, translated
from chatbus.errors import QueueFull
from chatbus.keys import FIELD
from chatbus.messages import Question

CANCEL_TTL_S = 3600

# KEYS[1] the questions stream. ARGV: limit (-1: none), field, question JSON. Returns {-1, depth} when full, else
# {0, depth ahead}: one script, so two adapters cannot both take the last place.
_ENQUEUE_LUA = """
local depth = redis.call('XLEN', KEYS[1])
if tonumber(ARGV[1]) >= 0 and depth >= tonumber(ARGV[1]) then
  return {-1, depth}
end
redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[3])
return {0, depth}
"""


class Queue:
    """Questions in, cancel flags set; see the module docstring."""

    def __init__(self, link: Link) -> None:
        self.redis, self.keys = link.redis, link.keys
        self._enqueue = link.redis.register_script(_ENQUEUE_LUA)

    @translated
    async def enqueue(self, question: Question, max_queue: int | None = None) -> int:
        """Add a question; returns how many were queued ahead of it. Raises `QueueFull`."""
        limit = -1 if max_queue is None else max_queue
        status, depth = await self._enqueue(keys=[self.keys.questions], args=[limit, FIELD, question.to_json()])
        if int(status) < 0:
            raise QueueFull(int(depth), limit)
        return int(depth)

    @translated
    async def depth(self) -> int:
        """Questions in the stream: waiting or being answered."""
        return int(await self.redis.xlen(self.keys.questions))

    @translated
    async def request_cancel(self, question_id: str, by: str = "") -> None:
        """Ask the worker to stop generating this answer; `by` (a display name) is who asked, for the notice."""
        await self.redis.set(self.keys.cancel(question_id), by.encode() or b"1", ex=CANCEL_TTL_S)

    @translated
    async def cancelled_by(self, question_id: str) -> str:
        """Who asked to stop this answer, as `request_cancel` was told ("" when unknown or nobody)."""
        flag = await self.redis.get(self.keys.cancel(question_id))
        by = "" if flag is None else as_text(flag)
        return "" if by == "1" else by

    @translated
    async def claim_event(self, platform: str, event_id: str, ttl_s: int = 3600) -> bool:
        """True the first time a platform event is seen; False for a redelivery."""
        return bool(await self.redis.set(self.keys.seen(platform, event_id), b"1", nx=True, ex=ttl_s))

    @translated
    async def count_request(self, platform: str, user: str, window_s: int, units: int = 1) -> int:
        """Questions this user asked in the current fixed window, this one (worth `units`) included."""
        key = self.keys.rate(platform, user)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incrby(key, units)
            pipe.expire(key, window_s, nx=True)
            count, _ = await pipe.execute()
        return int(count)

    @translated
    async def rate_reset_s(self, platform: str, user: str) -> int:
        """Seconds until a user's rate window (`count_request`) starts over."""
        return max(1, int(await self.redis.ttl(self.keys.rate(platform, user))))
