"""`kullm eval run`: every item asked through the queue — so the deployment's own workers answer it exactly as chat
members get answers — then judged, each answer and judgment written as it arrives (a rerun continues), and the
report written at the end (`kullm.eval.report`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bot.follow import follow_answer
from bot.limits import check_question
from bot.settings import ClientSettings
from bot.terminal.render import redis_failed
from chatbus import AnswerTimeout, Bus, BusError, Done, ErrorEvent, Question, QueueFull
from kullm.eval import report
from kullm.eval.items import Item, load_items
from kullm.eval.judge import Judge, JudgeRefused, JudgeUnavailable
from kullm.eval.protocols import Protocol, read_reply
from kullm.eval.scoring import Reply, sampled_scores, weighted_scores
from kullm.eval.store import (
    Answer,
    Judgment,
    answers_in,
    append,
    fingerprint,
    judge_folder,
    judgments_in,
    mend,
    read_json,
    write_json,
)
from runtime.exits import EXIT_FAILED, EXIT_INPUT, EXIT_NO_WORKER, EXIT_OK

Advance = Callable[[str], None]  # moves the "answered" or the "judged" progress bar one item on
PLATFORM = "eval"  # the questions' platform in `kullm usage` and the workers' logs
READ_TRIES = 3  # replies asked for one judgment before it is recorded unreadable (the first at temperature 0)
RETRY_TEMPERATURE = 0.7  # a judge asked again after an unreadable reply: at 0 it would write the same again
SAMPLE_TEMPERATURE = 1.0  # a judge without log-probabilities: several replies sampled, their scores averaged
JUDGE_FAILURES_STOP = 5  # judgments in a row the judge did not answer: it is down, the run stops (and resumes)
WORKER_WAIT_S = 600.0  # how long a run waits for a worker that is still loading its model
QUEUE_FULL_WAIT_S = 2.0


@dataclass(frozen=True)
class Options:
    """What `kullm eval run` was asked to do (its options; the judge's key from JUDGE_API_KEY)."""

    protocol: Protocol
    judge_url: str
    judge_model: str
    judge_key: str | None
    out: Path
    limit: int | None = None
    concurrency: int = 4
    channel: str | None = None  # PLATFORM:CHANNEL whose persona the questions carry
    samples: int = 5
    judge_timeout_s: float = 120.0
    judge_backoff_s: float = 2.0
    feedback_since: float | None = None


class RunStopped(Exception):
    """The run cannot go on (no worker, mixed workers, the judge refuses or is down): one line, and an exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


async def deployment_of(bus: Bus, wait_s: float = WORKER_WAIT_S) -> dict[str, str]:
    """What the live workers report answering with; waits for one still loading its model. RunStopped when none
    serves, or when they differ (their answers would not be one deployment's)."""
    deadline = time.monotonic() + wait_s
    while True:
        listed = (await bus.workers.stats()).workers
        workers = [w for w in listed if not w.loading and not w.draining]
        if workers:
            break
        if time.monotonic() > deadline or not listed:
            raise RunStopped("no worker serves this queue: start one (`kullm worker`, `kullm up`)", EXIT_NO_WORKER)
        await asyncio.sleep(1.0)
    kinds = {tuple(sorted(w.deployment.items())) for w in workers}
    if len(kinds) > 1 or not workers[0].deployment:
        described = "; ".join(f"{w.name}: {w.deployment or 'an older worker (reports nothing)'}" for w in workers)
        raise RunStopped(
            f"the workers on this queue answer differently, so no run can name one deployment: {described}"
        )
    return dict(workers[0].deployment)


class Evaluation:
    """One run: the items still to answer and judge, the judge, and the files they go to."""

    def __init__(self, bus: Bus, settings: ClientSettings, options: Options, judge: Judge, persona: str) -> None:
        self.bus, self.settings, self.options, self.judge = bus, settings, options, judge
        self.persona = persona
        self.protocol = options.protocol
        self.asking = asyncio.Semaphore(options.concurrency)
        self.judging = asyncio.Semaphore(options.concurrency)
        self.failures_in_a_row = 0
        self.unanswered = 0
        self.answer_tokens = 0

    async def item(self, item: Item, answer: Answer | None, answers: Path, judgments: Path, done: Advance) -> None:
        """Ask (unless answered before), then judge; `done("answered" | "judged")` as each is written."""
        if answer is None:
            async with self.asking:
                answer = await self.ask(item)
            if answer is None:  # not answered this time (expired, overloaded, failed): asked again on a rerun
                self.unanswered += 1
                return
            append(answers, answer)
            self.answer_tokens += answer.completion_tokens
            done("answered")
        if answer.answer is None:
            done("judged")  # nothing to judge: the report counts it unanswered
            return
        async with self.judging:
            judgment = await self.judgment(item, answer.answer)
        append(judgments, judgment)
        done("judged")

    async def ask(self, item: Item) -> Answer | None:
        """The deployment's answer, through the queue like any member's question; None when it gave none this time
        (a permanent refusal, too long for the model, is an answer with its `error`)."""
        refusal = check_question(self.settings, item.instruction, item.input)
        if refusal:
            return Answer(id=item.id, answer=None, error=f"refused: {refusal}")
        question = Question.new(
            PLATFORM,
            item.instruction,
            ttl_s=self.settings.question_ttl_s,
            context=item.input,
            instructions=self.persona,
            user="kullm-eval",
            channel=self.options.channel or "",
        )
        while True:
            try:
                await self.bus.queue.enqueue(question, self.settings.max_queue)
                break
            except QueueFull:  # others' questions first: the evaluation waits its turn
                await asyncio.sleep(QUEUE_FULL_WAIT_S)
        try:
            async for event in follow_answer(self.bus, question.id, self.settings):
                if isinstance(event, Done):
                    return Answer(
                        id=item.id,
                        answer=event.text,
                        finish_reason=event.finish_reason,
                        prompt_tokens=event.prompt_tokens,
                        completion_tokens=event.completion_tokens,
                        model=event.model,
                        template=event.template,
                        engine=event.engine,
                    )
                if isinstance(event, ErrorEvent):
                    if event.code == "too_long":
                        return Answer(id=item.id, answer=None, error=f"too_long: {event.message}")
                    return None
        except AnswerTimeout:
            return None
        except asyncio.CancelledError:  # Ctrl-C: the workers stop on it too
            with contextlib.suppress(BusError):
                await asyncio.shield(self.bus.answers.cancel(question.id))
            raise
        return None

    async def judgment(self, item: Item, answer: str) -> Judgment:
        messages = self.protocol.messages(item, answer)
        replies: list[Reply] = []
        try:
            judgment = await self._scored(item, messages, replies)
            self.failures_in_a_row = 0
        except JudgeUnavailable as exc:
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= JUDGE_FAILURES_STOP:
                raise RunStopped(f"the judge at {self.options.judge_url} is not answering: {exc}") from exc
            judgment = Judgment(id=item.id, raw=[r.text for r in replies], unscored=f"judge_error: {exc}")
        return judgment.model_copy(
            update={
                "prompt_tokens": sum(r.prompt_tokens for r in replies),
                "completion_tokens": sum(r.completion_tokens for r in replies),
            }
        )

    async def _scored(self, item: Item, messages: list[dict[str, str]], replies: list[Reply]) -> Judgment:
        """Scores by log-probabilities (the first reply at temperature 0, READ_TRIES in all while unreadable); by
        the mean of `samples` sampled replies once the judge shows it has none (more, up to READ_TRIES - 1, while
        none is readable); else unreadable. Every reply asked for is kept in `replies`."""
        while len(replies) < READ_TRIES and self.judge.logprobs:
            reply = await self.judge.reply(messages, 0.0 if not replies else RETRY_TEMPERATURE)
            replies.append(reply)
            scores = weighted_scores(self.protocol, reply) if reply.tokens is not None else None
            if scores is not None and reply.tokens is not None:
                tokens = [[t.text, t.logprob, [list(a) for a in t.top]] for t in reply.tokens]
                return self._judged(item, replies, reply, scores, "logprobs", tokens)
        if not self.judge.logprobs:
            sampled: list[Reply] = []
            most = self.options.samples + READ_TRIES - 1
            while len(sampled) < self.options.samples or (
                sampled_scores(self.protocol, sampled) is None and len(sampled) < most
            ):
                sampled.append(await self.judge.reply(messages, SAMPLE_TEMPERATURE))
                replies.append(sampled[-1])
            scores = sampled_scores(self.protocol, sampled)
            if scores is not None:
                first = next(r for r in sampled if read_reply(self.protocol, r.text) is not None)
                return self._judged(item, replies, first, scores, "samples")
        return Judgment(id=item.id, raw=[r.text for r in replies], unscored="unreadable")

    def _judged(
        self,
        item: Item,
        replies: list[Reply],
        read: Reply,
        scores: dict[str, float],
        method: str,
        tokens: list[Any] | None = None,
    ) -> Judgment:
        written = {key: score.value for key, score in (read_reply(self.protocol, read.text) or {}).items()}
        raw = [r.text for r in replies]
        return Judgment(id=item.id, raw=raw, logprobs=tokens, scores=scores, written=written, method=method)


async def _persona(bus: Bus, channel: str | None) -> str:
    if not channel:
        return ""
    platform, _, key = channel.partition(":")
    if not platform or not key:
        raise RunStopped("--channel is PLATFORM:CHANNEL, e.g. discord:123456789", EXIT_INPUT)
    persona = await bus.personas.get(platform, key)
    if persona is None:
        raise RunStopped(f"{channel} has no persona (set one with /kullm-설정 persona)", EXIT_INPUT)
    return persona.text


def _folders(options: Options, deployment: dict[str, str]) -> tuple[Path, Path]:
    """The deployment's folder and this protocol-and-judge's within it, made and described."""
    answered = options.out / fingerprint(deployment)
    judged = answered / judge_folder(options.protocol.name, options.judge_model, options.judge_url)
    judged.mkdir(parents=True, exist_ok=True)
    write_json(answered / "deployment.json", deployment)
    described = {"protocol": options.protocol.name, "judge_url": options.judge_url, "judge_model": options.judge_model}
    if (judged / "run.json").exists():
        described = read_json(judged / "run.json") | described
    write_json(judged / "run.json", described)
    return answered, judged


async def run(settings: ClientSettings, options: Options, console: Console | None = None) -> int:
    console = console or Console(stderr=True)
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    try:
        return await _run(bus, settings, options, console)
    except RunStopped as exc:
        console.print(f"kullm eval: {exc}", markup=False, soft_wrap=True)
        return exc.status
    except BusError as exc:
        return redis_failed(exc, settings)
    finally:
        await bus.aclose()


async def _run(bus: Bus, settings: ClientSettings, options: Options, console: Console) -> int:
    deployment = await deployment_of(bus)
    persona = await _persona(bus, options.channel)
    if persona:
        deployment["persona"] = hashlib.sha256(persona.encode()).hexdigest()[:12]
    answered, judged = _folders(options, deployment)
    for path in (answered / "answers.jsonl", judged / "judgments.jsonl"):
        mend(path)
    items = load_items(options.limit)
    answers, judgments = answers_in(answered), judgments_in(judged)
    finished = {i.id for i in items if i.id in judgments and judgments[i.id].final}
    todo = [i for i in items if i.id not in answers or i.id not in finished]
    console.print(
        f"deployment {answered.name} ({deployment['preset']}, {deployment['engine']}): {len(items)} items, "
        f"{sum(i.id in answers for i in items)} answered and {len(finished)} judged before; "
        f"judge {options.judge_model} at {options.judge_url}; results in {judged}",
        markup=False,
        soft_wrap=True,
    )
    async with aiohttp.ClientSession() as session:
        judge = Judge(
            session,
            options.judge_url,
            options.judge_model,
            options.judge_key,
            timeout_s=options.judge_timeout_s,
            backoff_s=options.judge_backoff_s,
        )
        evaluation = Evaluation(bus, settings, options, judge, persona)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, TimeRemainingColumn(), console=console, transient=False) as progress:
            bars = {
                "answered": progress.add_task(
                    "answered", total=len(items), completed=sum(i.id in answers for i in items)
                ),
                "judged": progress.add_task("judged  ", total=len(items), completed=len(items) - len(todo)),
            }
            tasks = [
                asyncio.ensure_future(
                    evaluation.item(
                        item,
                        answers.get(item.id),
                        answered / "answers.jsonl",
                        judged / "judgments.jsonl",
                        lambda kind: progress.advance(bars[kind]),
                    )
                )
                for item in todo
            ]
            try:
                await asyncio.gather(*tasks)
            except (JudgeRefused, RunStopped) as exc:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise RunStopped(f"{exc} (what was done is kept: run the same command again to go on)") from exc
    console.print(
        f"this run: {len(todo) - evaluation.unanswered} items, {evaluation.answer_tokens:,} answer tokens generated; "
        f"judge: {judge.prompt_tokens:,} prompt + {judge.completion_tokens:,} completion tokens",
        markup=False,
        soft_wrap=True,
    )
    if evaluation.unanswered:
        console.print(f"{evaluation.unanswered} items got no answer this time: run again to ask them", markup=False)
    votes = await report.feedback_rates(bus, deployment, options.feedback_since)
    written = report.write(judged, items, options.protocol, votes)
    sys.stdout.write(written)
    return EXIT_OK
