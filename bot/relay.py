"""The shared relay of every chat adapter: limits, placeholder, enqueue, and the answer streamed back.

An adapter turns a platform event into a question and gives the relay a `Surface` — how
that platform posts and edits messages. The relay checks the limits, records the answer as
in flight (with the placeholder's ids), enqueues the question, follows the answer stream
while it holds the question's lease, edits the placeholder at most once per
`edit_interval_s`, splits the final answer at the platform's limit, and forgets the record.
An adapter restarted mid-answer resumes every record whose lease lapsed, editing the same
placeholder: nothing is lost and nothing is posted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from redis.exceptions import RedisError

from bot.formatting import split_message
from bot.settings import ClientSettings
from bot.terminal import check_question
from bot.texts import error_text, text
from chatbus import (
    AnswerTimeout,
    Bus,
    Delta,
    Done,
    ErrorEvent,
    InflightRecord,
    Question,
    QueueFull,
    Restart,
    Turn,
    write_refusal,
)

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60
# The longest an answer may take after its question expired: in-flight records older than
# QUESTION_TTL_S plus this are given up (and the whole hash expires if a platform goes quiet).
MAX_ANSWER_S = 600
STREAMING_MARK = " ▌"


class PlaceholderGone(Exception):
    """The platform says the placeholder is gone: deleted, or its channel deleted or closed to the bot."""


class Surface(Protocol):
    """How one platform shows an answer: a placeholder it edits and messages it adds after it."""

    platform: str
    max_chars: int
    edit_interval_s: float

    async def edit(self, target: dict[str, str], content: str, *, final: bool) -> None:
        """Replace the placeholder's text; `final` removes the stop control. Raises `PlaceholderGone`."""
        ...

    async def post_more(self, target: dict[str, str], content: str) -> None:
        """Post a message after the placeholder (in its thread). Raises `PlaceholderGone` if that is gone too."""
        ...

    def working(self, target: dict[str, str]) -> AbstractAsyncContextManager[None]:
        """Shown while the answer is generated (a typing indicator, or nothing)."""
        ...


