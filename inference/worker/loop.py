"""The worker loop: questions from the Redis queue through the engine, answer events back.

One asyncio task owns the engine and runs every `engine.step()` on one dedicated thread; background tasks
(`upkeep`) keep pending entries fresh, take over entries of dead workers and poll cancel flags. They never touch
the engine: they hand work to this loop.

Failure policy (at least once, answer posted once):
- a question taken over from another worker, or retried here, runs alone, so a question that crashes generation
  cannot take its batch-mates down with it twice (`policy`);
- a question whose generation failed alone is released for another delivery, and after `max_deliveries` it goes
  to the dead stream with an `error` event;
- out of memory: the batch restarts at half the size; the worker keeps serving;
- Redis unreachable or refusing writes (OOM, READONLY, MISCONF…): events and acks wait in the outbox, /healthz
  says what is wrong, and the loop retries with backoff (`health`); heartbeats cover the entries whose writes wait
  there too (heartbeats only reset idle times, which a refusal allows), so a finished answer is not taken for
  abandoned and answered again;
- a question another worker took over (this one stalled past RECLAIM_IDLE_S) is dropped here: every write is
  fenced by ownership, so stale text is never merged into its answer;
- a second entry for a question id already answered or in flight is acked and dropped (`admission`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chatbus import Bus, BusError
from inference.engine import Loaded, new_engine_thread
from inference.metrics import WorkerMetrics
from inference.settings import WorkerSettings
from inference.worker.admission import Admission
from inference.worker.answering import Answering
from inference.worker.hand import Hand
from inference.worker.health import REDIS_TROUBLE, RedisHealth
from inference.worker.policy import StepPolicy
from inference.worker.upkeep import Upkeep

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.01
# Of DRAIN_GRACE_S (the whole time a stop may take: compose's stop_grace_period), what is kept at its end for
# handing the unfinished answers to other workers before the SIGKILL: 10 s, or a quarter when that is shorter.
DRAIN_HANDOVER_S = 10.0


class Worker:
    """Serves questions from the queue until drained."""

    def __init__(
        self,
        bus: Bus,
        loaded: Loaded,
        settings: WorkerSettings,
        metrics: WorkerMetrics | None = None,
        engine_thread: ThreadPoolExecutor | None = None,
    ) -> None:
        self.bus = bus
        self.engine = loaded.engine
        self.settings = settings
        self.metrics = metrics or WorkerMetrics(settings.served_name)
        self.name = settings.worker_name
        # Every step on the same thread: no thread hand-off per step, and CUDA state stays on one thread. Pass
        # the thread that loaded the model (`new_engine_thread`): one thread doing torch work, not two (see there).
        self._owns_engine_thread = engine_thread is None
        self._engine_thread = engine_thread or new_engine_thread()
        self.hand = Hand(bus, self.name, self.metrics)
        self.redis_health = RedisHealth()  # what is wrong with Redis now: not ready until Redis answered once
        self.metrics.watch_redis(lambda: self.redis_health.problem)
        self.answering = Answering(self.engine, self.hand, settings, self.metrics)
        self.admission = Admission(
            bus, self.hand, loaded.prompts, settings, self.metrics, self.answering.hold, logprobs=self.engine.logprobs
        )
        self.policy = StepPolicy(bus, self.hand, self.answering, settings, self.metrics, self._engine_thread)
        self.upkeep = Upkeep(
            bus, self.hand, self.engine, settings, self.metrics, self.redis_health, lambda: self._draining
        )
        self._draining = False
        self._drain_deadline = 0.0
        self._drain_requested = asyncio.Event()
        self._last_poll = 0.0
        self._idle_block_ms = max(1, round(settings.idle_read_s * 1000))  # also how soon a drain is noticed

    @property
    def draining(self) -> bool:
        """True once SIGTERM (or `request_drain`) arrived."""
        return self._draining

    def request_drain(self) -> None:
        """Stop taking questions; finish the ones in hand within the grace period."""
        if not self._draining:
            jobs, grace = len(self.hand.jobs), self.settings.drain_grace_s
            log.info("draining: %d questions in hand, %.0fs grace", jobs, grace)
            self._draining = True
            self._drain_deadline = time.monotonic() + grace - min(DRAIN_HANDOVER_S, grace / 4)
            self._drain_requested.set()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Body of /healthz; healthy while serving, not while draining or while Redis is unusable."""
        problem = self.redis_health.problem
        status = "draining" if self._draining else f"redis {problem}" if problem else "ready"
        return status == "ready", {
            "status": status,
            "worker": self.name,
            "model": self.engine.model_id,
            "active": len(self.hand.jobs),
            "slots": self.engine.max_batch_size,
        }

    async def run(self) -> None:
        """Serve until drained."""
        await self.redis_health.until_usable(self.bus.consumer.ensure_group, self._drain_requested)
        if self._draining:
            return
        log.info("worker %s serving %s (batch %d)", self.name, self.engine.model_id, self.engine.max_batch_size)
        background = self.upkeep.start()
        try:
            await self._serve()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._shutdown()

    async def _serve(self) -> None:
        while not self._drained():
            try:
                await self._flush()
                await self._admit()
                await self._flush()  # `started` goes out before the prefill, not after it
                self.answering.drop_lost()
                self.answering.apply_cancels()
                if self.engine.active:
                    await self.policy.step()
                    self.answering.flush_due_deltas()
            except REDIS_TROUBLE as exc:
                self.redis_health.troubled(exc, len(self.hand.jobs))
                await self.redis_health.back_off()

    def _drained(self) -> bool:
        if not self._draining:
            return False
        return not self.hand.jobs or time.monotonic() >= self._drain_deadline

    async def _admit(self) -> None:
        inbox, self.hand.inbox = self.hand.inbox, []
        await self.admission.accept_all(inbox)
        if self.hand.solo and self.engine.active == 0:
            self.answering.start(self.hand.solo.popleft())
        if self._draining or self.hand.solo or any(job.solo and job.running for job in self.hand.jobs.values()):
            return
        free = self.engine.max_batch_size - self.engine.active
        idle = self.engine.active == 0
        if free <= 0 or (not idle and time.monotonic() - self._last_poll < POLL_INTERVAL_S):
            return
        deliveries = await self.bus.consumer.read(self.name, free, block_ms=self._idle_block_ms if idle else None)
        if idle and 0 < len(deliveries) < free:
            # A blocked read wakes on the first entry of a burst: take the rest that came with it, so they
            # are prefilled together instead of joining one step later.
            deliveries += await self.bus.consumer.read(self.name, free - len(deliveries), block_ms=None)
        self._last_poll = time.monotonic()
        await self.admission.accept_all(deliveries)

    async def _flush(self) -> None:
        """Publish pending events and ack finished entries, fenced by ownership; both stay queued if Redis is down."""
        if self.hand.outbox:
            self.hand.lost |= await self.hand.outbox.flush()
            self.redis_health.recovered()
            self.answering.drop_lost()
        await self.hand.usage.flush(self.bus, self.settings.usage_ttl_days * 86400)

    async def _shutdown(self) -> None:
        """Publish what is finished, release what is not, leave the worker list; each step tried on its own.

        Whatever cannot be written now (Redis down or refusing writes) is not lost: unacked entries
        are reclaimed by the other workers after RECLAIM_IDLE_S.
        """
        if self._owns_engine_thread:
            self._engine_thread.shutdown(wait=False)  # no step is running: the loop awaits each one
        self.engine.close()  # the threads and connections of an engine that runs on its own (paged, a server)
        held = [job.held() for job in self.hand.jobs.values()]
        steps = [("publish", self._flush), ("release", lambda: self.bus.consumer.release(self.name, held))]
        steps.append(("leave", lambda: self.bus.workers.forget(self.name)))
        if held:
            log.info("releasing %d unfinished questions to other workers", len(held))
        for name, step in steps:
            try:
                await step()
            except BusError as exc:
                log.warning("shutdown: could not %s (%s); other workers will reclaim what is left", name, exc)
