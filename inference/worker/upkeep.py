"""The worker's background tasks, beside the loop that steps the engine: heartbeats that keep owned entries fresh
(and find the ones another worker took over), the worker's record for `kullm status`, reclaiming the questions of
dead workers and reaping their records, and polling cancel flags. They never touch the engine: they hand work to
the loop through the `Hand` (reclaimed deliveries, cancel requests, lost entries)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from chatbus import Bus, BusDown, WorkerStatus, WritesRefused, cancel_requested
from inference.engine import Engine
from inference.metrics import WorkerMetrics
from inference.settings import WorkerSettings
from inference.worker.hand import Hand
from inference.worker.health import RedisHealth, trouble

log = logging.getLogger(__name__)

STATUS_CHANGE_S = 0.25  # how soon a change in the questions in hand reaches the worker list (`kullm status`)
# A worker is forgotten once silent for this many of its heartbeats and reclaim idle times (both must pass).
REAP_AFTER_HEARTBEATS, REAP_AFTER_RECLAIM_IDLES = 4, 2


class Upkeep:
    """The background tasks of one worker; see the module docstring."""

    def __init__(
        self,
        bus: Bus,
        hand: Hand,
        engine: Engine,
        settings: WorkerSettings,
        metrics: WorkerMetrics,
        health: RedisHealth,
        draining: Callable[[], bool],
    ) -> None:
        self.bus, self.hand, self.engine = bus, hand, engine
        self.settings, self.metrics, self.health = settings, metrics, health
        self.draining = draining
        self._deployment = settings.deployment()  # fixed for the worker's life: described once, reported each beat
        self._reported: tuple[int, bool] | None = None  # the questions in hand and draining, as last reported

    def start(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._every(self.settings.heartbeat_interval_s, self._heartbeat)),
            asyncio.create_task(self._every(self.settings.reclaim_interval_s, self._reclaim)),
            asyncio.create_task(self._every(self.settings.cancel_poll_s, self._poll_cancels)),
            asyncio.create_task(self._every(STATUS_CHANGE_S, self._report_change)),
        ]

    async def _every(self, interval_s: float, tick: Callable[[], Awaitable[None]]) -> None:
        while not cancel_requested():
            try:
                await tick()
            except BusDown as exc:
                log.debug("background %s: redis %s", tick.__name__, trouble(exc))
            except WritesRefused as exc:
                self.health.seen_by(exc, tick.__name__)
            except Exception:
                log.exception("background %s failed", tick.__name__)
            if cancel_requested():
                return  # cancelled mid-command: redis-py may have swallowed the CancelledError
            await asyncio.sleep(interval_s)

    async def _report_change(self) -> None:
        """Report at once when the questions in hand changed, so `kullm status` never shows a finished one as busy
        for the rest of a heartbeat interval."""
        if self._reported != self._roster():
            await self._report_status()

    def _roster(self) -> tuple[int, bool]:
        return len(self.hand.jobs), self.draining()

    async def _heartbeat(self) -> None:
        holding = self.hand.holding()
        lost = await self.bus.consumer.heartbeat(self.hand.name, holding)
        self.hand.lost |= lost & {write.entry_id for write in self.hand.holding()}  # not those finished while it ran
        self.metrics.inflight.set(len(self.hand.jobs))
        # vLLM's scheduler gauges, once a heartbeat (not each decode step: Prometheus reads them every 15 s or so).
        running = sum(1 for job in self.hand.jobs.values() if job.running)
        self.metrics.vllm.scheduler(running, len(self.hand.jobs) - running, self.engine.max_batch_size)
        self.metrics.queue_depth.set(await self.bus.queue.depth())
        await self._report_status()
        self.health.recovered()  # a write went through
        # Workers silent this long with nothing pending are gone (their questions were reclaimed): forget them.
        silent_s = max(
            REAP_AFTER_HEARTBEATS * self.settings.heartbeat_interval_s,
            REAP_AFTER_RECLAIM_IDLES * self.settings.reclaim_idle_s,
        )
        for name in await self.bus.workers.reap(self.hand.name, int(silent_s * 1000)):
            log.info("worker %s is gone: removed from the group and the worker list", name)

    async def _report_status(self) -> None:
        roster = self._roster()
        status = WorkerStatus(
            name=self.hand.name,
            model=self.settings.served_name,
            active=len(self.hand.jobs),
            slots=self.engine.max_batch_size,
            seen_at=time.time(),
            draining=self.draining(),
            heartbeat_s=self.settings.heartbeat_interval_s,
            tasks=dict(Counter(job.question.task for job in self.hand.jobs.values())),
            deployment=self._deployment,
        )
        await self.bus.workers.report(status)
        self._reported = roster

    async def _reclaim(self) -> None:
        if self.draining() or len(self.hand.solo) >= self.engine.max_batch_size:
            return
        count = max(1, self.engine.max_batch_size - len(self.hand.jobs))
        min_idle_ms = int(self.settings.reclaim_idle_s * 1000)
        claimed = await self.bus.consumer.reclaim(self.hand.name, min_idle_ms, count)
        if claimed:
            log.info("reclaimed %d questions from dead or departed workers", len(claimed))
            self.metrics.reclaimed.inc(len(claimed))
            self.hand.inbox.extend(claimed)

    async def _poll_cancels(self) -> None:
        if self.hand.jobs:
            self.hand.cancel_requests |= await self.bus.consumer.cancelled(list(self.hand.jobs))
