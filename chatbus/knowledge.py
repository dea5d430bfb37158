"""The workspace knowledge store: the messages of channels that turned knowledge on, with their terms (the adapters
analyse the text: `bot.knowledge`), ranked by BM25, in the Redis every adapter already shares.

Why Redis, not a search service of our own: every adapter process on every host already holds a connection to it,
compose already gives it a volume and AOF (the index survives restarts and moves with `docker compose down/up`),
and its memory is what an operator already watches. RediSearch would do the ranking inside Redis, but it is a module
that Debian's redis-server and the official image do not load; the index is therefore plain hashes and sorted sets,
and BM25 is split in two: each posting holds its message's term weight (the term's count, damped for repeats and
for long messages) as a sorted-set score, and a search has Redis add the postings of its few terms — in the
channels its asker may read, and nowhere else — each weighted by the term's rarity (ZUNIONSTORE … WEIGHTS idf), then
reads back only the best. The sum runs in Redis's C code; the asking process never handles whole postings.

Layout, per channel (`Keys.knowledge_space`, "{prefix}kn:{platform}:{channel}"):

- `…:docs`      hash message id → JSON {thread, author, text, at, link, terms: {term: count}}
- `…:post:TERM` sorted set "channel<TAB>message id" → the term's weight in that message (its postings)
- `…:time`      sorted set message id → time (retention drops the oldest)
- `…:stats`     hash {docs, length} (how many messages, and their terms in all)

and `Keys.knowledge_channels`, hash "platform:channel" → JSON {by, since}: the channels with knowledge on (the
adapters write nothing for a channel that is not in it), and `forget` deletes the whole space.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from chatbus.connection import Link, as_text, translated

# BM25's usual constants: how fast a term's repeats stop counting, and how much a long message is held back. A
# message's length is weighed against a typical chat message's, fixed, so no weight is rewritten as a channel grows.
K1, B = 1.2, 0.75
TYPICAL_TERMS = 8
MAX_QUERY_TERMS = 16
ASKING_WEIGHT = 0.6  # a message that is itself a question ("…정해졌나요?") rarely holds the answer to one
# A message must hold at least this share of the question's weight (`_covered`) to be given to the model: one that
# shares only a common word with it ("회의" of "회의에서 배포 날짜를 언제로 정했지?") is not an answer, and when no
# message is, the bot says it found nothing rather than answer from noise.
# A word of the question that no message holds counts at half the weight of the rarest word held: enough that "회의
# 때 먹은 저녁 메뉴" is not answered from messages about 회의, not so much that a filler word ("혹시 기억나?") loses
# the answer (bench/knowledge.py measures both sides).
MIN_COVERAGE = 0.25
UNHELD_WEIGHT = 0.5
MAX_UNHELD = 4  # a question names a handful of things: past that, words no message holds are noise (or hostile)


@dataclass(frozen=True)
class Passage:
    """One message as the index keeps it: where it is, who wrote it, what it says, and the link that shows it."""

    platform: str
    channel: str
    message: str  # Discord message id, Slack ts
    text: str
    author: str = ""
    thread: str = ""  # the thread it is in ("" for a channel's top level)
    at: float = 0.0  # unix time it was written
    link: str = ""  # a Discord jump URL, a Slack permalink


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float


@dataclass(frozen=True)
class KnowledgeStatus:
    on: bool
    messages: int
    oldest: float | None
    newest: float | None
    by: str = ""
    since: float = 0.0


class Knowledge:
    """The knowledge store's calls (see the module docstring for the layout); text comes with its terms."""

    def __init__(self, link: Link) -> None:
        self.redis, self.keys = link.redis, link.keys

    # ------------------------------------------------------------------ which channels

    @property
    def _channels(self) -> str:
        return self.keys.knowledge_channels

    def _space(self, platform: str, channel: str) -> str:
        return self.keys.knowledge_space(platform, channel)

    @translated
    async def turn_on(self, platform: str, channel: str, by: str) -> None:
        await self.redis.hset(self._channels, f"{platform}:{channel}", json.dumps({"by": by, "since": time.time()}))

    @translated
    async def turn_off(self, platform: str, channel: str) -> None:
        """Stop indexing and answering from the channel; what is stored stays until `forget` or retention."""
        await self.redis.hdel(self._channels, f"{platform}:{channel}")

    @translated
    async def is_on(self, platform: str, channel: str) -> bool:
        return bool(await self.redis.hexists(self._channels, f"{platform}:{channel}"))

    @translated
    async def channels_on(self, platform: str) -> list[str]:
        keys = await self.redis.hkeys(self._channels)
        return [key.split(":", 1)[1] for key in map(as_text, keys) if key.startswith(f"{platform}:")]

    @translated
    async def status(self, platform: str, channel: str) -> KnowledgeStatus:
        space = self._space(platform, channel)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self._channels, f"{platform}:{channel}")
        pipe.hget(f"{space}:stats", "docs")
        pipe.zrange(f"{space}:time", 0, 0, withscores=True)
        pipe.zrange(f"{space}:time", -1, -1, withscores=True)
        on, docs, oldest, newest = await pipe.execute()
        info = json.loads(on) if on else {}
        return KnowledgeStatus(
            on=on is not None,
            messages=int(docs or 0),
            oldest=oldest[0][1] if oldest else None,
            newest=newest[0][1] if newest else None,
            by=info.get("by", ""),
            since=float(info.get("since", 0.0)),
        )

    # ------------------------------------------------------------------ writing

    @translated
    async def put(self, passages: list[Passage], terms: list[list[str]]) -> int:
        """Store messages with their terms (a new one, or an edit: the old text's terms are replaced), in one
        transaction. Returns how many were written."""
        return await self._write(passages, terms) if passages else 0

    async def _write(self, chunk: list[Passage], terms: list[list[str]]) -> int:
        olds = await self._docs([(p.platform, p.channel, p.message) for p in chunk])
        pipe = self.redis.pipeline(transaction=True)
        for passage, words, old in zip(chunk, terms, olds, strict=True):
            space = self._space(passage.platform, passage.channel)
            if old is not None:
                self._unindex(pipe, space, passage.message, old)
            counts = Counter(words)
            length = sum(counts.values())
            doc = {k: v for k, v in asdict(passage).items() if k not in ("platform", "channel", "message")}
            pipe.hset(f"{space}:docs", passage.message, json.dumps({**doc, "terms": dict(counts)}, ensure_ascii=False))
            member = f"{passage.channel}\t{passage.message}"
            for term, count in counts.items():
                weight = count * (K1 + 1) / (count + K1 * (1 - B + B * length / TYPICAL_TERMS))
                pipe.zadd(f"{space}:post:{term}", {member: weight})
            pipe.zadd(f"{space}:time", {passage.message: passage.at or time.time()})
            pipe.hincrby(f"{space}:stats", "docs", 1)
            pipe.hincrby(f"{space}:stats", "length", length)
        await pipe.execute()
        return len(chunk)

    def _unindex(self, pipe: Any, space: str, message: str, doc: dict[str, Any]) -> None:
        counts: dict[str, int] = doc.get("terms", {})
        member = f"{space.rsplit(':', 1)[1]}\t{message}"
        for term in counts:
            pipe.zrem(f"{space}:post:{term}", member)
        pipe.hdel(f"{space}:docs", message)
        pipe.zrem(f"{space}:time", message)
        pipe.hincrby(f"{space}:stats", "docs", -1)
        pipe.hincrby(f"{space}:stats", "length", -sum(counts.values()))

    @translated
    async def delete(self, platform: str, channel: str, messages: Iterable[str]) -> int:
        """Remove messages (deleted on the platform): they are never retrieved again. Returns how many there were."""
        ids = list(messages)
        olds = await self._docs([(platform, channel, m) for m in ids])
        space = self._space(platform, channel)
        pipe = self.redis.pipeline(transaction=True)
        for message, old in zip(ids, olds, strict=True):
            if old is not None:
                self._unindex(pipe, space, message, old)
        await pipe.execute()
        return sum(old is not None for old in olds)

    @translated
    async def forget(self, platform: str, channel: str) -> int:
        """Delete everything stored of the channel; returns how many messages that was."""
        space = self._space(platform, channel)
        count = int(await self.redis.hget(f"{space}:stats", "docs") or 0)
        keys = [key async for key in self.redis.scan_iter(match=f"{_glob(space)}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await self.redis.delete(*keys[start : start + 1000])
        return count

    @translated
    async def expire(self, platform: str, channel: str, before: float) -> int:
        """Drop the channel's messages written before `before` (KNOWLEDGE_RETENTION_DAYS); returns how many."""
        old = await self.redis.zrangebyscore(f"{self._space(platform, channel)}:time", "-inf", f"({before}")
        return await self.delete(platform, channel, map(as_text, old)) if old else 0

    async def _docs(self, where: list[tuple[str, str, str]]) -> list[dict[str, Any] | None]:
        if not where:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for platform, channel, message in where:
            pipe.hget(f"{self._space(platform, channel)}:docs", message)
        return [json.loads(raw) if raw else None for raw in await pipe.execute()]

    # ------------------------------------------------------------------ searching

    @translated
    async def search(self, platform: str, channels: Iterable[str], query_terms: Iterable[str], k: int = 5) -> list[Hit]:
        """The `k` messages of `channels` (those the asker may read, with knowledge on) that best match the question's
        terms, best first; none when no term occurs in them."""
        terms = sorted(set(query_terms))
        spaces = [(channel, self._space(platform, channel)) for channel in dict.fromkeys(channels)]
        if not terms or not spaces:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for _, space in spaces:
            pipe.hget(f"{space}:stats", "docs")
            for term in terms:
                pipe.zcard(f"{space}:post:{term}")
        replies = iter(await pipe.execute())
        docs, df = 0, dict.fromkeys(terms, 0)
        for _ in spaces:
            docs += int(next(replies) or 0)
            for term in terms:
                df[term] += int(next(replies))
        # A long question (or a hostile one: hundreds of words) is searched by its rarest terms only, which say the
        # most about what it asks: the sum Redis computes stays small whatever the question.
        known = sorted((t for t in terms if df[t]), key=lambda t: (df[t], t))[:MAX_QUERY_TERMS]
        idf = {term: math.log(1 + (docs - df[term] + 0.5) / (df[term] + 0.5)) for term in known}
        weights = {f"{space}:post:{term}": idf[term] for term in known for _, space in spaces}
        # Words of the question no message holds still count in what it asks (`UNHELD_WEIGHT`).
        unheld = UNHELD_WEIGHT * math.log(1 + (docs - 0.5) / 1.5) * min(MAX_UNHELD, len(terms) - len(known))
        if not weights:
            return []
        summed = self.keys.knowledge_sum(uuid.uuid4().hex)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zunionstore(summed, weights)
        pipe.zrevrange(summed, 0, k * 4 - 1, withscores=True)
        pipe.delete(summed)
        _, top, _ = await pipe.execute()
        scores = {as_text(member): float(score) for member, score in top}
        # A question's words match other people asking the same thing best: those are kept below the messages that
        # could answer it, read back for the best few (`ASKING_WEIGHT`).
        best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        found = await self._docs([(platform, *key.split("\t", 1)) for key, _ in best])  # type: ignore[misc]
        weighed = [
            (key, score * (ASKING_WEIGHT if doc and _asks(doc.get("text", "")) else 1.0), doc)
            for (key, score), doc in zip(best, found, strict=True)
        ]
        weighed.sort(key=lambda item: (-item[1], item[0]))
        hits = []
        for key, score, doc in weighed[:k]:
            if doc is None or _covered(doc, idf, unheld) < MIN_COVERAGE:  # deleted since, or about something else
                continue
            channel, message = key.split("\t", 1)
            fields = {name: doc[name] for name in ("text", "author", "thread", "at", "link") if name in doc}
            hits.append(Hit(Passage(platform, channel, message, **fields), score))
        return hits


def _covered(doc: dict[str, Any], idf: dict[str, float], unheld: float) -> float:
    """How much of what the question asks (its terms, each weighed by its rarity; `unheld`: the weight of those no
    message holds) a message holds."""
    held = doc.get("terms", {})
    return sum(weight for term, weight in idf.items() if term in held) / (sum(idf.values()) + unheld or 1.0)


def _asks(text: str) -> bool:
    """Whether a message is a question: its last sentence ends with a question mark."""
    return text.rstrip().endswith(("?", "？"))


def _glob(key: str) -> str:
    """`key` with Redis glob characters escaped (a channel id never has them, but a prefix might)."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in key)
