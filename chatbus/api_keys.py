"""API keys as the contract keeps them: a key is shown once when minted (`kullm keys create`) and stored only as
its SHA-256 digest (`ApiKeys.add`), which the API looks each request's key up by."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time

from chatbus.connection import Link, as_text, translated
from chatbus.messages import ApiKey

KEY_PREFIX = "kullm-"


def digest(key: str) -> str:
    """What a key is stored and looked up under."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh key: the prefix and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


# KEYS[1] a key's open questions (sorted set, score = deadline). ARGV: now, limit, question id, deadline.
_OPEN_QUESTION = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('EXPIREAT', KEYS[1], math.floor(tonumber(ARGV[4])) + 1)
return 1
"""


class ApiKeys:
    """The API's keys by digest, and each key's open questions (its concurrency limit)."""

    def __init__(self, link: Link) -> None:
        self.redis, self.keys = link.redis, link.keys

    @translated
    async def add(self, digest: str, key: ApiKey) -> None:
        await self.redis.hset(self.keys.api_keys, digest, key.to_json())

    @translated
    async def get(self, digest: str) -> ApiKey | None:
        """The key whose SHA-256 is `digest`, or None (unknown, revoked, or unreadable)."""
        raw = await self.redis.hget(self.keys.api_keys, digest)
        if raw is None:
            return None
        try:
            return ApiKey.model_validate_json(raw)
        except ValueError:
            return None

    @translated
    async def all(self) -> dict[str, ApiKey]:
        """Every key, by digest."""
        found = {}
        for digest, raw in (await self.redis.hgetall(self.keys.api_keys)).items():
            with contextlib.suppress(ValueError):
                found[as_text(digest)] = ApiKey.model_validate_json(raw)
        return found

    @translated
    async def revoke(self, digest: str) -> None:
        await self.redis.hdel(self.keys.api_keys, digest)

    @translated
    async def open_question(self, name: str, question_id: str, deadline: float, limit: int) -> bool:
        """Count a key's question as open (queued or answering) unless it already has `limit` open; the ones past
        their deadline (their asker gone without closing them) no longer count."""
        opened = await self.redis.eval(  # one script: concurrent requests of one key cannot both take the last place
            _OPEN_QUESTION, 1, self.keys.api_open(name), time.time(), limit, question_id, deadline
        )
        return bool(opened)

    @translated
    async def close_question(self, name: str, question_id: str) -> None:
        await self.redis.zrem(self.keys.api_open(name), question_id)
