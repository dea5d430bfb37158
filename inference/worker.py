"""The worker loop: questions from the Redis queue through the engine, answer events back.

One asyncio task owns the engine and calls `engine.step()` in a thread; background tasks
keep pending entries fresh (heartbeat), take over entries of dead workers (reclaim) and
poll cancel flags. They never touch the engine: they hand work to the main loop.

Failure policy (at least once, answer posted once):
- a question taken over from another worker, or retried here, runs alone, so a question
  that crashes generation cannot take its batch-mates down with it twice;
- a question whose generation failed alone is released for another delivery, and after
  `max_deliveries` it goes to the dead stream with an `error` event;
- out of memory: the batch restarts at half the size; the worker keeps serving;
- Redis unreachable: events and acks wait in the outbox and the loop retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import torch
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatbus import AnswerEvent, Bus, Delivery, Delta, Done, ErrorCode, ErrorEvent, Question, Restart, Started
from chatbus.messages import WorkerStatus
from inference.engine import GenerationRequest, GenerationUpdate
from inference.errors import PromptTooLong
from inference.metrics import WorkerMetrics
from inference.model import Loaded
from inference.settings import WorkerSettings

log = logging.getLogger(__name__)

IDLE_BLOCK_MS = 1000
POLL_INTERVAL_S = 0.01
REDIS_RETRY_S = 0.5
RESTORE_BATCH_AFTER_STEPS = 50
OOM_CEILING_S = 600.0  # a batch size that ran out of memory stays off limits this long
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass
class Job:
    """A question this worker holds: decoding, or waiting to run alone."""

    delivery: Delivery
    question: Question
    request: GenerationRequest
    prompt_tokens: int
    solo: bool = False
    running: bool = False
    started: bool = False
    published: str = ""
    latest: str = ""
    last_flush: float = 0.0
    started_at: float = 0.0
    first_text_at: float | None = None

    @property
    def attempt(self) -> int:
        return self.delivery.deliveries


class Worker:
    """Serves questions from the queue until drained."""

    def __init__(
        self, bus: Bus, loaded: Loaded, settings: WorkerSettings, metrics: WorkerMetrics | None = None
    ) -> None:
        self.bus = bus
        self.engine = loaded.engine
        self.prompts = loaded.prompts
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.name = settings.worker_name
        self._jobs: dict[str, Job] = {}
        self._solo: deque[Job] = deque()
        self._inbox: list[Delivery] = []
        self._cancel_requests: set[str] = set()
        self._outbox: list[tuple[str, AnswerEvent]] = []
        self._acks: list[str] = []
        self._draining = False
        self._drain_deadline = 0.0
        self._last_poll = 0.0
        self._good_steps = 0
        self._peak_batch = 0
        self._oom_ceiling: int | None = None  # the largest batch allowed since the last out-of-memory error
        self._oom_at = 0.0

    # ------------------------------------------------------------------ lifecycle

    @property
    def draining(self) -> bool:
        """True once SIGTERM (or `request_drain`) arrived."""
        return self._draining

    def request_drain(self) -> None:
        """Stop taking questions; finish the ones in hand within the grace period."""
        if not self._draining:
            log.info("draining: %d questions in hand, %.0fs grace", len(self._jobs), self.settings.drain_grace_s)
            self._draining = True
            self._drain_deadline = time.monotonic() + self.settings.drain_grace_s

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Body of /healthz; healthy while serving, not while draining."""
        status = "draining" if self._draining else "ready"
        return not self._draining, {
            "status": status,
            "worker": self.name,
            "model": self.engine.model_id,
            "active": len(self._jobs),
            "slots": self.engine.max_batch_size,
        }

    async def run(self) -> None:
        """Serve until drained."""
        await self._until_redis(self.bus.ensure_group)
        log.info("worker %s serving %s (batch %d)", self.name, self.engine.model_id, self.engine.max_batch_size)
        background = [
            asyncio.create_task(self._every(self.settings.heartbeat_interval_s, self._heartbeat)),
            asyncio.create_task(self._every(self.settings.reclaim_interval_s, self._reclaim)),
            asyncio.create_task(self._every(self.settings.cancel_poll_s, self._poll_cancels)),
        ]
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
                self._apply_cancels()
                if self.engine.active:
                    await self._step()
                    self._flush_due_deltas()
            except REDIS_DOWN as exc:
                log.warning("redis unreachable (%s); retrying in %.1fs", type(exc).__name__, REDIS_RETRY_S)
                await asyncio.sleep(REDIS_RETRY_S)

    def _drained(self) -> bool:
        if not self._draining:
            return False
        return not self._jobs or time.monotonic() >= self._drain_deadline

    async def _shutdown(self) -> None:
        with contextlib.suppress(*REDIS_DOWN):
            await self._flush()
            held = [job.delivery.entry_id for job in self._jobs.values()]
            if held:
                log.info("releasing %d unfinished questions to other workers", len(held))
                await self.bus.release(self.name, held)
            await self.bus.forget_worker(self.name)

    # ------------------------------------------------------------------ admission

    async def _admit(self) -> None:
        inbox, self._inbox = self._inbox, []
        await self._accept_all(inbox)
        if self._solo and self.engine.active == 0:
            self._start(self._solo.popleft())
        if self._draining or self._solo or any(job.solo and job.running for job in self._jobs.values()):
            return
        free = self.engine.max_batch_size - self.engine.active
        idle = self.engine.active == 0
        if free <= 0 or (not idle and time.monotonic() - self._last_poll < POLL_INTERVAL_S):
            return
        deliveries = await self.bus.read(self.name, free, block_ms=IDLE_BLOCK_MS if idle else None)
        self._last_poll = time.monotonic()
        await self._accept_all(deliveries)

    async def _accept_all(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        ids = [d.question.id for d in deliveries if d.question]
        cancelled = await self.bus.cancelled(ids)
        for delivery in deliveries:
            await self._accept(delivery, cancelled)

    async def _accept(self, delivery: Delivery, cancelled: set[str]) -> None:
        question = delivery.question
        if question is None:
            await self._reject_malformed(delivery)
            return
        if question.id in self._jobs:
            return
        if delivery.deliveries > self.settings.max_deliveries:
            await self._dead_letter(delivery, f"delivered {delivery.deliveries} times without an answer")
            return
        if time.time() > question.expires_at:
            self._end_with_error(delivery, "expired", "the question waited past its expiry")
            return
        if question.id in cancelled:
            self._end_with_error(delivery, "cancelled", "cancelled before generation")
            return
        max_new_tokens = min(question.max_new_tokens or self.settings.max_new_tokens, self.settings.max_new_tokens)
        try:
            prompt = self.prompts.build(
                question.question, context=question.context, history=question.history, max_new_tokens=max_new_tokens
            )
        except PromptTooLong as exc:
            self._end_with_error(delivery, "too_long", str(exc))
            return
        job = Job(delivery, question, GenerationRequest(question.id, prompt.text, max_new_tokens), prompt.tokens)
        self._jobs[question.id] = job
        if delivery.deliveries > 1:
            job.solo = True
            self._solo.append(job)
        else:
            self._start(job)

    def _start(self, job: Job) -> None:
        if job.attempt > 1 or job.started:
            self._outbox.append((job.question.id, Restart(attempt=job.attempt)))
        self._outbox.append((job.question.id, Started(worker=self.name, attempt=job.attempt)))
        job.running = job.started = True
        job.published = job.latest = ""
        job.started_at = time.monotonic()
        job.first_text_at = None
        self.metrics.queue_wait.observe(max(0.0, time.time() - job.question.created_at))
        log.info("question %s: started (attempt %d, %d prompt tokens)", job.question.id, job.attempt, job.prompt_tokens)
        self.engine.add(job.request)

    async def _reject_malformed(self, delivery: Delivery) -> None:
        assert delivery.error is not None
        log.warning("entry %s is malformed (%s): dead-lettered", delivery.entry_id, delivery.error.reason)
        await self.bus.dead_letter(delivery, f"malformed: {delivery.error.reason}", self.name)
        self.metrics.questions.labels("malformed").inc()
        question_id = _question_id(delivery.raw)
        if question_id:
            self._outbox.append((question_id, ErrorEvent(code="failed", message="malformed question entry")))

    # ------------------------------------------------------------------ generation

    async def _step(self) -> None:
        started = time.monotonic()
        try:
            updates = await asyncio.to_thread(self.engine.step)
        except (torch.OutOfMemoryError, MemoryError) as exc:
            await self._on_out_of_memory(exc)
            return
        except Exception:
            log.exception("generation step failed")
            await self._on_step_failure()
            return
        elapsed = time.monotonic() - started
        self._observe_step(updates, elapsed)
        for update in updates:
            self._on_update(update)

    def _observe_step(self, updates: list[GenerationUpdate], elapsed_s: float) -> None:
        batch = getattr(self.engine, "last_batch", len(updates))
        if batch:
            self.metrics.batch_size.observe(batch)
            self._peak_batch = max(self._peak_batch, batch)
            self.metrics.peak_batch.set(self._peak_batch)
            self.metrics.tokens.inc(batch)
            self.metrics.tokens_per_s.set(batch / elapsed_s if elapsed_s > 0 else 0.0)
            if batch > 1:
                log.debug("decoded a batch of %d", batch)
        self._good_steps += 1
        if self._good_steps >= RESTORE_BATCH_AFTER_STEPS and self.engine.max_batch_size < self._batch_limit():
            self.engine.max_batch_size += 1
            self._good_steps = 0

    def _batch_limit(self) -> int:
        """MAX_BATCH_SIZE, or less for a while after a batch ran out of memory (so it is not grown into again)."""
        if self._oom_ceiling is not None and time.monotonic() - self._oom_at > OOM_CEILING_S:
            self._oom_ceiling = None
        return min(self.settings.max_batch_size, self._oom_ceiling or self.settings.max_batch_size)

    def _on_update(self, update: GenerationUpdate) -> None:
        job = self._jobs.get(update.id)
        if job is None:
            return
        now = time.monotonic()
        job.latest = update.text
        if job.first_text_at is None and update.text:
            job.first_text_at = now
            self.metrics.first_token.observe(now - job.started_at)
        if not update.finished:
            return
        self._emit_delta(job)
        assert update.finish_reason is not None
        done = Done(
            text=update.text,
            finish_reason=update.finish_reason,
            prompt_tokens=update.prompt_tokens,
            completion_tokens=update.completion_tokens,
            queued_s=round(max(0.0, time.time() - job.question.created_at - (now - job.started_at)), 4),
            generate_s=round(now - job.started_at, 4),
        )
        self._outbox.append((job.question.id, done))
        self._acks.append(job.delivery.entry_id)
        del self._jobs[job.question.id]
        self.metrics.generate.observe(now - job.started_at)
        self.metrics.questions.labels("done").inc()
        log.info(
            "question %s: done (%s, %d tokens, %.2fs)",
            job.question.id,
            update.finish_reason,
            update.completion_tokens,
            now - job.started_at,
        )

    def _flush_due_deltas(self) -> None:
        now = time.monotonic()
        for job in self._jobs.values():
            if job.running and now - job.last_flush >= self.settings.delta_interval_s:
                self._emit_delta(job)

    def _emit_delta(self, job: Job) -> None:
        if job.latest == job.published:
            return
        if not job.latest.startswith(job.published):  # the visible text must only grow; start over if not
            self._outbox.append((job.question.id, Restart(attempt=job.attempt)))
            job.published = ""
        self._outbox.append((job.question.id, Delta(text=job.latest[len(job.published) :])))
        job.published = job.latest
        job.last_flush = time.monotonic()

    async def _on_out_of_memory(self, exc: BaseException) -> None:
        self.metrics.oom.inc()
        ids = self.engine.reset()
        failed = min(self.engine.max_batch_size, len(ids))  # the batch that ran out: at most the cap, in front
        self._good_steps = 0
        if failed <= 1:
            # A question that does not fit alone fails (another worker may have room); the rest start again.
            log.error("out of memory with a single question: %s", exc)
            await self._fail_jobs(ids[:1], "out of memory")
            ids = ids[1:]
        else:
            self.engine.max_batch_size = failed // 2
            self._oom_ceiling, self._oom_at = failed - 1, time.monotonic()
            log.warning("out of memory at batch %d: restarting at batch %d", failed, self.engine.max_batch_size)
        for question_id in ids:
            job = self._jobs.get(question_id)
            if job:
                self._start(job)

    async def _on_step_failure(self) -> None:
        ids = self.engine.reset()
        jobs = [self._jobs[i] for i in ids if i in self._jobs]
        if len(jobs) <= 1:
            await self._fail_jobs(ids, "generation failed")
            return
        log.warning("a batch of %d failed: retrying each question alone", len(jobs))
        for job in jobs:
            job.solo, job.running = True, False
            self._solo.append(job)

    async def _fail_jobs(self, question_ids: list[str], reason: str) -> None:
        """Release failed questions for another delivery, or dead-letter them past the limit."""
        for question_id in question_ids:
            job = self._jobs.pop(question_id, None)
            if job is None:
                continue
            if job.attempt >= self.settings.max_deliveries:
                await self._dead_letter(job.delivery, f"{reason} on delivery {job.attempt}")
            else:
                log.warning("question %s: %s on delivery %d, released for retry", question_id, reason, job.attempt)
                await self.bus.release(self.name, [job.delivery.entry_id])

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        question_id = delivery.question.id if delivery.question else None
        log.error("question %s: dead-lettered (%s)", question_id, reason)
        await self.bus.dead_letter(delivery, reason, self.name)
        self.metrics.questions.labels("dead").inc()
        if question_id:
            self._outbox.append((question_id, ErrorEvent(code="failed", message=reason)))

    # ------------------------------------------------------------------ cancel, errors, Redis writes

    def _apply_cancels(self) -> None:
        requests, self._cancel_requests = self._cancel_requests, set()
        for question_id in requests:
            job = self._jobs.pop(question_id, None)
            if job is None:
                continue
            if job.running:
                self.engine.cancel(question_id)
                self._emit_delta(job)
            with contextlib.suppress(ValueError):
                self._solo.remove(job)
            self._end_with_error(job.delivery, "cancelled", "cancelled by the user")

    def _end_with_error(self, delivery: Delivery, code: ErrorCode, message: str) -> None:
        assert delivery.question is not None
        log.info("question %s: %s", delivery.question.id, code)
        self._outbox.append((delivery.question.id, ErrorEvent(code=code, message=message)))
        self._acks.append(delivery.entry_id)
        self.metrics.questions.labels(code).inc()

    async def _flush(self) -> None:
        """Publish pending events and ack finished entries together; both stay queued if Redis is down."""
        if self._outbox or self._acks:
            await self.bus.publish(self._outbox, self._acks)
            self._outbox, self._acks = [], []

    # ------------------------------------------------------------------ background tasks

    async def _every(self, interval_s: float, tick: Any) -> None:
        while True:
            try:
                await tick()
            except REDIS_DOWN as exc:
                log.debug("background %s: redis unreachable (%s)", tick.__name__, exc)
            except Exception:
                log.exception("background %s failed", tick.__name__)
            await asyncio.sleep(interval_s)

    async def _heartbeat(self) -> None:
        await self.bus.heartbeat(self.name, [job.delivery.entry_id for job in self._jobs.values()])
        self.metrics.inflight.set(len(self._jobs))
        self.metrics.queue_depth.set(await self.bus.queue_depth())
        status = WorkerStatus(
            name=self.name,
            model=self.engine.model_id,
            active=len(self._jobs),
            slots=self.engine.max_batch_size,
            seen_at=time.time(),
            draining=self._draining,
        )
        await self.bus.report_worker(status)

    async def _reclaim(self) -> None:
        if self._draining or len(self._solo) >= self.engine.max_batch_size:
            return
        count = max(1, self.engine.max_batch_size - len(self._jobs))
        min_idle_ms = int(self.settings.reclaim_idle_s * 1000)
        claimed = await self.bus.reclaim(self.name, min_idle_ms, count)
        if claimed:
            log.info("reclaimed %d questions from dead or departed workers", len(claimed))
            self.metrics.reclaimed.inc(len(claimed))
            self._inbox.extend(claimed)

    async def _poll_cancels(self) -> None:
        if self._jobs:
            self._cancel_requests |= await self.bus.cancelled(list(self._jobs))

    async def _until_redis(self, call: Any) -> None:
        while True:
            try:
                await call()
                return
            except REDIS_DOWN as exc:
                log.warning("waiting for redis (%s)", type(exc).__name__)
                await asyncio.sleep(REDIS_RETRY_S)


def _question_id(raw: dict[str, str]) -> str | None:
    """The id of a malformed entry, when enough of it parses to tell whom to answer."""
    from chatbus.keys import FIELD

    try:
        document = json.loads(raw.get(FIELD, ""))
    except (json.JSONDecodeError, TypeError):
        return None
    question_id = document.get("id") if isinstance(document, dict) else None
    valid = isinstance(question_id, str) and 0 < len(question_id) <= 64
    return question_id if valid and all(c.isalnum() or c in "_.:-" for c in question_id) else None


def spawn(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Create a task (helper for callers that run the worker beside other services)."""
    return asyncio.create_task(coro)
