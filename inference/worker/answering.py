"""A job's life on the engine: started (alone when retried or taken over), its text streamed as deltas a few times
a second, its task's passes fed in turn, finished with `done` and its usage counted — or stopped by its asker, or
dropped when another worker took it over."""

from __future__ import annotations

import logging
import time

from chatbus import Delta, Done, Progress, Restart, Started
from chatbus.messages import FinishReason
from inference.engine import Engine, GenerationUpdate
from inference.metrics import WorkerMetrics
from inference.settings import WorkerSettings
from inference.tasks import question_of
from inference.worker.hand import Hand, Job

log = logging.getLogger(__name__)
# The share of the batch that tasks' requests (summary parts, translated chunks) may hold together.
TASK_SHARE = 0.5


class Answering:
    """Starts, streams, finishes and stops jobs on one engine; see the module docstring."""

    def __init__(self, engine: Engine, hand: Hand, settings: WorkerSettings, metrics: WorkerMetrics) -> None:
        self.engine, self.hand, self.settings, self.metrics = engine, hand, settings, metrics

    def hold(self, job: Job) -> None:
        """Take an admitted job: started now, or queued to run alone (a retry, or one taken over)."""
        self.hand.jobs[job.question.id] = job
        if job.delivery.deliveries > 1:
            job.solo = True
            self.hand.solo.append(job)
        else:
            self.start(job)

    def start(self, job: Job) -> None:
        if job.attempt > 1 or job.started:
            self.hand.emit(job.delivery, job.question.id, Restart(attempt=job.attempt))
        started = Started(worker=self.hand.name, attempt=job.attempt, entry=job.delivery.entry_id)
        self.hand.emit(job.delivery, job.question.id, started)
        job.running = job.started = True
        job.published = job.latest = ""
        job.logprobs, job.logprobs_published = (), 0
        job.started_at = time.monotonic()
        job.first_text_at = None
        queued_s = max(0.0, time.time() - job.question.created_at)
        self.metrics.queue_wait.observe(queued_s)
        self.metrics.vllm.started(queued_s)
        if job.run is not None:
            job.progress = None
            job.run.start()
            self.feed_tasks()
            job.prompt_tokens = job.run.prompt_tokens
            self._report_progress(job)
        else:
            assert job.request is not None
            self.engine.add(job.request)
        log.info("question %s: started (attempt %d, %d prompt tokens)", job.question.id, job.attempt, job.prompt_tokens)

    def feed_tasks(self) -> None:
        """Hand the engine tasks' waiting requests (summary parts, chunks), one task at a time in turn, while all
        tasks together hold at most TASK_SHARE of the batch: the rest stays free for other people's questions,
        which then start at once instead of after every part of someone's long summary."""
        share = max(1, int(self.engine.max_batch_size * TASK_SHARE))
        runs = [job.run for job in self.hand.jobs.values() if job.run is not None and job.running]
        held = sum(len(run.active_ids) for run in runs)
        while held < share:
            ready = [run for run in runs if run.waiting]
            if not ready:
                return
            for run in ready[: share - held]:
                for request in run.take(1):
                    self.engine.add(request)
                    held += 1

    def on_update(self, update: GenerationUpdate) -> None:
        job = self.hand.jobs.get(question_of(update.id))
        if job is None:
            return
        now = time.monotonic()
        if job.run is not None:
            job.run.on_update(update)  # a pass that finished starts the next, fed by `feed_tasks`
            self._report_progress(job)
            job.latest = job.run.visible
        else:
            job.latest, job.logprobs = update.text, update.logprobs
        job.completion_tokens = job.run.completion_tokens if job.run else update.completion_tokens
        if job.first_text_at is None and job.latest:
            job.first_text_at = now
            self.metrics.first_token.observe(now - job.started_at)
            self.metrics.vllm.first_token(max(0.0, time.time() - job.question.created_at))  # from its arrival
        if not (job.run.finished if job.run else update.finished):
            return
        self.emit_delta(job)
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
        self.hand.emit(job.delivery, job.question.id, done)
        self.hand.outbox.ack(job.delivery)
        self.hand.usage.count(job.question, prompt_tokens, completion_tokens)
        del self.hand.jobs[job.question.id]
        self.metrics.generate.observe(now - job.started_at)
        self.metrics.vllm.finished(
            finish_reason,
            e2e_s=max(0.0, time.time() - job.question.created_at),
            running_s=now - job.started_at,
            prefill_s=(job.first_text_at or now) - job.started_at,
            prompt_tokens=prompt_tokens,
            generation_tokens=completion_tokens,
        )
        self.metrics.questions.labels("done").inc()
        self.metrics.tasks.labels(job.question.task).inc()
        log.info(
            "question %s: done (%s, %d tokens, %.2fs)",
            job.question.id,
            finish_reason,
            completion_tokens,
            now - job.started_at,
        )

    def _report_progress(self, job: Job) -> None:
        """A task in passes tells the asker how far its parts are (`요약 중… 3/7`)."""
        assert job.run is not None
        progress = job.run.progress
        if progress is not None and progress != job.progress:
            self.hand.emit(job.delivery, job.question.id, Progress(done=progress[0], total=progress[1]))
        job.progress = progress

    def flush_due_deltas(self) -> None:
        now = time.monotonic()
        for job in self.hand.jobs.values():
            if job.running and now - job.last_flush >= self.settings.delta_interval_s:
                self.emit_delta(job)

    def emit_delta(self, job: Job) -> None:
        if job.latest == job.published and len(job.logprobs) == job.logprobs_published:
            return
        if not job.latest.startswith(job.published):  # the visible text must only grow; start over if not
            self.hand.emit(job.delivery, job.question.id, Restart(attempt=job.attempt))
            job.published, job.logprobs_published = "", 0
        new_text, new_logprobs = job.latest[len(job.published) :], job.logprobs[job.logprobs_published :]
        self.hand.emit(job.delivery, job.question.id, Delta(text=new_text, logprobs=new_logprobs))
        job.published, job.logprobs_published = job.latest, len(job.logprobs)
        job.last_flush = time.monotonic()

    def apply_cancels(self) -> None:
        """Stop the answers whose askers asked to: the text so far goes out, then `cancelled`."""
        requests, self.hand.cancel_requests = self.hand.cancel_requests, set()
        for question_id in requests:
            job = self.hand.jobs.get(question_id)
            if job is None:
                continue
            self.hand.drop(job, self.engine)
            if job.running:
                self.emit_delta(job)
            prompt_tokens = (job.run.prompt_tokens if job.run else job.prompt_tokens) if job.running else 0
            self.hand.end_with_error(
                job.delivery, "cancelled", "cancelled by the user", prompt_tokens, job.completion_tokens
            )

    def drop_lost(self) -> None:
        """Forget questions another worker took over while this one stalled: its writes were dropped, not merged."""
        lost, self.hand.lost = self.hand.lost, set()
        for entry_id in lost:
            job = next((j for j in self.hand.jobs.values() if j.delivery.entry_id == entry_id), None)
            log.warning(
                "entry %s: another worker owns it now (this worker stalled past RECLAIM_IDLE_S?); dropped", entry_id
            )
            self.metrics.questions.labels("taken_over").inc()
            if job is not None:
                self.hand.drop(job, self.engine)
