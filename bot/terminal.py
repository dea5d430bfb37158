"""`kullm ask`: the queue from a terminal (`kullm status` and the other operator commands: kullm/operator.py).

`ask` enqueues a question with the same refusals the chat adapters give and prints the
answer as it streams: a live view on a terminal, plain text when piped, JSON lines with
`--json`. Exit status: 0 answered, 1 failed/expired, 2 empty or too long, 3 busy,
4 Redis unreachable, 5 no answer arrived, 6 no worker serves the queue, 130 stopped with Ctrl-C, 141 stdout
closed (the reader of a pipe left: the question is withdrawn).

While the question waits, `ask` watches the worker list: with no worker at all (none serving, none loading its
model, none gone silent) for NO_WORKER_GRACE_S, it withdraws the question and says so instead of waiting out its
lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import signal
import sys
import time
from typing import Any, Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from bot.follow import follow_answer
from bot.limits import check_question
from bot.settings import ClientSettings
from bot.texts import Language, error_text, text, waiting_line
from chatbus import (
    AnswerEvent,
    AnswerTimeout,
    Bus,
    BusDown,
    BusError,
    Delta,
    Done,
    ErrorEvent,
    NotAnswering,
    PasswordRefused,
    Progress,
    Question,
    QueueFull,
    Restart,
    Task,
    Unreachable,
    WritesRefused,
    redact_url,
)
from runtime.exits import (
    EXIT_BUSY,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INPUT,
    EXIT_NO_WORKER,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_REDIS,
    EXIT_TIMEOUT,
)

_ERROR_EXIT = {"too_long": EXIT_INPUT, "overloaded": EXIT_BUSY, "cancelled": EXIT_CANCELLED}
CANCEL_SEND_S = 2.0  # leaving with Ctrl-C waits this long at most for the cancel flag to reach Redis
# A queue with no worker at all this long is said so: long enough for a worker started just after the question (by
# `kullm up`, or by hand) to put its loading record in the list — a second or two, more on a busy machine — and
# short against the question's lifetime (QUESTION_TTL_S, 10 minutes), which it used to wait out.
NO_WORKER_GRACE_S = 10.0
WORKER_POLL_S = 1.0
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


async def ask(
    settings: ClientSettings,
    question: str,
    *,
    context: str = "",
    task: Task = "ask",
    max_new_tokens: int | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Ask one question and print its answer (to stdout and stderr unless told); returns the exit status.

    With a `task` (summarize, translate, proofread) the text to work on is `context`."""
    out, err = out or sys.stdout, err or sys.stderr
    language = settings.bot_language
    say = notice_for(as_json, out, err)
    if task != "ask":
        question = text(f"task_{task}", language)
        if not context.strip():
            return say(EXIT_INPUT, text("task_empty", language, task=question))
    refusal = check_question(settings, question, context)
    if refusal:
        return say(EXIT_INPUT, refusal)
    if not as_json and "redis_url" not in settings.model_fields_set:  # found, not given: say which one
        err.write(text("redis_in_use", language, redis=settings.redis_said) + "\n")
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    item = Question.new(
        "terminal",
        question.strip(),
        ttl_s=settings.question_ttl_s,
        context=context.strip(),
        user=getpass.getuser(),
        max_new_tokens=max_new_tokens,
        task=task,
    )
    try:
        return await _ask(bus, item, settings, _renderer(as_json, out, err, language), say)
    except BusError as exc:
        return redis_failed(exc, settings, say)
    finally:
        await bus.aclose()


async def _ask(bus: Bus, item: Question, settings: ClientSettings, renderer: Renderer, say: Notice) -> int:
    language = settings.bot_language
    # Ctrl-C is ours before the question is in the queue: pressed while enqueueing, it still withdraws it.
    ctrl_c = _CtrlC(bus, item.id)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, ctrl_c.pressed)
    waiting: list[asyncio.Task[Any]] = []
    try:
        try:
            ahead = await bus.queue.enqueue(item, settings.max_queue)
        except QueueFull as exc:
            return say(EXIT_BUSY, text("overloaded", language, depth=exc.depth))
        renderer.queued(item.id, ahead)
        following = asyncio.create_task(_follow(bus, item.id, settings, renderer, ctrl_c, say))
        leaving = asyncio.create_task(ctrl_c.leave.wait())
        orphaned = asyncio.create_task(_no_worker(bus, ctrl_c, renderer, language))
        waiting = [following, leaving, orphaned]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if following.done():
            return await _followed(following, bus, item.id)
        following.cancel()  # left: the flag set, this process does not wait for the answer
        await asyncio.wait({following, *ctrl_c.sending}, timeout=CANCEL_SEND_S)
        if orphaned.done() and not leaving.done():
            await _withdraw(bus, item.id)
            return say(EXIT_NO_WORKER, text("no_worker", language, redis=settings.redis_said))
        renderer.left(item.id, started=ctrl_c.started)
        return EXIT_CANCELLED
    finally:
        for task in waiting:
            task.cancel()
        with contextlib.suppress(BrokenPipeError):
            renderer.close()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


