"""The shared relay of every chat adapter: the way a question goes in.

An adapter turns a platform event into an `Asked` question and an origin (where it was asked,
typed by the adapter) and calls `Relay.ask`. The relay checks the limits (`bot.limits`, `bot.quota`;
refusing through the platform's `Surface`), has the surface post a placeholder, records the answer as
in flight (with the placeholder's typed `Target`) and enqueues the question; its answer is posted by
`bot.poster`. Persona admin (`bot.personas`) and votes (`bot.feedback`) hang off the relay for the adapters
to reach, each its own part.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from bot.feedback import Feedback
from bot.limits import check_question, unavailable, work_units
from bot.personas import Personas
from bot.poster import AnswerPoster
from bot.quota import Quota
from bot.settings import ClientSettings
from bot.surface import Asked, CannotPost, Sessions, Surface, Target
from bot.texts import text, waiting_line
from chatbus import (
    Bus,
    BusError,
    InflightRecord,
    Question,
    QueueFull,
    Task,
    Turn,
)
from chatbus.ledger import DEFAULT_NEW_TOKENS
from chatbus.messages import new_question_id

log = logging.getLogger(__name__)

OriginVar = TypeVar("OriginVar")
TargetVar = TypeVar("TargetVar", bound=Target)


class Relay(Generic[OriginVar, TargetVar]):
    """Questions in, answers out, for one platform."""

    def __init__(self, bus: Bus, surface: Surface[OriginVar, TargetVar], settings: ClientSettings) -> None:
        self.bus = bus
        self.quota = Quota(bus, surface.platform)
        self.surface = surface
        self.settings = settings
        self.platform = surface.platform
        self.personas = Personas(bus, surface.platform, settings)  # `/kullm-설정 페르소나 …`, and each question's
        self.feedback = Feedback(bus, surface.platform, settings)  # 👍/👎: what votes are filed under, and votes
        self.poster: AnswerPoster[TargetVar] = AnswerPoster(bus, surface, settings, self.feedback)

    async def ask(self, origin: OriginVar, asked: Asked, *, admitted: bool = False) -> str | None:
        """Refuse the question, or post its placeholder and enqueue it; returns its id when it was enqueued.

        `admitted`: its asker's limits were counted already (`refusal`, before work done for it, such as a search of
        the workspace's knowledge): only its size is checked again, now with its 맥락."""
        if admitted:
            refusal = check_question(self.settings, asked.question, asked.context)
        else:
            refusal = await self.refusal(asked.user, asked.question, asked.context, asked.task)
        if refusal:
            await self.surface.refuse(origin, refusal)
            return None
        question_id = new_question_id()
        try:
            ahead = await self.ahead()
            content = waiting_line(ahead, self.settings.bot_language)
            target = await self.surface.post_placeholder(origin, asked, content, question_id, ahead=ahead)
        except CannotPost as exc:
            await self.surface.refuse(origin, exc.notice)
            return None
        history = await self.history(target.conversation) if asked.continues else []
        instructions = await self.personas.text_for(asked.channel)
        return await self.submit(target, asked, history=history, instructions=instructions, question_id=question_id)

    # ------------------------------------------------------------------ asking

    async def refuse(self, origin: OriginVar, notice: str) -> None:
        """Tell the asker why their question is not taken, where the platform shows refusals (Discord: a DM)."""
        await self.surface.refuse(origin, notice)

    async def first_delivery(self, event_id: str) -> bool:
        """True the first time a platform event arrives; a redelivery is answered once.

        With Redis unreachable nothing can be remembered: the event is handled, and the refusal
        that follows tells the user the service is unavailable.
        """
        try:
            return await self.bus.queue.claim_event(self.platform, event_id)
        except BusError:
            return True

    async def refusal(self, user: str, question: str, context: str = "", task: Task = "ask") -> str | None:
        """Why this question must not be enqueued, in the user's language, or None."""
        refused = check_question(self.settings, question, context)
        if refused:
            return refused
        try:
            return await self._limit_refusal(user, question + context, work_units(task, context))
        except BusError as exc:
            return unavailable(exc, self.platform, self.settings.bot_language)

    async def _limit_refusal(self, user: str, text_asked: str, units: int = 1) -> str | None:
        """The user's limits: a task counts as the questions its parts cost (`work_units`)."""
        limit = self.settings.user_questions_per_minute
        if await self.quota.over_rate(user, limit, units) is not None:
            return text("rate_limited", self.settings.bot_language, limit=limit)
        oldest = time.time() - self.poster.record_max_age_s  # an older record is dead: it holds no slot
        active = sum(
            1 for r in await self.bus.inflight.tracked(self.platform) if r.user == user and r.created_at > oldest
        )
        if active >= self.settings.user_concurrent_questions:
            return text("concurrent", self.settings.bot_language, limit=self.settings.user_concurrent_questions)
        daily = self.settings.user_tokens_per_day
        if daily and await self.quota.day_used_up(user, daily, text_asked):
            return text("tokens_per_day", self.settings.bot_language, limit=daily)
        depth = await self.bus.queue.depth()
        if depth >= self.settings.max_queue:
            return text("overloaded", self.settings.bot_language, depth=depth)
        return None

    async def ahead(self) -> int:
        """How many questions wait before a new one (its place in line on the placeholder)."""
        try:
            return await self.bus.queue.depth()
        except BusError:
            return 0  # enqueueing will fail too and say so on this placeholder

    async def submit(
        self,
        target: TargetVar,
        asked: Asked,
        *,
        history: Sequence[Turn] = (),
        instructions: str = "",
        question_id: str | None = None,
    ) -> str:
        """Enqueue a question whose placeholder is already posted at `target`; returns its id."""
        item = Question.new(
            self.platform,
            asked.question.strip(),
            ttl_s=self.settings.question_ttl_s,
            context=asked.context.strip(),
            history=tuple(history),
            target=target.to_fields(),
            user=asked.user,
            question_id=question_id,
            instructions=instructions,
            task=asked.task,
            channel=asked.channel,
        )
        record = InflightRecord(
            question_id=item.id,
            platform=self.platform,
            target=target.to_fields(),
            user=asked.user,
            thread=target.conversation,
            question=item.question,
            language=self.settings.bot_language,
            created_at=item.created_at,
        )
        try:
            reserved = await self._reserve(item)
            if reserved is None:
                notice = text("tokens_per_day", self.settings.bot_language, limit=self.settings.user_tokens_per_day)
            else:
                item = reserved
                await self.bus.inflight.track(record, ttl_s=int(self.poster.record_max_age_s))
                await self.bus.queue.enqueue(item, self.settings.max_queue)
        except QueueFull as exc:
            notice = text("overloaded", self.settings.bot_language, depth=exc.depth)
        except BusError as exc:
            log.warning("%s question %s: not queued", self.platform, item.id)
            notice = unavailable(exc, self.platform, self.settings.bot_language)
        else:
            if reserved is not None:
                log.info("%s question %s queued", self.platform, item.id)
                self.poster.spawn(record)
                return item.id
        await self.surface.edit(target, notice, final=True)
        if isinstance(self.surface, Sessions):
            await self.surface.ended(target, "failed")
        with contextlib.suppress(BusError):
            await self.bus.inflight.untrack(self.platform, item.id)
            await self.quota.release(item)
        return item.id

    async def _reserve(self, item: Question) -> Question | None:
        """With USER_TOKENS_PER_DAY: the question holding its most tokens of the user's day (`bot.quota`); None when
        the day's tokens are used or held."""
        daily = self.settings.user_tokens_per_day
        if not daily:
            return item
        deadline = item.expires_at + self.settings.answer_stall_timeout_s
        return await self.quota.reserve(item, daily, DEFAULT_NEW_TOKENS, deadline)

    async def history(self, thread: str) -> list[Turn]:
        """Past turns of a conversation this relay answered (none while Redis is unreachable)."""
        try:
            return await self.bus.threads.history(self.platform, thread)
        except BusError:
            return []

    async def record_for(self, question_id: str) -> InflightRecord | None:
        """The in-flight record of a question whose answer has not ended: None once it has, even while the
        record itself lingers for the last edits (a stop click then is told the answer is finished)."""
        record = next((r for r in await self.bus.inflight.tracked(self.platform) if r.question_id == question_id), None)
        if record is None or await self.bus.consumer.answered([question_id]):
            return None
        return record

    async def record_at(self, shows: Callable[[TargetVar], bool]) -> InflightRecord | None:
        """The in-flight record whose placeholder `shows` picks."""
        for record in await self.bus.inflight.tracked(self.platform):
            with contextlib.suppress(KeyError):
                if shows(self.surface.target(record.target)):
                    return record
        return None

    # ------------------------------------------------------------------ posting (`bot.poster`)

    def start(self) -> None:
        """Resume lapsed answers now and every half lease, until `close`."""
        self.poster.start()

    async def close(self) -> None:
        """Stop resuming and posting answers (their leases lapse and another process resumes them)."""
        await self.poster.close()

    async def resume(self) -> int:
        """Post every in-flight answer no live process is posting; returns how many were taken."""
        return await self.poster.resume()
