"""The small stores of the contract: conversation threads, channel personas, and answer feedback (vote records,
the voters' hashing secret, the votes stream)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from chatbus.connection import Link, as_text, translated
from chatbus.keys import FIELD
from chatbus.messages import AnsweredRecord, Persona, Turn, Vote


class Threads:
    """Past turns per conversation (platform, thread), trimmed and expiring."""

    def __init__(self, link: Link) -> None:
        self.redis, self.keys = link.redis, link.keys

    @translated
    async def history(self, platform: str, thread: str) -> list[Turn]:
        """Past turns of a conversation, oldest first."""
        turns = []
        for raw in await self.redis.lrange(self.keys.thread(platform, thread), 0, -1):
            try:
                turns.append(Turn.model_validate_json(raw))
            except ValueError:
                continue
        return turns

    @translated
    async def remember(self, platform: str, thread: str, turn: Turn, max_turns: int, ttl_s: int) -> None:
        """Append a turn, keeping the last `max_turns`; the conversation expires `ttl_s` after it."""
        key = self.keys.thread(platform, thread)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, turn.model_dump_json())
            pipe.ltrim(key, -max_turns, -1)
            pipe.expire(key, ttl_s)
            await pipe.execute()


class Personas:
    """A persona per channel, set by the channel's admins."""

    def __init__(self, link: Link) -> None:
        self.redis, self.keys = link.redis, link.keys

    @translated
    async def get(self, platform: str, channel: str) -> Persona | None:
        """The persona set for a channel, or None (also for a stored value this version cannot read)."""
        raw = await self.redis.hget(self.keys.personas(platform), channel)
        if raw is None:
            return None
        try:
            return Persona.model_validate_json(raw)
        except ValueError:
            return None

    @translated
    async def set(self, platform: str, channel: str, persona: Persona | None) -> None:
        """Set a channel's persona, or clear it with None."""
        if persona is None:
            await self.redis.hdel(self.keys.personas(platform), channel)
        else:
            await self.redis.hset(self.keys.personas(platform), channel, persona.to_json())


class Feedback:
    """Votes on answers: what each answer's votes are filed under, each voter's latest vote, the votes stream."""

    def __init__(self, link: Link) -> None:
        self.redis, self.keys = link.redis, link.keys

    @translated
    async def note_answered(self, record: AnsweredRecord, ttl_s: int) -> None:
        """Keep what votes on this answer are filed under, for `ttl_s`."""
        await self.redis.set(self.keys.answered(record.question_id), record.to_json(), ex=ttl_s)

    @translated
    async def answered_record(self, question_id: str) -> AnsweredRecord | None:
        """The record of an answer posted with vote buttons; None once it expired (or never was)."""
        raw = await self.redis.get(self.keys.answered(question_id))
        if raw is None:
            return None
        try:
            return AnsweredRecord.model_validate_json(raw)
        except ValueError:
            return None

    @translated
    async def feedback_secret(self) -> bytes:
        """The deployment's key for voters' hashes: made on first use (SET NX), the same for every adapter after."""
        made = secrets.token_hex(32).encode()
        await self.redis.set(self.keys.feedback_secret, made, nx=True)
        stored = await self.redis.get(self.keys.feedback_secret)
        return stored if isinstance(stored, bytes) else made

    @translated
    async def note_vote(self, question_id: str, voter: str, vote: str, ttl_s: int) -> str | None:
        """Record a voter's vote on an answer; returns their vote before this one (None: their first)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(self.keys.votes(question_id), voter)
            pipe.hset(self.keys.votes(question_id), voter, vote)
            pipe.expire(self.keys.votes(question_id), ttl_s)
            before, _, _ = await pipe.execute()
        return None if before is None else as_text(before)

    @translated
    async def add_vote(self, vote: Vote, ttl_s: int) -> None:
        """File a vote; votes older than `ttl_s` are trimmed from the stream at the same time."""
        oldest_ms = int((time.time() - ttl_s) * 1000)
        await self.redis.xadd(self.keys.feedback, {FIELD: vote.to_json()}, minid=oldest_ms, approximate=False)

    @translated
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