async def _followed(following: asyncio.Task[int], bus: Bus, question_id: str) -> int:
    """The answer's exit status; stdout closed under it (`kullm ask … | head`) withdraws the question."""
    try:
        return following.result()
    except BrokenPipeError:
        await _withdraw(bus, question_id)
        return EXIT_PIPE


async def _withdraw(bus: Bus, question_id: str) -> None:
    """Ask the workers to drop the question (not yet started) or stop its answer; bounded, as leaving is."""
    with contextlib.suppress(BusError, TimeoutError):
        await asyncio.wait_for(bus.queue.request_cancel(question_id), CANCEL_SEND_S)


async def _no_worker(bus: Bus, ctrl_c: _CtrlC, renderer: Renderer, language: Language) -> None:
    """Return once the queue has had no worker at all — none serving, none loading its model, none gone silent —
    for NO_WORKER_GRACE_S while the question waits. Workers that went silent (frozen, or killed and not yet
    reaped) may come back, so the question waits for them, and says so once; so it does for one still loading.
    Never returns once a worker took the question."""
    loop = asyncio.get_running_loop()
    none_since: float | None = None
    said = ""
    while not ctrl_c.started:
        try:
            known = await bus.workers.records()
        except BusDown:
            none_since = None  # Redis away: following says so and waits for it
            await asyncio.sleep(WORKER_POLL_S)
            continue
        live = [w for w in known if w.live(time.time())]
        waiting_on = "" if any(not w.loading for w in live) else "worker_loading" if live else "workers_silent"
        if known:
            none_since = None
            if waiting_on and waiting_on != said:
                renderer.note(text(waiting_on, language))
                said = waiting_on
        elif none_since is None:
            none_since = loop.time()
        elif loop.time() - none_since >= NO_WORKER_GRACE_S:
            return
        await asyncio.sleep(WORKER_POLL_S)
    await asyncio.Event().wait()  # started: the answer's own timeouts take over


class _CtrlC:
    """Ctrl-C while asking. The first asks the workers to cancel the question: one still in the queue is then
    never answered and `ask` leaves at once; one being answered stops with the text so far, which `ask` waits
    for. A second Ctrl-C always leaves at once."""

    def __init__(self, bus: Bus, question_id: str) -> None:
        self.bus, self.question_id = bus, question_id
        self.presses = 0
        self.started = False  # a worker took the question
        self.leave = asyncio.Event()
        self.sending: set[asyncio.Task[None]] = set()

    def pressed(self) -> None:
        self.presses += 1
        if self.presses == 1:
            self.sending.add(asyncio.get_running_loop().create_task(self.bus.queue.request_cancel(self.question_id)))
        if self.presses > 1 or not self.started:
            self.leave.set()


async def _follow(
    bus: Bus, question_id: str, settings: ClientSettings, renderer: Renderer, ctrl_c: _CtrlC, say: Notice
) -> int:
    language = settings.bot_language
    status = EXIT_FAILED
    lost = text("redis_lost", language)
    try:
        async for event in follow_answer(bus, question_id, settings, lambda: renderer.note(lost)):
            ctrl_c.started = True
            renderer.event(event)
            if isinstance(event, Done):
                status = EXIT_OK
            elif isinstance(event, ErrorEvent):
                status = _ERROR_EXIT.get(event.code, EXIT_FAILED)
    except AnswerTimeout:
        status = say(EXIT_TIMEOUT, text("timeout_terminal", language))
    return status


def _renderer(as_json: bool, out: TextIO, err: TextIO, language: Language) -> Renderer:
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
