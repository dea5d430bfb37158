"""What the relay needs of a platform (`Surface`) and where an answer is shown on it (`Target`), with the two
ways a platform says it cannot show one (`PlaceholderGone`, `CannotPost`) and a question as an adapter received it
(`Asked`). Every adapter implements `Surface`; the relay (`bot.relay`) and the answer's layout (`bot.layout`)
drive it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar, runtime_checkable

from bot.errors import BotError
from chatbus import Task

# How an answer ended: its final text posted, stopped by someone, or failed (an error, a timeout, given up).
Outcome = Literal["answered", "stopped", "failed"]


class PlaceholderGone(BotError):
    """The platform says the placeholder is gone: deleted, or its channel deleted or closed to the bot."""


class CannotPost(BotError):
    """The placeholder could not be posted where the question was asked; `notice` tells the asker why."""

    def __init__(self, notice: str) -> None:
        super().__init__(notice)
        self.notice = notice


@dataclass(frozen=True)
class Source:
    """Something an answer is grounded on, as the platform links it: a file, a thread, a message."""

    title: str
    url: str


def encode_sources(sources: tuple[Source, ...]) -> str:
    """Sources as a target's field stores them: JSON [[title, url], …] ("" for none)."""
    return json.dumps([[s.title, s.url] for s in sources], ensure_ascii=False) if sources else ""


def decode_sources(stored: str) -> tuple[Source, ...]:
    """The sources a target's field stored; none where it holds something else."""
    try:
        return tuple(Source(str(title), str(url)) for title, url in json.loads(stored)) if stored else ()
    except (ValueError, TypeError):
        return ()


@dataclass(frozen=True)
class Asked:
    """A question as an adapter received it, before any limit was checked."""

    user: str
    question: str
    context: str = ""
    # A follow-up in a conversation the bot answers (a thread, a DM): its history goes with it.
    continues: bool = False
    # The channel whose persona (`/kullm-설정 persona`) applies: a thread's parent, else where it was asked.
    channel: str = ""
    # summarize, translate, proofread: the work is on `context` (a thread, a message, a file); `question` names it.
    task: Task = "ask"
    # Where `context` came from (the files read, the thread summarised, the message asked about): shown with the answer.
    sources: tuple[Source, ...] = ()


class Target(Protocol):
    """Where an answer is shown: the placeholder's ids on one platform, stored in the in-flight record."""

    @property
    def conversation(self) -> str:
        """The key its conversation's history is kept under (a thread, a DM channel)."""
        ...

    def to_fields(self) -> dict[str, str]:
        """The ids as the in-flight record stores them."""
        ...


OriginT = TypeVar("OriginT", contravariant=True)
TargetT = TypeVar("TargetT", bound=Target)
TargetIn = TypeVar("TargetIn", bound=Target, contravariant=True)


class Surface(Protocol[OriginT, TargetT]):
    """How one platform shows an answer: refusals, a placeholder it edits, and messages after it.

    `OriginT` is where a question was asked (a message, an interaction, a slash command…), as the
    adapter describes it; `TargetT` is the placeholder it posted there.
    """

    platform: str
    max_chars: int
    edit_interval_s: float
    footer_style: str  # how the small line under an answer is written: "-# {}" on Discord

    def target(self, fields: Mapping[str, str]) -> TargetT:
        """The target an in-flight record stored (`Target.to_fields`). Raises KeyError if it is not one."""
        ...

    async def refuse(self, origin: OriginT, notice: str) -> None:
        """Tell the asker why the question is not answered, where they asked it."""
        ...

    async def post_placeholder(
        self, origin: OriginT, asked: Asked, content: str, question_id: str, *, ahead: int = 0
    ) -> TargetT:
        """Post the placeholder showing `content` (the waiting line for `ahead` questions before this one), opening
        a thread where the platform answers in one. Raises `CannotPost`."""
        ...

    async def edit(self, target: TargetT, content: str, *, final: bool, feedback: str | None = None) -> None:
        """Replace the placeholder's text; `final` removes the stop control, and `feedback` (a question id) puts
        the 👍/👎 buttons for that answer in its place. Raises `PlaceholderGone`."""
        ...

    async def post_part(
        self, target: TargetT, content: str, question_id: str, *, final: bool, feedback: str | None = None
    ) -> TargetT:
        """Post a message after `target` (in its thread) that the relay edits like the placeholder: the next part
        of a long answer (with the stop control until `final`), or the answer itself when the placeholder is gone.
        Raises `PlaceholderGone` when there is nowhere left to post."""
        ...

    async def delete(self, target: TargetT) -> None:
        """Delete a message the relay posted (a part an answer started over no longer needs); gone is fine."""
        ...

    def working(self, target: TargetT) -> AbstractAsyncContextManager[None]:
        """Shown while the answer is generated (a typing indicator, or nothing)."""
        ...


@runtime_checkable
class Streaming(Protocol[TargetT]):
    """A platform's own streamed messages (Slack's assistant pane), which a `Surface` may offer beside editing
    its placeholder; the poster uses them where the surface has them (Discord has none)."""

    async def started(self, target: TargetT) -> None:
        """A worker began generating the answer (before its first text): say so where the platform shows waiting."""
        ...

    async def stream(self, target: TargetT, shown: str) -> tuple[TargetT, bool]:
        """Show the answer so far (`shown`, all of it) with the platform's own streaming, where it has one.

        Returns the target (changed when a streamed message began or ended: the relay stores it) and
        whether it was shown; when not, the relay edits the placeholder as on platforms without streaming.
        """
        ...

    async def progress(self, target: TargetT, done: int, total: int) -> tuple[TargetT, bool]:
        """Show that `done` of a long task's `total` parts are read, before its answer's first text, as part of the
        platform's own stream (Slack's task cards). Returns the target, as `stream` does, and whether it was shown;
        when not, the relay says so on the placeholder."""
        ...

    async def finish(self, target: TargetT, answer: str, feedback: str | None = None) -> bool:
        """Show the final answer where `stream` showed it (with vote buttons for `feedback`, a question id);
        False when the relay should edit the placeholder."""
        ...


@runtime_checkable
class Sessions(Protocol[TargetIn]):
    """A platform that shows each answer's thread as a session with a status (Slack's agent sessions), which the
    poster tells how each answer ended once its final text is out."""

    async def ended(self, target: TargetIn, outcome: Outcome) -> None:
        """The answer shown at `target` ended so; a failure to say so loses only the status."""
        ...
