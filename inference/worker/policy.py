"""The step and its failure policy: each `engine.step()` runs on the engine's one thread; out of memory restarts
the batch at half the size (a question that does not fit alone fails); a batch whose step failed is retried one
question at a time, so a question that crashes generation cannot take its batch-mates down with it twice; a
question that failed alone is released for another delivery, and after `max_deliveries` dead-lettered."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from chatbus import Bus
from inference.engine import Engine, GenerationUpdate
from inference.errors import EngineOutOfMemory
from inference.governor import BatchGovernor
from inference.metrics import WorkerMetrics
from inference.settings import WorkerSettings
from inference.tasks import question_of
from inference.worker.answering import Answering
from inference.worker.hand import Hand, questions_of

log = logging.getLogger(__name__)


class StepPolicy:
    """Runs steps and handles their failures; see the module docstring."""

    def __init__(
        self,
        bus: Bus,
        hand: Hand,
        answering: Answering,
        settings: WorkerSettings,
        metrics: WorkerMetrics,
        engine_thread: ThreadPoolExecutor,
    ) -> None:
        self.bus, self.hand, self.answering = bus, hand, answering
        self.engine: Engine = answering.engine
        self.settings, self.metrics = settings, metrics
        self.engine_thread = engine_thread
        self.governor = BatchGovernor(settings.max_batch_size)
        self.peak_batch = 0

    async def step(self) -> None:
        started = time.monotonic()
        try:
            updates = await asyncio.get_running_loop().run_in_executor(self.engine_thread, self.engine.step)
        except EngineOutOfMemory as exc:
            await self._on_out_of_memory(exc)
            return
        except Exception:
            log.exception("generation step failed")
            await self._on_step_failure()
            return
        elapsed = time.monotonic() - started
        self._observe(updates, elapsed)
        for update in updates:
            if update.error is None:
                self.answering.on_update(update)
        self.answering.feed_tasks()
        for update in updates:
            if update.error is not None:  # this question alone failed (a server's error): retried, then dead-lettered
                await self.fail([question_of(update.id)], f"generation failed ({update.error[:200]})")

    def _observe(self, updates: list[GenerationUpdate], elapsed_s: float) -> None:
        batch = self.engine.last_batch
        if batch:
            self.metrics.batch_size.observe(batch)
            self.peak_batch = max(self.peak_batch, batch)
            self.metrics.peak_batch.set(self.peak_batch)
            if batch > 1:
                log.debug("decoded a batch of %d", batch)
        tokens = self.engine.last_tokens
        if tokens:
            self.metrics.tokens.inc(tokens)
            self.metrics.tokens_per_s.set(tokens / elapsed_s if elapsed_s > 0 else 0.0)
        self.metrics.vllm.step(elapsed_s, batch, tokens)
        self.engine.max_batch_size = self.governor.stepped(self.engine.max_batch_size)

    async def _on_out_of_memory(self, exc: EngineOutOfMemory) -> None:
        self.metrics.oom.inc()
        ids = questions_of(self.engine.reset())
        failed = min(self.engine.max_batch_size, len(ids))  # the batch that ran out: at most the cap, in front
        restart_at = self.governor.out_of_memory(failed)
        if restart_at == 0:
            # A question that does not fit alone fails (another worker may have room); the rest start again.
            log.error("out of memory with a single question: %s", exc)
            await self.fail(ids[:1], "out of memory")
            ids = ids[1:]
        else:
            self.engine.max_batch_size = restart_at
            log.warning("out of memory at batch %d: restarting at batch %d", failed, restart_at)
        for question_id in ids:
            job = self.hand.jobs.get(question_id)
            if job:
                self.answering.start(job)

    async def _on_step_failure(self) -> None:
        ids = questions_of(self.engine.reset())
        jobs = [self.hand.jobs[i] for i in ids if i in self.hand.jobs]
        if len(jobs) <= 1:
            await self.fail(ids, "generation failed")
            return
        log.warning("a batch of %d failed: retrying each question alone", len(jobs))
        for job in jobs:
            job.solo, job.running = True, False
            self.hand.solo.append(job)

    async def fail(self, question_ids: list[str], reason: str) -> None:
        """Release failed questions for another delivery, or dead-letter them past the limit."""
        for question_id in question_ids:
            job = self.hand.jobs.pop(question_id, None)
            if job is None:
                continue
            if job.run is not None:  # its other requests must not run on for nobody
                for request_id in job.request_ids:
                    self.engine.cancel(request_id)
            if job.attempt >= self.settings.max_deliveries:
                await self.hand.dead_letter(job.delivery, f"{reason} on delivery {job.attempt}")
            else:
                log.warning("question %s: %s on delivery %d, released for retry", question_id, reason, job.attempt)
                await self.bus.consumer.release(self.hand.name, [job.held()])
