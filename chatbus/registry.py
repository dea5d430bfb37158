"""The worker registry: each worker's heartbeat record (`kullm status`), and the reaping of workers that are gone."""

from __future__ import annotations

import time
from dataclasses import dataclass

from chatbus.connection import Link, as_text, replied, translated
from chatbus.consumer import Consumer
from chatbus.errors import MalformedMessage
from chatbus.keys import WORKER_GROUP
from chatbus.messages import WorkerStatus
from chatbus.queue import Queue


@dataclass(frozen=True)
class BusStats:
    """Numbers `kullm status` shows."""

    queued: int
    pending: int
    consumers: int
    dead: int
    workers: tuple[WorkerStatus, ...]


class Workers:
    """Worker records by name; see the module docstring."""

    def __init__(self, link: Link, queue: Queue, consumer: Consumer) -> None:
        self.redis, self.keys = link.redis, link.keys
        self._queue, self._consumer = queue, consumer

    @translated
    async def report(self, status: WorkerStatus) -> None:
        """Record this worker's heartbeat for `kullm status`."""
        await self.redis.hset(self.keys.workers, status.name, status.to_json())

    @translated
    async def forget(self, name: str) -> None:
        """Remove a worker that shut down cleanly from the registry."""
        await self.redis.hdel(self.keys.workers, name)

    @translated
    async def reap(self, me: str, idle_ms: int) -> list[str]:
        """Remove workers that are gone: consumers with nothing pending, silent for `idle_ms`, and their records.

        Run by live workers after they reclaimed a dead one's questions, so `kullm status` and the
        consumer group only show workers that exist. A removed worker that was merely frozen comes
        back on its own: its next read recreates the consumer, its next heartbeat the record.
        """
        gone = await self._consumer.reap(me, idle_ms)
        now = time.time()
        for name, raw in (await self.redis.hgetall(self.keys.workers)).items():
            try:
                stale = not WorkerStatus.from_json(raw).live(now - idle_ms / 1000)
            except MalformedMessage:
                stale = True
            if stale or as_text(name) in gone:
                await self.redis.hdel(self.keys.workers, name)
        return gone

    @translated
    async def stats(self) -> BusStats:
        """Queue depth, pending entries, consumers, dead letters and live workers."""
        queued = await self._queue.depth()
        dead = int(await self.redis.xlen(self.keys.dead))
        pending = consumers = 0
        try:
            groups = await self.redis.xinfo_groups(self.keys.questions)
        except Exception as exc:
            if not replied(exc, "no such key"):
                raise
            groups = []  # no stream yet
        for group in groups:
            if as_text(group["name"]) == WORKER_GROUP:
                pending, consumers = int(group["pending"]), int(group["consumers"])
        return BusStats(queued, pending, consumers, dead, await self.live())

    @translated
    async def live(self) -> tuple[WorkerStatus, ...]:
        """The workers that reported within their last three heartbeats (serving, draining or loading), by name."""
        now = time.time()
        return tuple(w for w in await self.records() if w.live(now))

    @translated
    async def records(self) -> tuple[WorkerStatus, ...]:
        """Every worker record, live or gone silent (frozen, or dead and not yet reaped by a live worker), by name;
        a worker that stopped cleanly has removed its own."""
        workers = []
        for raw in (await self.redis.hgetall(self.keys.workers)).values():
            try:
                workers.append(WorkerStatus.from_json(raw))
            except MalformedMessage:
                continue
        return tuple(sorted(workers, key=lambda w: w.name))
