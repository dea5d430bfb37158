"""What front-ends keep while they post answers: the in-flight records a restarted adapter resumes from, and
the per-question leases that make exactly one adapter process post each answer."""

from __future__ import annotations

import logging

from chatbus.connection import Link, translated
from chatbus.errors import MalformedMessage
from chatbus.messages import InflightRecord

log = logging.getLogger(__name__)

# Leases are renewed and released only by the process that holds them.
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Inflight:
    """In-flight records by platform and answer leases; see the module docstring."""

    def __init__(self, link: Link) -> None:
        self.redis, self.keys = link.redis, link.keys
        self._renew_script = link.redis.register_script(_RENEW_LUA)
        self._release_script = link.redis.register_script(_RELEASE_LUA)

    @translated
    async def track(self, record: InflightRecord, ttl_s: int | None = None) -> None:
        """Remember an answer this adapter still has to post; the platform's records expire `ttl_s` after the last."""
        key = self.keys.inflight(record.platform)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, record.question_id, record.to_json())
            if ttl_s is not None:
                pipe.expire(key, ttl_s)
            await pipe.execute()

    @translated
    async def untrack(self, platform: str, question_id: str) -> None:
        """The answer is posted (or given up): forget it."""
        await self.redis.hdel(self.keys.inflight(platform), question_id)

    @translated
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

    @translated
    async def acquire_lease(self, question_id: str, owner: str, ttl_ms: int) -> bool:
        """Become the one process posting this answer, unless another holds it."""
        return bool(await self.redis.set(self.keys.lease(question_id), owner.encode(), nx=True, px=ttl_ms))

    @translated
    async def renew_lease(self, question_id: str, owner: str, ttl_ms: int) -> bool:
        """Extend a lease this process holds; False when it was lost."""
        return bool(await self._renew_script(keys=[self.keys.lease(question_id)], args=[owner, ttl_ms]))

    @translated
    async def release_lease(self, question_id: str, owner: str) -> None:
        """Give up a lease this process holds."""
        await self._release_script(keys=[self.keys.lease(question_id)], args=[owner])
