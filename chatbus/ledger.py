"""One ledger of tokens for every front-end: what a user (or API key) used today, and what is reserved for
answers not yet finished.

A daily token cap (USER_TOKENS_PER_DAY for chat users, an API key's `tokens_per_day`) is enforced by
reserving a question's most at admission — its prompt's upper bound plus the new tokens it may generate,
lowered to what the cap has left — in the same script that reads the day's use and the reservations
still held, so concurrent questions can never exceed the cap together. The worker settles each question
when its answer ends, however it ends (done, cancelled by the user or a disconnect, expired): the tokens
it generated are added to the day's use and the reservation dropped, in one transaction
(`Ledger.settle`). A reservation whose question never reached a worker lapses at its deadline.

The prompt's upper bound needs no tokenizer: every token of the tokenizers we serve (byte-level BPE,
SentencePiece with byte fallback) covers at least one byte of text, so the user's text in UTF-8 bytes,
plus TEMPLATE_TOKENS for the template and system prompt, bounds what the worker will count.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from chatbus.connection import Link, as_text, translated, usage_field
from chatbus.messages import Question

# What a chat answer under a daily cap may generate at most (the seed's max_new_tokens); the API's is API_MAX_TOKENS.
DEFAULT_NEW_TOKENS = 512
# The template's own tokens and the operator's system prompt, beside the user's text.
TEMPLATE_TOKENS = 256
# A task's work (summary parts and merges, translated chunks) beyond its text: per part, the template and a part's
# output read again by a merge. Parts are bounded by the contract (MAX_TASK_PARTS).
TASK_PART_TOKENS = TEMPLATE_TOKENS + 2 * 200

# KEYS: usage(day), reserved (zset id → deadline), reserved amounts (hash id → tokens).
# ARGV: prompt field, completion field, now, cap, id, fewest tokens, most tokens, deadline.
# Returns the tokens reserved (0: refused) and what the cap had left before.
_RESERVE_LUA = """
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
for _, id in ipairs(lapsed) do redis.call('HDEL', KEYS[3], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
local used = 0
for _, count in ipairs(redis.call('HMGET', KEYS[1], ARGV[1], ARGV[2])) do used = used + tonumber(count or '0') end
local held = 0
for _, amount in ipairs(redis.call('HVALS', KEYS[3])) do held = held + tonumber(amount) end
local left = tonumber(ARGV[4]) - used - held
if left < tonumber(ARGV[6]) then return {0, left} end
local granted = math.min(left, tonumber(ARGV[7]))
redis.call('ZADD', KEYS[2], ARGV[8], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[5], granted)
local ttl = math.max(1, math.ceil(tonumber(ARGV[8]) - tonumber(ARGV[3])))
redis.call('EXPIRE', KEYS[2], ttl, 'GT')
redis.call('EXPIRE', KEYS[3], ttl, 'GT')
if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ttl) end
if redis.call('TTL', KEYS[3]) < 0 then redis.call('EXPIRE', KEYS[3], ttl) end
return {granted, left}
"""


def prompt_bound(question: Question) -> int:
    """The most prompt tokens the worker can count for this question (see the module docstring)."""
    texts = [question.question, question.context, question.instructions]
    texts += [part for turn in question.history for part in (turn.question, turn.answer)]
    return sum(len(text.encode()) for text in texts) + TEMPLATE_TOKENS


def task_bound(question: Question, max_new_tokens: int, max_parts: int) -> int:
    """The most tokens a task (summary, translation, proofreading) can cost: its text, and every part's
    overhead and output, up to `max_parts` parts."""
    return prompt_bound(question) + max_parts * (TASK_PART_TOKENS + max_new_tokens)


class Ledger:
    """Reservations against daily token caps, and the days' usage counts; see the module docstring."""

    def __init__(self, link: Link) -> None:
        self.redis, self.keys = link.redis, link.keys
        self._reserve = link.redis.register_script(_RESERVE_LUA)

    @translated
    async def reserve(self, question: Question, cap: int, fewest: int, most: int, deadline: float) -> int:
        """Reserve between `fewest` and `most` tokens of the asker's daily `cap` for this question, until
        `deadline` (epoch seconds); returns how many were reserved, 0 when the cap has not `fewest` left."""
        day = time.strftime("%Y-%m-%d", time.gmtime())
        platform, user = question.platform, question.user
        fields = [usage_field(platform, user, "*", metric) for metric in ("prompt_tokens", "completion_tokens")]
        keys = [self.keys.usage(day), self.keys.reserved(platform, user), self.keys.reserved_tokens(platform, user)]
        args: list[str | int | float] = [*fields, time.time(), cap, question.id, fewest, most, deadline]
        granted, _ = await self._reserve(keys=keys, args=args)
        return int(granted)

    @translated
    async def release(self, question: Question) -> None:
        """Drop a reservation whose question was never queued (refused, Redis refused the write)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.reserved(question.platform, question.user), question.id)
            pipe.hdel(self.keys.reserved_tokens(question.platform, question.user), question.id)
            await pipe.execute()

    @translated
    async def reserved(self, platform: str, user: str) -> int:
        """Tokens held for this user's unfinished answers (lapsed reservations included until the next
        `reserve` drops them)."""
        amounts = await self.redis.hvals(self.keys.reserved_tokens(platform, user))
        return sum(int(amount) for amount in amounts)

    @translated
    async def settle(
        self, day: str, counts: dict[str, int], ttl_s: int, settled: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """Add usage counts (fields as `Keys.usage` names them) to a day, kept `ttl_s`, and drop the reservations
        of the (platform, user, question id) answers they count, in one transaction: a cap
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

    @translated
    async def usage(self, day: str) -> dict[str, int]:
        """A day's usage counts by field."""
        return {as_text(k): int(v) for k, v in (await self.redis.hgetall(self.keys.usage(day))).items()}

    @translated
    async def tokens_today(self, platform: str, user: str) -> int:
        """Prompt and completion tokens a user (or API key) used today (UTC)."""
        day = time.strftime("%Y-%m-%d", time.gmtime())
        fields = [usage_field(platform, user, "*", metric) for metric in ("prompt_tokens", "completion_tokens")]
        values = await self.redis.hmget(self.keys.usage(day), fields)
        return sum(int(v) for v in values if v is not None)
