"""What a worker holds: the questions it answers (`Job`), the ones waiting to run alone, deliveries not yet
admitted, and what it owes Redis about them (the outbox of events and acks, the usage to settle).

Every part of the worker (admission, answering, the step policy, the background upkeep) works on one `Hand`.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from dataclasses import dataclass

from chatbus import AnswerEvent, Bus, Delivery, ErrorCode, ErrorEvent, Question, TokenLogprob, Write
from inference.engine import Engine, GenerationRequest
from inference.metrics import WorkerMetrics
from inference.tasks import TaskRun, question_of
from inference.worker.outbox import Outbox
from inference.worker.usage import UsageBook

log = logging.getLogger(__name__)


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
    # With the question's `logprobs`: those of the tokens in `latest`, and how many of them were published.
    logprobs: tuple[TokenLogprob, ...] = ()
    logprobs_published: int = 0
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

    def held(self) -> Write:
        """The fencing identity of this delivery."""
        return Write(self.delivery.entry_id, self.delivery.deliveries, self.question.id)


def questions_of(request_ids: list[str]) -> list[str]:
    """The questions of engine requests, in order, each once (a task run has several requests)."""
    return list(dict.fromkeys(question_of(r) for r in request_ids))


class Hand:
    """The questions one worker holds and its writes not yet made; see the module docstring."""

    def __init__(self, bus: Bus, name: str, metrics: WorkerMetrics) -> None:
        self.bus, self.name, self.metrics = bus, name, metrics
        self.jobs: dict[str, Job] = {}
        self.solo: deque[Job] = deque()  # retried or taken over: each runs alone, in turn
        self.inbox: list[Delivery] = []  # reclaimed deliveries, admitted by the loop's next pass
        # Deliveries being accepted: a long task is planned (its text tokenised) on a thread for a second or more,
        # and its entry must stay fresh meanwhile or another worker reclaims it.
        self.accepting: dict[str, Delivery] = {}
        self.cancel_requests: set[str] = set()  # questions whose asker asked to stop, for the loop to apply
        self.lost: set[str] = set()  # entries the heartbeat or a flush found owned by another worker now
        self.outbox = Outbox(bus, name)
        self.usage = UsageBook()

    def emit(self, delivery: Delivery, question_id: str, event: AnswerEvent) -> None:
        self.outbox.emit(delivery, question_id, event)

    def end_with_error(
        self, delivery: Delivery, code: ErrorCode, message: str, prompt_tokens: int = 0, completion_tokens: int = 0
    ) -> None:
        """End a question with an error event; what it cost is counted (a cancelled answer's tokens so far)."""
        assert delivery.question is not None
        log.info("question %s: %s", delivery.question.id, code)
        self.usage.count(delivery.question, prompt_tokens, completion_tokens, answered=completion_tokens > 0)
        self.emit(delivery, delivery.question.id, ErrorEvent(code=code, message=message))
        self.outbox.ack(delivery)
        self.metrics.questions.labels(code).inc()
        if code == "cancelled":  # stopped by its asker: vLLM's aborted request
            self.metrics.vllm.finished_early("abort")

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a question to the dead stream and tell its asker, unless another worker owns it now."""
        question_id = delivery.question.id if delivery.question else None
        if not await self.bus.consumer.dead_letter(delivery, reason, self.name):
            log.warning("question %s: another worker owns it now; not dead-lettered here", question_id)
            return
        log.error("question %s: dead-lettered (%s)", question_id, reason)
        self.metrics.questions.labels("dead").inc()
        if delivery.question is not None:
            self.usage.count(delivery.question, 0, 0, answered=False)
        if question_id:
            self.emit(delivery, question_id, ErrorEvent(code="failed", message=reason))

    def drop(self, job: Job, engine: Engine) -> None:
        """Stop holding a job: its running requests cancelled in the engine, out of the line to run alone."""
        self.jobs.pop(job.question.id, None)
        if job.running:
            for request_id in job.request_ids:
                engine.cancel(request_id)
        with contextlib.suppress(ValueError):
            self.solo.remove(job)

    def holding(self) -> list[Write]:
        """Every delivery this worker owns: questions it answers, answers whose last writes wait in the outbox
        (Redis refusing writes: a finished answer must not look abandoned and be answered again), and reclaimed
        entries not yet admitted, and deliveries being accepted (a task being planned)."""
        held = self.outbox.held()
        waiting = [*self.inbox, *self.accepting.values()]
        held += [Write(d.entry_id, d.deliveries, d.question.id) for d in waiting if d.question is not None]
        held += [job.held() for job in list(self.jobs.values())]
        return list({write.entry_id: write for write in held}.values())  # one per entry; a running job's wins