class Relay:
    """Questions in, answers out, for one platform."""

    def __init__(self, bus: Bus, surface: Surface, settings: ClientSettings) -> None:
        self.bus = bus
        self.surface = surface
        self.settings = settings
        self.platform = surface.platform
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._delivering: dict[str, asyncio.Task[None]] = {}

    @property
    def language(self) -> str:
        return self.settings.bot_language

    # ------------------------------------------------------------------ asking

    async def first_delivery(self, event_id: str) -> bool:
        """True the first time a platform event arrives; a redelivery is answered once.

        With Redis unreachable nothing can be remembered: the event is handled, and the refusal
        that follows tells the user the service is unavailable.
        """
        try:
            return await self.bus.claim_event(self.platform, event_id)
        except RedisError:
            return True

    async def refusal(self, user: str, question: str, context: str = "") -> str | None:
        """Why this question must not be enqueued, in the user's language, or None."""
        refused = check_question(self.settings, question, context)
        if refused:
            return refused
        try:
            return await self._limit_refusal(user)
        except RedisError as exc:
            log.warning("%s: Redis is unreachable or refuses writes (%s): question refused", self.platform, exc)
            return self._unavailable(exc)

    def _unavailable(self, exc: RedisError) -> str:
        """The "cannot take questions now" notice, naming a write refusal (OOM, READONLY…) when that is the cause."""
        refusal = write_refusal(exc)
        if refusal:
            return text("redis_refuses", self.settings.bot_language, reason=refusal)
        return text("unavailable", self.settings.bot_language)

    async def _limit_refusal(self, user: str) -> str | None:
        limit = self.settings.user_questions_per_minute
        if await self.bus.count_request(self.platform, user, RATE_WINDOW_S) > limit:
            return text("rate_limited", self.settings.bot_language, limit=limit)
        oldest = time.time() - self.record_max_age_s  # an older record is dead: it holds no slot
        active = sum(1 for r in await self.bus.tracked(self.platform) if r.user == user and r.created_at > oldest)
        if active >= self.settings.user_concurrent_questions:
            return text("concurrent", self.settings.bot_language, limit=self.settings.user_concurrent_questions)
        depth = await self.bus.queue_depth()
        if depth >= self.settings.max_queue:
            return text("overloaded", self.settings.bot_language, depth=depth)
        return None

    async def placeholder(self) -> str:
        """The placeholder's first text, with the current queue position."""
        try:
            ahead = await self.bus.queue_depth()
        except RedisError:
            ahead = 0  # enqueueing will fail too and say so on this placeholder
        return text("thinking", self.settings.bot_language, ahead=ahead)

    async def submit(
        self,
        target: dict[str, str],
        *,
        user: str,
        question: str,
        context: str = "",
        thread: str | None = None,
        history: Sequence[Turn] = (),
        question_id: str | None = None,
    ) -> str:
        """Enqueue a question whose placeholder is already posted at `target`; returns its id."""
        item = Question.new(
            self.platform,
            question.strip(),
            ttl_s=self.settings.question_ttl_s,
            context=context.strip(),
            history=tuple(history),
            target=target,
            user=user,
            question_id=question_id,
        )
        record = InflightRecord(
            question_id=item.id,
            platform=self.platform,
            target=target,
            user=user,
            thread=thread,
            question=item.question,
            language=self.settings.bot_language,
            created_at=item.created_at,
        )
        try:
            await self.bus.track(record, ttl_s=int(self.record_max_age_s))
            await self.bus.enqueue(item, self.settings.max_queue)
        except QueueFull as exc:
            notice = text("overloaded", self.settings.bot_language, depth=exc.depth)
        except RedisError as exc:
            log.warning("%s question %s: Redis is unreachable or refuses writes, not queued", self.platform, item.id)
            notice = self._unavailable(exc)
        else:
            log.info("%s question %s queued", self.platform, item.id)
            self._spawn(record)
            return item.id
        await self.surface.edit(target, notice, final=True)
        with contextlib.suppress(RedisError):
            await self.bus.untrack(self.platform, item.id)
        return item.id

    async def history(self, thread: str) -> list[Turn]:
        """Past turns of a conversation this relay answered (none while Redis is unreachable)."""
        try:
            return await self.bus.history(self.platform, thread)
        except RedisError:
            return []

    async def record_for(self, question_id: str) -> InflightRecord | None:
        """The in-flight record of a question, if its answer is still being posted."""
        return next((r for r in await self.bus.tracked(self.platform) if r.question_id == question_id), None)

    async def record_at(self, target_key: str, value: str) -> InflightRecord | None:
        """The in-flight record whose placeholder has `target[target_key] == value`."""
        return next((r for r in await self.bus.tracked(self.platform) if r.target.get(target_key) == value), None)

    # ------------------------------------------------------------------ answering

    async def resume(self) -> int:
        """Deliver every in-flight answer no live process is posting; returns how many were taken.

        A record older than a question can live (QUESTION_TTL_S plus the longest answer) is given up
        with a notice instead, so no dead record keeps a user's concurrent-question slot.
        """
        taken = 0
        for record in await self.bus.tracked(self.platform):
            if record.question_id in self._delivering or not await self._lease(record):
                continue
            if time.time() - record.created_at > self.record_max_age_s:
                await self._give_up(record)
                continue
            log.info("%s question %s: resuming its answer", self.platform, record.question_id)
            self._spawn(record, leased=True)
            taken += 1
        return taken

    @property
    def record_max_age_s(self) -> float:
        """How long an in-flight record may live: the question's lifetime and the longest answer after it."""
        return self.settings.question_ttl_s + MAX_ANSWER_S

    async def _give_up(self, record: InflightRecord) -> None:
        """End a record that can no longer be answered: tell the asker if the placeholder is still there."""
        log.warning("%s question %s: in flight too long, given up", self.platform, record.question_id)
        with contextlib.suppress(Exception):
            await self.surface.edit(record.target, text("given_up", record.language), final=True)
        with contextlib.suppress(Exception):
            await self.bus.untrack(self.platform, record.question_id)
            await self.bus.release_lease(record.question_id, self.owner)

    async def run_resumer(self) -> None:
        """Resume lapsed answers now and every half lease, for records of crashed processes."""
        while True:
            try:
                await self.resume()
            except Exception:
                log.exception("resuming in-flight answers failed")
            await asyncio.sleep(self.settings.lease_ttl_s / 2)

    async def close(self) -> None:
        """Stop following answers (their leases lapse and another process resumes them)."""
        tasks = list(self._delivering.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, record: InflightRecord, leased: bool = False) -> None:
        task = asyncio.create_task(self._deliver(record, leased))
        self._delivering[record.question_id] = task
        task.add_done_callback(lambda _: self._delivering.pop(record.question_id, None))

    async def _lease(self, record: InflightRecord) -> bool:
        return await self.bus.acquire_lease(record.question_id, self.owner, int(self.settings.lease_ttl_s * 1000))

    async def _deliver(self, record: InflightRecord, leased: bool) -> None:
        if not leased and not await self._lease(record):
            return
        renewing = asyncio.create_task(self._renew(record))
        finished = False
        try:
            async with self.surface.working(record.target):
                finished = await self._render(record)
        except Exception:
            log.exception("%s question %s: posting the answer failed", self.platform, record.question_id)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing  # not left pending: a closing loop would find it half-cancelled
            with contextlib.suppress(Exception):
                if finished:
                    await self.bus.untrack(self.platform, record.question_id)
                await self.bus.release_lease(record.question_id, self.owner)

    async def _renew(self, record: InflightRecord) -> None:
        ttl_ms = int(self.settings.lease_ttl_s * 1000)
        while True:
            await asyncio.sleep(self.settings.lease_ttl_s / 3)
            with contextlib.suppress(Exception):
                await self.bus.renew_lease(record.question_id, self.owner, ttl_ms)

    async def _render(self, record: InflightRecord) -> bool:
        """Follow the answer stream onto the placeholder; True once the final text is posted."""
        language = record.language
        shown = ""
        last_edit = 0.0
        gone = False
        try:
            async for _, event in self.bus.follow(
                record.question_id,
                start_timeout_s=self.settings.answer_start_timeout_s or self.settings.question_ttl_s + 30,
                stall_timeout_s=self.settings.answer_stall_timeout_s,
            ):
                if isinstance(event, Delta):
                    shown += event.text
                elif isinstance(event, Restart):
                    shown = ""
                    with contextlib.suppress(PlaceholderGone):
                        await self.surface.edit(record.target, text("restarted", language), final=False)
                    continue
                elif isinstance(event, Done):
                    await self._post_final(record, event.text)
                    await self._remember(record, event.text)
                    return True
                elif isinstance(event, ErrorEvent):
                    notice = error_text(event.code, language)  # type: ignore[arg-type]
                    await self._post_final(record, f"{shown}\n\n{notice}" if shown else notice)
                    return True
                if shown and not gone and time.monotonic() - last_edit >= self.surface.edit_interval_s:
                    try:
                        await self.surface.edit(record.target, self._streaming_view(shown), final=False)
                    except PlaceholderGone:
                        gone = True  # stream no more; the final answer goes out as a fresh message
                    last_edit = time.monotonic()
        except AnswerTimeout:
            notice = text("timeout", language)  # type: ignore[arg-type]
            await self._post_final(record, f"{shown}\n\n{notice}" if shown else notice)
            return True
        return False

    def _streaming_view(self, shown: str) -> str:
        """While streaming, the newest text that fits one message."""
        room = self.surface.max_chars - len(STREAMING_MARK) - 2
        body = shown if len(shown) <= room else "…" + shown[-room:]
        return body + STREAMING_MARK

    async def _post_final(self, record: InflightRecord, answer: str) -> None:
        """The final text on the placeholder, or, if that was deleted, as fresh messages in its thread."""
        pieces = split_message(answer, self.surface.max_chars) or ["…"]
        try:
            await self.surface.edit(record.target, pieces[0], final=True)
            rest = pieces[1:]
        except PlaceholderGone:
            log.warning("%s question %s: placeholder gone, posting a fresh message", self.platform, record.question_id)
            rest = pieces
        try:
            for piece in rest:
                await self.surface.post_more(record.target, piece)
        except PlaceholderGone:  # the thread or channel is gone too: nobody is left to read it
            log.warning("%s question %s: nowhere left to post the answer, given up", self.platform, record.question_id)
            return
        log.info("%s question %s: answer posted in %d message(s)", self.platform, record.question_id, len(pieces))

    async def _remember(self, record: InflightRecord, answer: str) -> None:
        if record.thread and self.settings.history_turns:
            turn = Turn(question=record.question, answer=answer)
            await self.bus.remember(
                self.platform, record.thread, turn, self.settings.history_turns, self.settings.history_ttl_s
            )
