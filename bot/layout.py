"""How one answer is laid out over a platform's messages: the placeholder, and after it the further parts of an
answer too long for one message, numbered, with the stop control on the newest while it streams and the vote
buttons and the footer (which model answered, how long it took) under the last at the end."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Generic, TypeVar

from bot.formatting import split_message
from bot.surface import PlaceholderGone, Streaming, Surface, Target
from bot.texts import text
from chatbus import Bus, BusError, Done, InflightRecord

log = logging.getLogger(__name__)

STREAMING_MARK = " ▌"
# Room kept in each message of a long answer for its part number, "\n\n(12/12)", and the streaming mark, and for
# the footer line: the same in every message and while streaming, so a part never changes where it ends.
PART_ROOM = 16
# The footer: the model (at most MODEL_LABEL_CHARS), the time ("1234.5초") and "📎 맥락이 길어 앞부분만 읽음" (at most
# 18 characters in either language) where only the beginning of 맥락 was read, " · " between them.
FOOTER_ROOM = 64
MODEL_LABEL_CHARS = 32
TargetVar = TypeVar("TargetVar", bound=Target)


def model_label(model: str) -> str:
    """The model as the small line under an answer names it: the last part of its id or path."""
    label = model.rstrip("/").rsplit("/", 1)[-1] or "KULLM"
    return label if len(label) <= MODEL_LABEL_CHARS else label[: MODEL_LABEL_CHARS - 1] + "…"


def took(done: Done) -> float:
    """How long the asker waited for the answer: its time in the queue and its generation."""
    return done.queued_s + done.generate_s


def answer_footer(done: Done, language: Any) -> str:
    """The small line under an answer: the model, the time it took, and where only the beginning of 맥락 was read,
    that too."""
    footer = text("footer", language, model=model_label(done.model), seconds=took(done))
    return f"{footer} · {text('context_cut_short', language)}" if done.context_cut else footer


class AnswerLayout(Generic[TargetVar]):
    """The messages one answer is shown in: the placeholder, and after it the further parts of an answer too long
    for one message. Earlier parts are final (their text settled, no stop control); the newest carries the stop
    control while streaming and the vote buttons at the end. Each part is numbered once there are several."""

    def __init__(
        self, surface: Surface[Any, TargetVar], bus: Bus, record: InflightRecord, target: TargetVar, keep_s: float
    ) -> None:
        self.surface, self.bus, self.record, self.target, self.keep_s = surface, bus, record, target, keep_s
        self.parts: list[TargetVar] = []
        for fields in record.parts:
            with contextlib.suppress(KeyError):
                self.parts.append(self.surface.target(fields))
        self._shown: dict[int, str] = {}  # what each message shows now, by position, so unchanged parts are not edited

    @property
    def messages(self) -> list[TargetVar]:
        return [*self.parts, self.target]

    def _pieces(self, answer: str) -> list[str]:
        return split_message(answer, self.surface.max_chars - PART_ROOM - FOOTER_ROOM) or ["…"]

    async def stream(self, shown: str) -> None:
        """The answer so far: streamed natively where the platform does, else laid out over the placeholder and
        as many further messages as it needs. Raises `PlaceholderGone`."""
        if not self.parts and isinstance(self.surface, Streaming):
            moved, streamed = await self.surface.stream(self.target, shown)
            if moved != self.target:
                self.target = moved
                await self._save()
            if streamed:
                return
        await self._lay_out(self._pieces(shown), final=False)

    async def progress(self, done: int, total: int, notice: str) -> None:
        """A long task's parts as they are read, before the answer's first text: in the platform's own stream where
        it streams (Slack's task cards), else `notice` on the placeholder. Raises `PlaceholderGone`."""
        if not self.parts and isinstance(self.surface, Streaming):
            moved, shown = await self.surface.progress(self.target, done, total)
            if moved != self.target:
                self.target = moved
                await self._save()
            if shown:
                return
        await self.surface.edit(self.target, notice, final=False)

    async def restart(self, notice: str) -> None:
        """The answer starts over: its further parts are deleted and the placeholder says so."""
        if self.parts:
            for extra in self.messages[1:]:
                with contextlib.suppress(Exception):
                    await self.surface.delete(extra)
            self.target, self.parts = self.parts[0], []
            self._shown.clear()
            await self._save()
        await self.surface.edit(self.target, notice, final=False)

    async def final(self, answer: str, feedback: str | None, footer: str) -> int:
        """Lay out the final answer, numbered when it takes several messages, with `footer` and the vote buttons
        under its last part; returns how many messages it took."""
        line = "\n" + self.surface.footer_style.format(footer) if footer else ""
        pieces = self._pieces(answer)
        await self._lay_out(pieces, final=True, feedback=feedback, footer=line)
        return len(pieces)

    async def _lay_out(self, pieces: list[str], *, final: bool, feedback: str | None = None, footer: str = "") -> None:
        language, question_id = self.record.language, self.record.question_id
        messages, total = self.messages, len(pieces)
        for i, piece in enumerate(pieces):
            last = i == total - 1
            if final:
                label = text("part", language, number=i + 1, total=total) if total > 1 else ""
            else:
                label = "" if last else text("part_open", language, number=i + 1)
            content = piece.rstrip() + "\n\n" + label if label else piece
            content += (footer if final else STREAMING_MARK) if last else ""
            settled = final or not last
            votes = feedback if final and last else None
            if i < len(messages):
                if self._shown.get(i) == content and not (final and last):
                    continue
                try:
                    await self.surface.edit(messages[i], content, final=settled, feedback=votes)
                except PlaceholderGone:
                    if not final:
                        raise
                    log.warning(
                        "%s question %s: placeholder gone, posting a fresh message", self.record.platform, question_id
                    )
                    messages[i] = await self.surface.post_part(
                        messages[i], content, question_id, final=True, feedback=votes
                    )
            else:
                messages.append(
                    await self.surface.post_part(messages[-1], content, question_id, final=settled, feedback=votes)
                )
            self._shown[i] = content
        for extra in messages[total:]:  # a shorter final text (an error after a long start) leaves none behind
            with contextlib.suppress(Exception):
                await self.surface.delete(extra)
        for i in range(total, len(messages)):
            self._shown.pop(i, None)
        changed = messages[:total] != self.messages
        self.parts, self.target = messages[: total - 1], messages[total - 1]
        if changed:
            await self._save()

    async def _save(self) -> None:
        """Store where the answer is shown, so a restarted adapter finishes the same messages."""
        self.record = self.record.model_copy(
            update={"target": self.target.to_fields(), "parts": tuple(p.to_fields() for p in self.parts)}
        )
        with contextlib.suppress(BusError):  # not stored: a restart edits the messages it knows of
            await self.bus.inflight.track(self.record, ttl_s=int(self.keep_s))
