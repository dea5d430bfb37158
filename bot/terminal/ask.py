"""`kullm ask`: the queue from a terminal (`kullm status` and the other operator commands: kullm/operator.py).

`ask` enqueues a question with the same refusals the chat adapters give and prints the
answer as it streams (`bot.terminal.render`): a live view on a terminal, plain text when piped, JSON lines with
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
import signal
import sys
import time
from typing import Any, TextIO

from bot.follow import follow_answer
from bot.limits import check_question
from bot.settings import ClientSettings
from bot.terminal.render import Notice, Renderer, notice_for, redis_failed, renderer_for
from bot.texts import Language, text
from chatbus import (
    AnswerTimeout,
    Bus,
    BusDown,
    BusError,
    Done,
    ErrorEvent,
    Question,
    QueueFull,
    Task,
)
from runtime.exits import (
    EXIT_BUSY,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INPUT,
    EXIT_NO_WORKER,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_TIMEOUT,
)

_ERROR_EXIT = {"too_long": EXIT_INPUT, "overloaded": EXIT_BUSY, "cancelled": EXIT_CANCELLED}


CANCEL_SEND_S = 2.0  # leaving with Ctrl-C waits this long at most for the cancel flag to reach Redis


# A queue with no worker at all this long is said so: long enough for a worker started just after the question (by
# `kullm up`, or by hand) to put its loading record in the list — a second or two, more on a busy machine — and
# short against the question's lifetime (QUESTION_TTL_S, 10 minutes), which it used to wait out.
NO_WORKER_GRACE_S = 10.0


WORKER_POLL_S = 1.0


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
        return await _ask(bus, item, settings, renderer_for(as_json, out, err, language), say)
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
        await asyncio.wait_for(bus.answers.cancel(question_id), CANCEL_SEND_S)


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
            self.sending.add(asyncio.get_running_loop().create_task(self.bus.answers.cancel(self.question_id)))
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
