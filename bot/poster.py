"""Posting answers: each answer a chat adapter has in flight is followed, while this process holds its lease,
from its answer stream onto its placeholder — riding out a Redis outage as `kullm ask` does — edited at most once
per `edit_interval_s`, the final text split at the platform's limit, and its record forgotten. Records whose lease
lapsed (a process that crashed or stopped) are resumed here, editing the same placeholder: nothing is lost and
nothing is posted twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any, Generic, TypeVar

from bot.feedback import Feedback
from bot.follow import follow_answer
from bot.layout import AnswerLayout, answer_footer
from bot.settings import ClientSettings
from bot.surface import Outcome, PlaceholderGone, Sessions, Streaming, Surface, Target
from bot.texts import error_text, reference, text
from chatbus import (
    AnswerTimeout,
    Bus,
    BusError,
    Delta,
    Done,
    ErrorEvent,
    InflightRecord,
    Progress,
    Restart,
    Started,
    Turn,
    cancel_requested,
)

log = logging.getLogger(__name__)

# The longest an answer may take after its question expired: in-flight records older than
# QUESTION_TTL_S plus this are given up (and the whole hash expires if a platform goes quiet).
MAX_ANSWER_S = 600

TargetVar = TypeVar("TargetVar", bound=Target)


class AnswerPoster(Generic[TargetVar]):
    """The answers one platform's adapter posts; see the module docstring."""

    def __init__(
        self, bus: Bus, surface: Surface[Any, TargetVar], settings: ClientSettings, feedback: Feedback
    ) -> None:
        self.bus, self.surface, self.settings, self.feedback = bus, surface, settings, feedback
        self.platform = surface.platform
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._delivering: dict[str, asyncio.Task[None]] = {}
        self._resumer: asyncio.Task[None] | None = None

    async def resume(self) -> int:
        """Deliver every in-flight answer no live process is posting; returns how many were taken.

        A record older than a question can live (QUESTION_TTL_S plus the longest answer) is given up
        with a notice instead, so no dead record keeps a user's concurrent-question slot.
        """
        taken = 0
        for record in await self.bus.inflight.tracked(self.platform):
            if record.question_id in self._delivering or not await self._lease(record):
                continue
            if time.time() - record.created_at > self.record_max_age_s:
                await self._give_up(record)
                continue
            log.info("%s question %s: resuming its answer", self.platform, record.question_id)
            self.spawn(record, leased=True)
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
            notice = error_text("given_up", record.language, reference(record.question_id))
            target = self.surface.target(record.target)
            await self.surface.edit(target, notice, final=True)
            if isinstance(self.surface, Sessions):
                await self.surface.ended(target, "failed")
        with contextlib.suppress(Exception):
            await self.bus.inflight.untrack(self.platform, record.question_id)
            await self.bus.inflight.release_lease(record.question_id, self.owner)

    async def _say_when_no_worker(self, serving: bool | None) -> bool:
        """Log once each time the queue goes without a live worker (and once it has one again): questions asked
        meanwhile wait in the queue, and whoever runs the adapter should know why."""
        now = bool(await self.bus.workers.live())
        if now != serving and (serving is not None or not now):
            if now:
                log.info("a worker serves the queue again")
            else:
                log.warning(
                    "no worker is serving the queue on %s: questions wait until one starts (kullm up, kullm worker)",
                    self.settings.redis_said,
                )
        return now

    def start(self) -> None:
        """Resume lapsed answers now and every half lease (records of crashed processes), until `close`; log when no
        worker serves the queue."""
        if self._resumer is None:
            self._resumer = asyncio.create_task(self._run_resumer())

    async def _run_resumer(self) -> None:
        serving: bool | None = None  # whether a worker serves the queue, as last logged
        while True:
            try:
                await self.resume()
                serving = await self._say_when_no_worker(serving)
            except Exception:
                if not cancel_requested():
                    log.exception("resuming in-flight answers failed")
            if cancel_requested():
                return  # cancelled mid-command: redis-py may have swallowed the CancelledError
            await asyncio.sleep(self.settings.lease_ttl_s / 2)

    async def close(self) -> None:
        """Stop resuming and following answers (their leases lapse and another process resumes them)."""
        tasks = list(self._delivering.values())
        if self._resumer is not None:
            tasks.append(self._resumer)
            self._resumer = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def spawn(self, record: InflightRecord, leased: bool = False) -> None:
        """Post this answer in a task of its own (`leased`: the lease is already held)."""
        task = asyncio.create_task(self._deliver(record, leased))
        self._delivering[record.question_id] = task
        task.add_done_callback(lambda _: self._delivering.pop(record.question_id, None))

    async def _lease(self, record: InflightRecord) -> bool:
        return await self.bus.inflight.acquire_lease(
            record.question_id, self.owner, int(self.settings.lease_ttl_s * 1000)
        )

    async def _deliver(self, record: InflightRecord, leased: bool) -> None:
        if not leased and not await self._lease(record):
            return
        renewing = asyncio.create_task(self._renew(record))
        finished = False
        try:
            target = self.surface.target(record.target)
            async with self.surface.working(target):
                finished = await self._render(record, target)
        except Exception:
            log.exception("%s question %s: posting the answer failed", self.platform, record.question_id)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing  # not left pending: a closing loop would find it half-cancelled
            with contextlib.suppress(Exception):
                if finished:
                    await self.bus.inflight.untrack(self.platform, record.question_id)
                await self.bus.inflight.release_lease(record.question_id, self.owner)

    async def _renew(self, record: InflightRecord) -> None:
        ttl_ms = int(self.settings.lease_ttl_s * 1000)
        while not cancel_requested():  # redis-py may swallow a CancelledError that lands mid-command
            await asyncio.sleep(self.settings.lease_ttl_s / 3)
            with contextlib.suppress(Exception):
                await self.bus.inflight.renew_lease(record.question_id, self.owner, ttl_ms)

    async def _render(self, record: InflightRecord, target: TargetVar) -> bool:
        """Follow the answer stream onto the placeholder (or the platform's streamed message), continuing into
        more messages when it outgrows one; True once the final text is posted."""
        language = record.language
        shown = ""
        last_edit = 0.0
        gone = False
        layout = AnswerLayout(self.surface, self.bus, record, target, self.record_max_age_s)

        def outage() -> None:
            log.warning("%s question %s: Redis connection lost, waiting for it", self.platform, record.question_id)

        try:
            async for event in follow_answer(self.bus, record.question_id, self.settings, outage):
                if isinstance(event, Delta):
                    shown += event.text
                elif isinstance(event, Started) and not shown:
                    await self._started(layout)
                    continue
                elif isinstance(event, Progress):
                    if not shown:
                        with contextlib.suppress(PlaceholderGone):
                            progress = text("summarizing", language, done=event.done, total=event.total)
                            await layout.progress(event.done, event.total, progress)
                    continue
                elif isinstance(event, Restart):
                    shown = ""
                    with contextlib.suppress(PlaceholderGone):
                        await layout.restart(text("restarted", language))
                    continue
                elif isinstance(event, Done):
                    # Remembered before it is shown: a follow-up sent the moment the answer appears has it.
                    await self._remember(record, event.text)
                    feedback = await self.feedback.note_answered(record, event)
                    footer = answer_footer(event, language)
                    await self._post_final(layout, event.text, feedback=feedback, footer=footer)
                    await self._ended(layout, "answered")
                    return True
                elif isinstance(event, ErrorEvent):
                    notice = await self._error_notice(record, event)
                    await self._post_final(layout, f"{shown}\n\n{notice}" if shown else notice)
                    await self._ended(layout, "stopped" if event.code == "cancelled" else "failed")
                    return True
                if shown and not gone and time.monotonic() - last_edit >= self.surface.edit_interval_s:
                    try:
                        await layout.stream(shown)
                    except PlaceholderGone:
                        gone = True  # stream no more; the final answer goes out as a fresh message
                    last_edit = time.monotonic()
        except AnswerTimeout:
            ref = reference(record.question_id)
            log.warning("%s question %s (ref %s): no answer arrived in time", self.platform, record.question_id, ref)
            notice = error_text("timeout", language, ref)
            await self._post_final(layout, f"{shown}\n\n{notice}" if shown else notice)
            await self._ended(layout, "failed")
            return True
        return False

    async def _started(self, layout: AnswerLayout[TargetVar]) -> None:
        """A worker took the question: where the platform streams, it says so (Slack's pane status)."""
        if isinstance(self.surface, Streaming):
            with contextlib.suppress(PlaceholderGone):
                await self.surface.started(layout.target)

    async def _ended(self, layout: AnswerLayout[TargetVar], outcome: Outcome) -> None:
        """Where the platform shows the answer's thread as a session (Slack's agent sessions), it moves on, unless
        another answer in the same thread is still on its way: the last one to end says how the session stands."""
        if isinstance(self.surface, Sessions):
            with contextlib.suppress(Exception):
                if not await self._others_in_thread(layout):
                    await self.surface.ended(layout.target, outcome)

    async def _others_in_thread(self, layout: AnswerLayout[TargetVar]) -> bool:
        """Whether another answer in flight is shown in the same conversation (thread) as this one."""
        here = layout.target.conversation
        for record in await self.bus.inflight.tracked(self.platform):
            if record.question_id == layout.record.question_id:
                continue
            with contextlib.suppress(KeyError):
                if self.surface.target(record.target).conversation == here:
                    return True
        return False

    async def _finish_stream(self, layout: AnswerLayout[TargetVar], answer: str, feedback: str | None) -> bool:
        """The final answer where the platform's own stream showed it; False when the messages are edited instead."""
        return isinstance(self.surface, Streaming) and await self.surface.finish(layout.target, answer, feedback)

    async def _error_notice(self, record: InflightRecord, event: ErrorEvent) -> str:
        """What an answer that ended without one says: who stopped it, or what failed with a reference."""
        language, ref = record.language, reference(record.question_id)
        if event.code == "failed":
            log.warning("%s question %s (ref %s): the worker failed", self.platform, record.question_id, ref)
        if event.code == "cancelled":
            with contextlib.suppress(BusError):
                by = await self.bus.queue.cancelled_by(record.question_id)
                if by:
                    return text("cancelled_by", language, user=by)
        return error_text(event.code, language, ref)

    async def _post_final(
        self, layout: AnswerLayout[TargetVar], answer: str, *, feedback: str | None = None, footer: str = ""
    ) -> None:
        """The final text where the answer was streamed (with `feedback`, the question id, the vote buttons go
        under its last part); a placeholder that was deleted is replaced by fresh messages in its thread."""
        record = layout.record
        line = "\n" + self.surface.footer_style.format(footer) if footer else ""
        if await self._finish_stream(layout, (answer or "…") + line, feedback):
            log.info("%s question %s: answer posted", self.platform, record.question_id)
            return
        try:
            count = await layout.final(answer or "…", feedback, footer)
        except PlaceholderGone:  # the thread or channel is gone too: nobody is left to read it
            log.warning("%s question %s: nowhere left to post the answer, given up", self.platform, record.question_id)
            return
        log.info("%s question %s: answer posted in %d message(s)", self.platform, record.question_id, count)

    async def _remember(self, record: InflightRecord, answer: str) -> None:
        if record.thread and self.settings.history_turns:
            turn = Turn(question=record.question, answer=answer)
            try:
                await self.bus.threads.remember(
                    self.platform, record.thread, turn, self.settings.history_turns, self.settings.history_ttl_s
                )
            except BusError:  # the answer still goes out; a follow-up to it has one turn less of context
                log.warning("%s question %s: Redis down, its turn is not remembered", self.platform, record.question_id)
