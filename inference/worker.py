"""The worker loop: questions from the Redis queue through the engine, answer events back.

One asyncio task owns the engine and runs every `engine.step()` on one dedicated thread; background tasks
keep pending entries fresh (heartbeat), take over entries of dead workers (reclaim) and
poll cancel flags. They never touch the engine: they hand work to the main loop.

Failure policy (at least once, answer posted once):
- a question taken over from another worker, or retried here, runs alone, so a question
  that crashes generation cannot take its batch-mates down with it twice;
- a question whose generation failed alone is released for another delivery, and after
  `max_deliveries` it goes to the dead stream with an `error` event;
- out of memory: the batch restarts at half the size; the worker keeps serving;
- Redis unreachable or refusing writes (OOM, READONLY, MISCONF…): events and acks wait in the
  outbox, /healthz says what is wrong, and the loop retries with backoff; heartbeats cover the
  entries whose writes wait there too (heartbeats only reset idle times, which a refusal allows),
  so a finished answer is not taken for abandoned and answered again;
- a question another worker took over (this one stalled past RECLAIM_IDLE_S) is dropped here:
  every write is fenced by ownership, so stale text is never merged into its answer;
- a second entry for a question id already answered or in flight is acked and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chatbus import (
    AnswerEvent,
    Bus,
    BusDown,
    BusError,
    Delivery,
    Delta,
    Done,
    ErrorCode,
    ErrorEvent,
    NotAnswering,
    PasswordRefused,
    Progress,
    Question,
    Restart,
    Started,
    Write,
    WritesRefused,
    cancel_requested,
    usage_field,
)
from chatbus.consumer import ANSWER_TTL_S
from chatbus.messages import FinishReason, WorkerStatus
from inference.engine import GenerationRequest, GenerationUpdate, Loaded, new_engine_thread
from inference.errors import EngineOutOfMemory, PromptTooLong
from inference.governor import BatchGovernor
from inference.metrics import WorkerMetrics
from inference.outbox import Outbox
from inference.settings import WorkerSettings
from inference.tasks import TaskRun, question_of

log = logging.getLogger(__name__)
# The share of the batch that tasks' requests (summary parts, translated chunks) may hold together.
TASK_SHARE = 0.5

POLL_INTERVAL_S = 0.01
REDIS_RETRY_S = 0.5
REDIS_RETRY_MAX_S = 8.0  # backoff cap while Redis stays unreachable or refuses writes
# Of DRAIN_GRACE_S (the whole time a stop may take: compose's stop_grace_period), what is kept at its end for
# handing the unfinished answers to other workers before the SIGKILL: 10 s, or a quarter when that is shorter.
DRAIN_HANDOVER_S = 10.0
STATUS_CHANGE_S = 0.25  # how soon a change in the questions in hand reaches the worker list (`kullm status`)
NOT_REACHED = "not reached yet"  # /healthz says 503 until Redis answered once
# A worker is forgotten once silent for this many of its heartbeats and reclaim idle times (both must pass).
REAP_AFTER_HEARTBEATS, REAP_AFTER_RECLAIM_IDLES = 4, 2
# What the loop rides out: Redis away, or up and refusing writes (each can pass). Any other failure is a bug.
REDIS_TROUBLE = (BusDown, WritesRefused)


def trouble(exc: BusDown | WritesRefused) -> str:
    """What is wrong with Redis, for the log and /healthz ("refuses writes (OOM)", "unreachable"…)."""
    if isinstance(exc, WritesRefused):
        return f"refuses writes ({exc.reason})"
    if isinstance(exc, PasswordRefused):
        return "refuses the password"
    return "not answering" if isinstance(exc, NotAnswering) else "unreachable"


@dataclass
class Job:
    """A question this worker holds: decoding, or waiting to run alone."""

    delivery: Delivery
    question: Question
    request: GenerationRequest | None  # a plain question's one request; None for a task run
    prompt_tokens: int
    context_cut: bool = False
    run: TaskRun | None = None  # summarize, translate, proofread: requests in passes
    progress: tuple[int, int] | None = None  # last reported
    solo: bool = False
    running: bool = False
    started: bool = False
    published: str = ""
    latest: str = ""
    last_flush: float = 0.0
    started_at: float = 0.0
    first_text_at: float | None = None
    completion_tokens: int = 0  # generated so far (a cancelled answer's are counted too)

    @property
    def attempt(self) -> int:
        return self.delivery.deliveries

    @property
    def request_ids(self) -> list[str]:
        """The engine requests this job has running (a task run may have several)."""
        return self.run.active_ids if self.run else [self.question.id]


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
        self.prompts = loaded.prompts
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.name = settings.worker_name
        self._jobs: dict[str, Job] = {}
        self._solo: deque[Job] = deque()
        self._usage: dict[str, Counter[str]] = {}  # day → usage counts not yet written
        self._settled: list[tuple[str, str, str]] = []  # (platform, user, question id) whose reservations they end
        self._inbox: list[Delivery] = []
        # Deliveries being accepted: a long task is planned (its text tokenised) on a thread for a second or more,
        # and its entry must stay fresh meanwhile or another worker reclaims it.
        self._accepting: dict[str, Delivery] = {}
        self._cancel_requests: set[str] = set()
        self._outbox = Outbox(bus, self.name)
        self._governor = BatchGovernor(settings.max_batch_size)
        self._lost: set[str] = set()  # entries the heartbeat found owned by another worker now
        self._draining = False
        self._reported: tuple[int, bool] | None = None  # the questions in hand and draining, as last reported
        self._drain_deadline = 0.0
        self._last_poll = 0.0
        self._peak_batch = 0
        # What is wrong with Redis right now, for the log and /healthz: not ready until Redis answered once.
        self._redis_problem: str | None = NOT_REACHED
        self._drain_requested = asyncio.Event()
        self._redis_retry_s = REDIS_RETRY_S
        self._idle_block_ms = max(1, round(settings.idle_read_s * 1000))  # also how soon a drain is noticed
        # Every step on the same thread: no thread hand-off per step, and CUDA state stays on one thread. Pass
        # the thread that loaded the model (`new_engine_thread`): one thread doing torch work, not two (see there).
        self._owns_engine_thread = engine_thread is None
        self._engine_thread = engine_thread or new_engine_thread()

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
            grace = self.settings.drain_grace_s
            self._drain_deadline = time.monotonic() + grace - min(DRAIN_HANDOVER_S, grace / 4)
            self._drain_requested.set()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Body of /healthz; healthy while serving, not while draining or while Redis is unusable."""
        status = "draining" if self._draining else f"redis {self._redis_problem}" if self._redis_problem else "ready"
        return status == "ready", {
            "status": status,
            "worker": self.name,
            "model": self.engine.model_id,
            "active": len(self._jobs),
            "slots": self.engine.max_batch_size,
        }

    async def run(self) -> None:
        """Serve until drained."""
        await self._until_redis(self.bus.consumer.ensure_group)
        if self._draining:
            return
        log.info("worker %s serving %s (batch %d)", self.name, self.engine.model_id, self.engine.max_batch_size)
        background = [
            asyncio.create_task(self._every(self.settings.heartbeat_interval_s, self._heartbeat)),
            asyncio.create_task(self._every(self.settings.reclaim_interval_s, self._reclaim)),
            asyncio.create_task(self._every(self.settings.cancel_poll_s, self._poll_cancels)),
            asyncio.create_task(self._every(STATUS_CHANGE_S, self._report_change)),
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
                self._drop_lost()
                self._apply_cancels()
                if self.engine.active:
                    await self._step()
                    self._flush_due_deltas()
            except REDIS_TROUBLE as exc:
                await self._redis_trouble(trouble(exc))

    async def _redis_trouble(self, problem: str) -> None:
        """Say once what is wrong, then retry with backoff; events and acks wait in the outbox meanwhile."""
        self._say_redis_trouble(problem)
        await asyncio.sleep(self._redis_retry_s)
        self._redis_retry_s = min(self._redis_retry_s * 2, REDIS_RETRY_MAX_S)

    def _say_redis_trouble(self, problem: str) -> None:
        if problem != self._redis_problem:
            log.warning("redis %s: holding %d questions, retrying with backoff", problem, len(self._jobs))
            self._redis_problem, self._redis_retry_s = problem, REDIS_RETRY_S

    def _redis_recovered(self) -> None:
        if self._redis_problem == NOT_REACHED:
            log.info("redis reached")
        elif self._redis_problem:
            log.info("redis usable again (was: %s)", self._redis_problem)
        self._redis_problem = None

    def _drained(self) -> bool:
        if not self._draining:
            return False
        return not self._jobs or time.monotonic() >= self._drain_deadline

    async def _shutdown(self) -> None:
        """Publish what is finished, release what is not, leave the worker list; each step tried on its own.

        Whatever cannot be written now (Redis down or refusing writes) is not lost: unacked entries
        are reclaimed by the other workers after RECLAIM_IDLE_S.
        """
        if self._owns_engine_thread:
            self._engine_thread.shutdown(wait=False)  # no step is running: the loop awaits each one
        self.engine.close()  # the threads and connections of an engine that runs on its own (paged, a server)
        held = [_held(job) for job in self._jobs.values()]
        steps = [("publish", self._flush), ("release", lambda: self.bus.consumer.release(self.name, held))]
        steps.append(("leave", lambda: self.bus.workers.forget(self.name)))
        if held:
            log.info("releasing %d unfinished questions to other workers", len(held))
        for name, step in steps:
            try:
                await step()
            except BusError as exc:
                log.warning("shutdown: could not %s (%s); other workers will reclaim what is left", name, exc)

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
        deliveries = await self.bus.consumer.read(self.name, free, block_ms=self._idle_block_ms if idle else None)
        if idle and 0 < len(deliveries) < free:
            # A blocked read wakes on the first entry of a burst: take the rest that came with it, so they
            # are prefilled together instead of joining one step later.
            deliveries += await self.bus.consumer.read(self.name, free - len(deliveries), block_ms=None)
        self._last_poll = time.monotonic()
        await self._accept_all(deliveries)

    async def _accept_all(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        self._accepting.update((d.entry_id, d) for d in deliveries)
        try:
            await self._accept_each(deliveries)
        finally:
            for delivery in deliveries:
                self._accepting.pop(delivery.entry_id, None)

    async def _accept_each(self, deliveries: list[Delivery]) -> None:
        questions = [d for d in deliveries if d.question]
        ids = [d.question.id for d in questions if d.question]
        cancelled = await self.bus.consumer.cancelled(ids)
        answered = await self.bus.consumer.answered(ids)
        now = time.time()
        claims = [
            (d.question.id, d.entry_id, int(max(0.0, d.question.expires_at - now)) + ANSWER_TTL_S)
            for d in questions
            if d.question
        ]
        owned = dict(zip((d.entry_id for d in questions), await self.bus.consumer.claim_questions(claims), strict=True))
        for delivery in deliveries:
            if delivery.question and self._duplicate(
                delivery, owned[delivery.entry_id], delivery.question.id in answered
            ):
                self._outbox.ack(delivery)  # acked with no event: the answer the asker follows is the original's
                continue
            await self._accept(delivery, cancelled)

    def _duplicate(self, delivery: Delivery, claimed: bool, answered: bool) -> bool:
        """A second entry for a question already answered, or in flight from another entry, here or elsewhere."""
        assert delivery.question is not None
        question_id, entry_id = delivery.question.id, delivery.entry_id
        held = self._jobs.get(question_id)
        if held is not None and held.delivery.entry_id != entry_id:
            reason = "in flight here"
        elif not claimed:
            reason = "another entry answers it"
        elif answered:
            reason = "already answered"
        else:
            return False
        log.warning("entry %s repeats question %s (%s): acked and dropped", entry_id, question_id, reason)
        self.metrics.questions.labels("duplicate").inc()
        return True

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
        if question.task != "ask":
            await self._accept_task(delivery, question, max_new_tokens)
            return
        try:  # tokenising a long 맥락 and history takes time: off the event loop, so heartbeats keep going
            prompt = await asyncio.to_thread(
                self.prompts.build,
                question.question,
                context=question.context,
                history=question.history,
                instructions=question.instructions,
                max_new_tokens=max_new_tokens,
            )
        except PromptTooLong as exc:
            self._end_with_error(delivery, "too_long", str(exc))
            return
        request = GenerationRequest(
            question.id, prompt.text, max_new_tokens, temperature=question.temperature, top_p=question.top_p
        )
        self._hold(Job(delivery, question, request, prompt.tokens, context_cut=prompt.context_cut))

    async def _accept_task(self, delivery: Delivery, question: Question, max_new_tokens: int) -> None:
        """A summary, translation or proofreading: planned into passes (splitting a long text tokenises it)."""
        try:
            run = await asyncio.to_thread(TaskRun, question, self.prompts, max_new_tokens)
        except PromptTooLong as exc:
            self._end_with_error(delivery, "too_long", str(exc))
            return
        except ValueError as exc:
            self._end_with_error(delivery, "failed", str(exc))
            return
        log.info("question %s: %s in %d part(s)", question.id, question.task, run.parts)
        self._hold(Job(delivery, question, None, 0, run=run))

    def _hold(self, job: Job) -> None:
        delivery = job.delivery
        self._jobs[job.question.id] = job
        if delivery.deliveries > 1:
            job.solo = True
            self._solo.append(job)
        else:
            self._start(job)

    def _start(self, job: Job) -> None:
        if job.attempt > 1 or job.started:
            self._emit(job.delivery, job.question.id, Restart(attempt=job.attempt))
        started = Started(worker=self.name, attempt=job.attempt, entry=job.delivery.entry_id)
        self._emit(job.delivery, job.question.id, started)
        job.running = job.started = True
        job.published = job.latest = ""
        job.started_at = time.monotonic()
        job.first_text_at = None
        self.metrics.queue_wait.observe(max(0.0, time.time() - job.question.created_at))
        if job.run is not None:
            job.progress = None
            job.run.start()
            self._feed_tasks()
            job.prompt_tokens = job.run.prompt_tokens
            self._report_progress(job)
        else:
            assert job.request is not None
            self.engine.add(job.request)
        log.info("question %s: started (attempt %d, %d prompt tokens)", job.question.id, job.attempt, job.prompt_tokens)

    def _feed_tasks(self) -> None:
        """Hand the engine tasks' waiting requests (summary parts, chunks), one task at a time in turn, while all
        tasks together hold at most TASK_SHARE of the batch: the rest stays free for other people's questions,
        which then start at once instead of after every part of someone's long summary."""
        share = max(1, int(self.engine.max_batch_size * TASK_SHARE))
        runs = [job.run for job in self._jobs.values() if job.run is not None and job.running]
        held = sum(len(run.active_ids) for run in runs)
        while held < share:
            ready = [run for run in runs if run.waiting]
            if not ready:
                return
            for run in ready[: share - held]:
                for request in run.take(1):
                    self.engine.add(request)
                    held += 1

    async def _reject_malformed(self, delivery: Delivery) -> None:
        assert delivery.error is not None
        log.warning("entry %s is malformed (%s): dead-lettered", delivery.entry_id, delivery.error.reason)
        if not await self.bus.consumer.dead_letter(delivery, f"malformed: {delivery.error.reason}", self.name):
            return
        self.metrics.questions.labels("malformed").inc()
        question_id = delivery.question_id
        if question_id and delivery.error.oversized:
            message = "the question is larger than the queue contract allows"
            self._emit(delivery, question_id, ErrorEvent(code="too_long", message=message))
        elif question_id:
            self._emit(delivery, question_id, ErrorEvent(code="failed", message="malformed question entry"))

    # ------------------------------------------------------------------ generation

    async def _step(self) -> None:
        started = time.monotonic()
        try:
            updates = await asyncio.get_running_loop().run_in_executor(self._engine_thread, self.engine.step)
        except EngineOutOfMemory as exc:
            await self._on_out_of_memory(exc)
            return
        except Exception:
            log.exception("generation step failed")
            await self._on_step_failure()
            return
        elapsed = time.monotonic() - started
        self._observe_step(updates, elapsed)
        for update in updates:
            if update.error is None:
                self._on_update(update)
        self._feed_tasks()
        for update in updates:
            if update.error is not None:  # this question alone failed (a server's error): retried, then dead-lettered
                await self._fail_jobs([question_of(update.id)], f"generation failed ({update.error[:200]})")

    def _observe_step(self, updates: list[GenerationUpdate], elapsed_s: float) -> None:
        batch = self.engine.last_batch
        if batch:
            self.metrics.batch_size.observe(batch)
            self._peak_batch = max(self._peak_batch, batch)
            self.metrics.peak_batch.set(self._peak_batch)
            if batch > 1:
                log.debug("decoded a batch of %d", batch)
        tokens = self.engine.last_tokens
        if tokens:
            self.metrics.tokens.inc(tokens)
            self.metrics.tokens_per_s.set(tokens / elapsed_s if elapsed_s > 0 else 0.0)
        self.engine.max_batch_size = self._governor.stepped(self.engine.max_batch_size)

    def _on_update(self, update: GenerationUpdate) -> None:
        job = self._jobs.get(question_of(update.id))
        if job is None:
            return
        now = time.monotonic()
        if job.run is not None:
            job.run.on_update(update)  # a pass that finished starts the next, fed by `_feed_tasks`
            self._report_progress(job)
            job.latest = job.run.visible
        else:
            job.latest = update.text
        job.completion_tokens = job.run.completion_tokens if job.run else update.completion_tokens
        if job.first_text_at is None and job.latest:
            job.first_text_at = now
            self.metrics.first_token.observe(now - job.started_at)
        if not (job.run.finished if job.run else update.finished):
            return
        self._emit_delta(job)
        if job.run is not None:
            finish_reason: FinishReason = job.run.finish_reason
            prompt_tokens, completion_tokens = job.run.prompt_tokens, job.run.completion_tokens
            job.context_cut = job.run.context_cut
        else:
            assert update.finish_reason is not None
            finish_reason = update.finish_reason
            prompt_tokens, completion_tokens = update.prompt_tokens, update.completion_tokens
        done = Done(
            text=job.latest,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            queued_s=round(max(0.0, time.time() - job.question.created_at - (now - job.started_at)), 4),
            generate_s=round(now - job.started_at, 4),
            model=self.engine.model_id,
            template=str(self.settings.template.value),
            engine=self.settings.engine,
            context_cut=job.context_cut,
        )
        self._emit(job.delivery, job.question.id, done)
        self._outbox.ack(job.delivery)
        self._count_usage(job.question, prompt_tokens, completion_tokens)
        del self._jobs[job.question.id]
        self.metrics.generate.observe(now - job.started_at)
        self.metrics.questions.labels("done").inc()
        self.metrics.tasks.labels(job.question.task).inc()
        log.info(
            "question %s: done (%s, %d tokens, %.2fs)",
            job.question.id,
            finish_reason,
            completion_tokens,
            now - job.started_at,
        )

    def _count_usage(
        self, question: Question, prompt_tokens: int, completion_tokens: int, *, answered: bool = True
    ) -> None:
        """Add a question's tokens to today's usage, however its answer ended, and end its reservation of the
        asker's daily cap (both written with the next flush, in one transaction): per platform, user and channel,
        and the user's total over channels (what a daily token quota reads). `answered`: counted as a question."""
        day = time.strftime("%Y-%m-%d", time.gmtime())
        counts = self._usage.setdefault(day, Counter())
        self._settled.append((question.platform, question.user, question.id))
        channel = question.channel or question.target.get("channel", "")
        for where in dict.fromkeys((channel, "*")):
            for metric, count in (
                ("questions", int(answered)),
                ("prompt_tokens", prompt_tokens),
                ("completion_tokens", completion_tokens),
            ):
                counts[usage_field(question.platform, question.user, where, metric)] += count

    def _report_progress(self, job: Job) -> None:
        """A task in passes tells the asker how far its parts are (`요약 중… 3/7`)."""
        assert job.run is not None
        progress = job.run.progress
        if progress is not None and progress != job.progress:
            self._emit(job.delivery, job.question.id, Progress(done=progress[0], total=progress[1]))
        job.progress = progress

    def _flush_due_deltas(self) -> None:
        now = time.monotonic()
        for job in self._jobs.values():
            if job.running and now - job.last_flush >= self.settings.delta_interval_s:
                self._emit_delta(job)

    def _emit_delta(self, job: Job) -> None:
        if job.latest == job.published:
            return
        if not job.latest.startswith(job.published):  # the visible text must only grow; start over if not
            self._emit(job.delivery, job.question.id, Restart(attempt=job.attempt))
            job.published = ""
        self._emit(job.delivery, job.question.id, Delta(text=job.latest[len(job.published) :]))
        job.published = job.latest
        job.last_flush = time.monotonic()

    async def _on_out_of_memory(self, exc: EngineOutOfMemory) -> None:
        self.metrics.oom.inc()
        ids = _questions(self.engine.reset())
        failed = min(self.engine.max_batch_size, len(ids))  # the batch that ran out: at most the cap, in front
        restart_at = self._governor.out_of_memory(failed)
        if restart_at == 0:
            # A question that does not fit alone fails (another worker may have room); the rest start again.
            log.error("out of memory with a single question: %s", exc)
            await self._fail_jobs(ids[:1], "out of memory")
            ids = ids[1:]
        else:
            self.engine.max_batch_size = restart_at
            log.warning("out of memory at batch %d: restarting at batch %d", failed, restart_at)
        for question_id in ids:
            job = self._jobs.get(question_id)
            if job:
                self._start(job)

    async def _on_step_failure(self) -> None:
        ids = _questions(self.engine.reset())
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
            if job.run is not None:  # its other requests must not run on for nobody
                for request_id in job.request_ids:
                    self.engine.cancel(request_id)
            if job.attempt >= self.settings.max_deliveries:
                await self._dead_letter(job.delivery, f"{reason} on delivery {job.attempt}")
            else:
                log.warning("question %s: %s on delivery %d, released for retry", question_id, reason, job.attempt)
                await self.bus.consumer.release(self.name, [_held(job)])

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        question_id = delivery.question.id if delivery.question else None
        if not await self.bus.consumer.dead_letter(delivery, reason, self.name):
            log.warning("question %s: another worker owns it now; not dead-lettered here", question_id)
            return
        log.error("question %s: dead-lettered (%s)", question_id, reason)
        self.metrics.questions.labels("dead").inc()
        if delivery.question is not None:
            self._count_usage(delivery.question, 0, 0, answered=False)
        if question_id:
            self._emit(delivery, question_id, ErrorEvent(code="failed", message=reason))

    # ------------------------------------------------------------------ cancel, errors, Redis writes

    def _apply_cancels(self) -> None:
        requests, self._cancel_requests = self._cancel_requests, set()
        for question_id in requests:
            job = self._jobs.pop(question_id, None)
            if job is None:
                continue
            if job.running:
                for request_id in job.request_ids:
                    self.engine.cancel(request_id)
                self._emit_delta(job)
            with contextlib.suppress(ValueError):
                self._solo.remove(job)
            prompt_tokens = (job.run.prompt_tokens if job.run else job.prompt_tokens) if job.running else 0
            self._end_with_error(
                job.delivery, "cancelled", "cancelled by the user", prompt_tokens, job.completion_tokens
            )

    def _end_with_error(
        self, delivery: Delivery, code: ErrorCode, message: str, prompt_tokens: int = 0, completion_tokens: int = 0
    ) -> None:
        """End a question with an error event; what it cost is counted (a cancelled answer's tokens so far)."""
        assert delivery.question is not None
        log.info("question %s: %s", delivery.question.id, code)
        self._count_usage(delivery.question, prompt_tokens, completion_tokens, answered=completion_tokens > 0)
        self._emit(delivery, delivery.question.id, ErrorEvent(code=code, message=message))
        self._outbox.ack(delivery)
        self.metrics.questions.labels(code).inc()

    def _emit(self, delivery: Delivery, question_id: str, event: AnswerEvent) -> None:
        self._outbox.emit(delivery, question_id, event)

    async def _flush(self) -> None:
        """Publish pending events and ack finished entries, fenced by ownership; both stay queued if Redis is down."""
        if self._outbox:
            self._lost |= await self._outbox.flush()
            self._redis_recovered()
            self._drop_lost()
        usage, self._usage = self._usage, {}
        settled, self._settled = self._settled, []
        try:
            while usage:
                day = next(iter(usage))
                await self.bus.ledger.settle(day, dict(usage[day]), self.settings.usage_ttl_days * 86400, settled)
                del usage[day]
                settled = []  # ended with the first day's counts
        except BusError:  # down or refusing writes: what was not written waits for the next flush
            for day, counts in usage.items():
                self._usage.setdefault(day, Counter()).update(counts)
            self._settled = settled + self._settled

    def _drop_lost(self) -> None:
        """Forget questions another worker took over while this one stalled: its writes were dropped, not merged."""
        lost, self._lost = self._lost, set()
        for entry_id in lost:
            job = next((j for j in self._jobs.values() if j.delivery.entry_id == entry_id), None)
            log.warning(
                "entry %s: another worker owns it now (this worker stalled past RECLAIM_IDLE_S?); dropped", entry_id
            )
            self.metrics.questions.labels("taken_over").inc()
            if job is None:
                continue
            del self._jobs[job.question.id]
            if job.running:
                for request_id in job.request_ids:
                    self.engine.cancel(request_id)
            with contextlib.suppress(ValueError):
                self._solo.remove(job)

    # ------------------------------------------------------------------ background tasks

    async def _every(self, interval_s: float, tick: Any) -> None:
        while not cancel_requested():
            try:
                await tick()
            except BusDown as exc:
                log.debug("background %s: redis %s", tick.__name__, trouble(exc))
            except WritesRefused as exc:
                if self._redis_problem is None:
                    self._redis_problem = trouble(exc)
                    log.warning("redis %s (seen by %s)", self._redis_problem, tick.__name__)
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
        return len(self._jobs), self._draining

    async def _heartbeat(self) -> None:
        lost = await self.bus.consumer.heartbeat(self.name, self._holding())
        self._lost |= lost & {write.entry_id for write in self._holding()}  # not those finished while it ran
        self.metrics.inflight.set(len(self._jobs))
        self.metrics.queue_depth.set(await self.bus.queue.depth())
        await self._report_status()
        self._redis_recovered()  # a write went through
        # Workers silent this long with nothing pending are gone (their questions were reclaimed): forget them.
        silent_s = max(
            REAP_AFTER_HEARTBEATS * self.settings.heartbeat_interval_s,
            REAP_AFTER_RECLAIM_IDLES * self.settings.reclaim_idle_s,
        )
        for name in await self.bus.workers.reap(self.name, int(silent_s * 1000)):
            log.info("worker %s is gone: removed from the group and the worker list", name)

    async def _report_status(self) -> None:
        roster = self._roster()
        status = WorkerStatus(
            name=self.name,
            model=self.settings.served_name,
            active=len(self._jobs),
            slots=self.engine.max_batch_size,
            seen_at=time.time(),
            draining=self._draining,
            heartbeat_s=self.settings.heartbeat_interval_s,
            tasks=dict(Counter(job.question.task for job in self._jobs.values())),
        )
        await self.bus.workers.report(status)
        self._reported = roster

    async def _reclaim(self) -> None:
        if self._draining or len(self._solo) >= self.engine.max_batch_size:
            return
        count = max(1, self.engine.max_batch_size - len(self._jobs))
        min_idle_ms = int(self.settings.reclaim_idle_s * 1000)
        claimed = await self.bus.consumer.reclaim(self.name, min_idle_ms, count)
        if claimed:
            log.info("reclaimed %d questions from dead or departed workers", len(claimed))
            self.metrics.reclaimed.inc(len(claimed))
            self._inbox.extend(claimed)

    def _holding(self) -> list[Write]:
        """Every delivery this worker owns: questions it answers, answers whose last writes wait in the outbox
        (Redis refusing writes: a finished answer must not look abandoned and be answered again), and reclaimed
        entries not yet admitted, and deliveries being accepted (a task being planned)."""
        held = self._outbox.held()
        waiting = [*self._inbox, *self._accepting.values()]
        held += [Write(d.entry_id, d.deliveries, d.question.id) for d in waiting if d.question is not None]
        held += [_held(job) for job in list(self._jobs.values())]
        return list({write.entry_id: write for write in held}.values())  # one per entry; a running job's wins

    async def _poll_cancels(self) -> None:
        if self._jobs:
            self._cancel_requests |= await self.bus.consumer.cancelled(list(self._jobs))

    async def _until_redis(self, call: Any) -> None:
        """Retry `call` until Redis takes it. SIGTERM/SIGINT stops the wait at once, even while a connection
        attempt hangs (a firewall dropping packets, a host that accepts and never answers)."""
        while not self._draining:
            attempt = asyncio.ensure_future(call())
            stopped = asyncio.ensure_future(self._drain_requested.wait())
            await asyncio.wait({attempt, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not attempt.done():
                log.info("stopped while waiting for redis")
                attempt.cancel()
                await asyncio.wait({attempt}, timeout=1)
                return
            try:
                attempt.result()
                self._redis_recovered()
                return
            except REDIS_TROUBLE as exc:
                self._say_redis_trouble(trouble(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain_requested.wait(), self._redis_retry_s)
            self._redis_retry_s = min(self._redis_retry_s * 2, REDIS_RETRY_MAX_S)


def _held(job: Job) -> Write:
    """The fencing identity of a question this worker holds."""
    return Write(job.delivery.entry_id, job.delivery.deliveries, job.question.id)


def _questions(request_ids: list[str]) -> list[str]:
    """The questions of engine requests, in order, each once (a task run has several requests)."""
    return list(dict.fromkeys(question_of(r) for r in request_ids))
