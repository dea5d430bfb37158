"""Admission: deliveries in, jobs out. A delivery becomes a job, or is answered at once (expired, cancelled, too
long for the model), or is dropped as a copy of a question answered or in flight, or is dead-lettered
(malformed, or delivered `max_deliveries` times without an answer)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from chatbus import Bus, Delivery, ErrorEvent, Question
from chatbus.consumer import ANSWER_TTL_S
from inference.engine import GenerationRequest
from inference.errors import PromptTooLong
from inference.metrics import WorkerMetrics
from inference.prompt import PromptBuilder
from inference.settings import WorkerSettings
from inference.tasks import TaskRun
from inference.worker.hand import Hand, Job

log = logging.getLogger(__name__)


class Admission:
    """Turns deliveries into jobs handed to `hold`; see the module docstring."""

    def __init__(
        self,
        bus: Bus,
        hand: Hand,
        prompts: PromptBuilder,
        settings: WorkerSettings,
        metrics: WorkerMetrics,
        hold: Callable[[Job], None],
        *,
        logprobs: bool = False,
    ) -> None:
        self.bus, self.hand, self.prompts = bus, hand, prompts
        self.settings, self.metrics = settings, metrics
        self.hold = hold
        self.logprobs = logprobs  # whether the engine reports log-probabilities

    async def accept_all(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        self.hand.accepting.update((d.entry_id, d) for d in deliveries)
        try:
            await self._accept_each(deliveries)
        finally:
            for delivery in deliveries:
                self.hand.accepting.pop(delivery.entry_id, None)

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
                self.hand.outbox.ack(delivery)  # acked with no event: the answer the asker follows is the original's
                continue
            await self._accept(delivery, cancelled)

    def _duplicate(self, delivery: Delivery, claimed: bool, answered: bool) -> bool:
        """A second entry for a question already answered, or in flight from another entry, here or elsewhere."""
        assert delivery.question is not None
        question_id, entry_id = delivery.question.id, delivery.entry_id
        held = self.hand.jobs.get(question_id)
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
        if question.id in self.hand.jobs:
            return
        if delivery.deliveries > self.settings.max_deliveries:
            await self.hand.dead_letter(delivery, f"delivered {delivery.deliveries} times without an answer")
            return
        if time.time() > question.expires_at:
            self.hand.end_with_error(delivery, "expired", "the question waited past its expiry")
            return
        if question.id in cancelled:
            self.hand.end_with_error(delivery, "cancelled", "cancelled before generation")
            return
        if question.logprobs is not None and not self.logprobs:
            message = f"this worker's engine (ENGINE={self.settings.engine}) does not report log-probabilities"
            self.hand.end_with_error(delivery, "unsupported", message)
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
            self.hand.end_with_error(delivery, "too_long", str(exc))
            return
        request = GenerationRequest(
            question.id,
            prompt.text,
            max_new_tokens,
            temperature=question.temperature,
            top_p=question.top_p,
            logprobs=question.logprobs,
            copies=bool(question.context.strip()),
        )
        self.hold(Job(delivery, question, request, prompt.tokens, context_cut=prompt.context_cut))

    async def _accept_task(self, delivery: Delivery, question: Question, max_new_tokens: int) -> None:
        """A summary, translation or proofreading: planned into passes (splitting a long text tokenises it)."""
        try:
            run = await asyncio.to_thread(TaskRun, question, self.prompts, max_new_tokens)
        except PromptTooLong as exc:
            self.hand.end_with_error(delivery, "too_long", str(exc))
            return
        except ValueError as exc:
            self.hand.end_with_error(delivery, "failed", str(exc))
            return
        log.info("question %s: %s in %d part(s)", question.id, question.task, run.parts)
        self.hold(Job(delivery, question, None, 0, run=run))

    async def _reject_malformed(self, delivery: Delivery) -> None:
        assert delivery.error is not None
        log.warning("entry %s is malformed (%s): dead-lettered", delivery.entry_id, delivery.error.reason)
        if not await self.bus.consumer.dead_letter(delivery, f"malformed: {delivery.error.reason}", self.hand.name):
            return
        self.metrics.questions.labels("malformed").inc()
        question_id = delivery.question_id
        if question_id and delivery.error.oversized:
            message = "the question is larger than the queue contract allows"
            self.hand.emit(delivery, question_id, ErrorEvent(code="too_long", message=message))
        elif question_id:
            self.hand.emit(delivery, question_id, ErrorEvent(code="failed", message="malformed question entry"))
