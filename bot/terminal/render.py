"""How `kullm ask` shows an answer and tells why it ends without one: a live view on a terminal, plain text when
piped, JSON lines with `--json`; and the one-line notices (`Notice`) for each exit status, Redis' included."""

from __future__ import annotations

import json
import sys
from typing import Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from bot.settings import ClientSettings
from bot.texts import Language, error_text, text, waiting_line
from chatbus import (
    AnswerEvent,
    BusError,
    Delta,
    Done,
    ErrorEvent,
    NotAnswering,
    PasswordRefused,
    Progress,
    Restart,
    Unreachable,
    WritesRefused,
    redact_url,
)
from runtime.exits import (
    EXIT_BUSY,
    EXIT_INPUT,
    EXIT_NO_WORKER,
    EXIT_REDIS,
    EXIT_TIMEOUT,
)

# The codes of `--json` error lines written by `ask` itself (the worker's are the contract's ErrorCode).
LOCAL_ERROR_CODES = {
    EXIT_INPUT: "bad_input",
    EXIT_BUSY: "overloaded",
    EXIT_REDIS: "redis",
    EXIT_TIMEOUT: "timeout",
    EXIT_NO_WORKER: "no_worker",
}


class Notice(Protocol):
    """How `ask` tells why it ends without an answer: a line on stderr, or with --json an `error` line."""

    def __call__(self, status: int, message: str) -> int: ...


def notice_for(as_json: bool, out: TextIO, err: TextIO) -> Notice:
    """The `Notice` of the chosen output; it returns the exit status it was given."""

    def say(status: int, message: str) -> int:
        if as_json:
            line = {"type": "error", "code": LOCAL_ERROR_CODES.get(status, "failed"), "message": message}
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            out.flush()
        else:
            err.write(message + "\n")
        return status

    return say


class Renderer(Protocol):
    """How `ask` shows the answer stream."""

    def queued(self, question_id: str, ahead: int) -> None: ...
    def event(self, event: AnswerEvent) -> None: ...
    def left(self, question_id: str, *, started: bool) -> None: ...
    def note(self, message: str) -> None: ...
    def close(self) -> None: ...


class JsonLines:
    """One JSON object per line: `queued`, then the answer events as the contract defines them."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err

    def queued(self, question_id: str, ahead: int) -> None:
        self._write({"type": "queued", "id": question_id, "ahead": ahead})

    def event(self, event: AnswerEvent) -> None:
        self._write(event.model_dump(exclude={"v"}))

    def left(self, question_id: str, *, started: bool) -> None:
        self._write({"type": "left", "id": question_id, "started": started})

    def note(self, message: str) -> None:
        self.err.write(message + "\n")  # stdout stays the events alone

    def close(self) -> None:
        pass

    def _write(self, document: dict[str, object]) -> None:
        self.out.write(json.dumps(document, ensure_ascii=False) + "\n")
        self.out.flush()


class PlainText:
    """Text deltas to stdout as they arrive, notices to stderr (for pipes)."""

    def __init__(self, out: TextIO, err: TextIO, language: Language) -> None:
        self.out, self.err, self.language = out, err, language
        self.mid_line = False  # answer text written without the newline that ends it

    def queued(self, question_id: str, ahead: int) -> None:
        self.err.write(waiting_line(ahead, self.language) + "\n")

    def event(self, event: AnswerEvent) -> None:
        if isinstance(event, Delta):
            self.out.write(event.text)
            self.out.flush()
            self.mid_line = self.mid_line or bool(event.text)
        elif isinstance(event, Restart):
            self._end_line()
            self.err.write(text("restarted", self.language) + "\n")
        elif isinstance(event, Progress):
            self.err.write(text("summarizing", self.language, done=event.done, total=event.total) + "\n")
        elif isinstance(event, Done):
            self.out.write("\n")
            self.mid_line = False
            if event.context_cut:  # on stderr: stdout stays the answer alone, for scripts
                self.err.write(text("context_cut", self.language) + "\n")
        elif isinstance(event, ErrorEvent):
            self._end_line()  # a stopped answer's text so far ends its line, as a finished one does
            self.err.write(error_text(event.code, self.language) + "\n")

    def left(self, question_id: str, *, started: bool) -> None:
        self._end_line()
        self.err.write(text("left" if started else "withdrawn", self.language) + "\n")

    def _end_line(self) -> None:
        if self.mid_line:
            self.out.write("\n")
            self.out.flush()
            self.mid_line = False

    def note(self, message: str) -> None:
        self.err.write(message + "\n")

    def close(self) -> None:
        self.out.flush()


class LiveView:
    """A rich live view on a terminal: the answer so far, and a status line under it."""

    def __init__(self, console: Console, language: Language) -> None:
        self.language = language
        self.answer = ""
        self.status = ""
        self.live = Live(self._render(), console=console, refresh_per_second=8, transient=False)
        self.live.start()

    def queued(self, question_id: str, ahead: int) -> None:
        self.status = waiting_line(ahead, self.language)
        self.live.update(self._render())

    def event(self, event: AnswerEvent) -> None:
        if isinstance(event, Delta):
            self.answer += event.text
            self.status = ""
        elif isinstance(event, Restart):
            self.answer, self.status = "", text("restarted", self.language)
        elif isinstance(event, Progress):
            self.status = text("summarizing", self.language, done=event.done, total=event.total)
        elif isinstance(event, Done):
            self.answer = event.text
            self.status = text("answered", self.language, tokens=event.completion_tokens, seconds=event.generate_s)
            if event.context_cut:
                self.status = f"{text('context_cut', self.language)}\n{self.status}"
        elif isinstance(event, ErrorEvent):
            self.status = error_text(event.code, self.language)
        self.live.update(self._render())

    def left(self, question_id: str, *, started: bool) -> None:
        self.status = text("left" if started else "withdrawn", self.language)
        self.live.update(self._render())

    def note(self, message: str) -> None:
        self.status = message
        self.live.update(self._render())

    def close(self) -> None:
        self.live.stop()

    def _render(self) -> Group:
        return Group(Text(self.answer), Text(self.status, style="dim"))


def renderer_for(as_json: bool, out: TextIO, err: TextIO, language: Language) -> Renderer:
    if as_json:
        return JsonLines(out, err)
    if out.isatty():
        return LiveView(Console(file=out), language)
    return PlainText(out, err, language)


def redis_failed(exc: BusError, settings: ClientSettings, say: Notice | None = None) -> int:
    """Say why Redis cannot be used (password refused, unreachable, not answering, refusing writes) and return
    EXIT_REDIS;
    any other Redis error is raised again."""
    language, url = settings.bot_language, redact_url(settings.redis_url)
    say = say or notice_for(False, sys.stdout, sys.stderr)
    if isinstance(exc, PasswordRefused):  # a kind of Unreachable: asked first
        return say(EXIT_REDIS, text("redis_auth", language, url=url))
    if isinstance(exc, Unreachable):
        key = "redis_down_kullm_up" if settings.redis_from_kullm_up else "redis_down"
        return say(EXIT_REDIS, text(key, language, url=url))
    if isinstance(exc, NotAnswering):
        return say(EXIT_REDIS, text("redis_stalled", language, url=url))
    if isinstance(exc, WritesRefused):
        return say(EXIT_REDIS, text("redis_refuses", language, reason=exc.reason))
    raise exc
