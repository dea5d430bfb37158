"""Soak and fault runs of the whole service; writes docs/RELIABILITY.md from what it measured.

Everything real and on this machine: a redis-server with AOF (as compose runs it), two worker
processes with the tiny model, the Discord and Slack bots as processes against the loopback
stand-ins, and terminal clients on the queue contract. Every question must end with exactly one
final answer, in the right thread, with the trained text — checked against the stand-ins' records.

    python -m bench.soak [--questions 300 --users 60] [--kill-trials 10] [--redis-trials 3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.formatting import to_slack_mrkdwn
from chatbus import Bus, Done, Keys, Question, QueueFull, connect, decode_event
from tests import tiny_model
from tests.discord_standin import DiscordStandIn
from tests.discord_standin import _user as discord_user
from tests.servers import ROOT, BotProcess, RedisServer, WorkerProcess
from tests.slack_standin import SlackStandIn

ASKED = [
    ("딥러닝이 뭐야?", tiny_model.DEEP_LEARNING),
    ("한국의 수도는 어디야?", tiny_model.CAPITAL),
    ("고려대학교는 어디에 있어?", tiny_model.KOREA_UNIV),
    ("인사해줘", tiny_model.GREETING),
    ("내 이름은 민수야", tiny_model.NAME_ANSWER),
]
ADAPTER_ENV = {
    "USER_QUESTIONS_PER_MINUTE": "1000",
    "USER_CONCURRENT_QUESTIONS": "100",
    "MAX_QUEUE": "2000",
    "LEASE_TTL_S": "2",
    "DISCORD_EDIT_INTERVAL_S": "0.5",
    "SLACK_EDIT_INTERVAL_S": "0.5",
}
WORKER_ENV = {"RECLAIM_IDLE_S": "2", "MAX_BATCH_SIZE": "16", "DELTA_INTERVAL_S": "0.2", "LOG_LEVEL": "INFO"}


@dataclass
class Scenario:
    """One row of the reliability table."""

    name: str
    runs: int = 0
    questions: int = 0
    answered_once: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Service:
    """The running service under test."""

    tmp: Path
    redis: RedisServer
    workers: list[WorkerProcess]
    discord: DiscordStandIn
    slack: SlackStandIn
    bots: list[BotProcess]
    bus: Bus

    def start_worker(self, index: int) -> WorkerProcess:
        worker = WorkerProcess(self.redis.url, tiny_model.build(), self.tmp / f"worker{index}.log", **WORKER_ENV)
        self.workers.append(worker.start(wait=False))
        return worker


async def start_service(tmp: Path) -> Service:
    redis = RedisServer(tmp / "redis", appendonly=True)
    redis.start()
    discord, slack = DiscordStandIn(), SlackStandIn()
    await discord.start(point_discord_py=False)
    await slack.start()
    service = Service(tmp, redis, [], discord, slack, [], Bus(connect(redis.url), Keys()))
    for index in range(2):
        service.start_worker(index)
    progress("waiting for workers")
    await until(lambda: all(w.ready() for w in service.workers), 120)
    progress("workers ready; starting bots")
    env = {"REDIS_URL": redis.url, **ADAPTER_ENV}
    service.bots = [
        BotProcess(
            "discord",
            tmp / "discord.log",
            {
                **env,
                "DISCORD_TOKEN": discord.token,
                "DISCORD_API_BASE": discord.api_base,
                "DISCORD_GUILD_IDS": str(discord.guild_id),
            },
        ).start(),
        BotProcess(
            "slack",
            tmp / "slack.log",
            {
                **env,
                "SLACK_BOT_TOKEN": slack.bot_token,
                "SLACK_APP_TOKEN": slack.app_token,
                "SLACK_API_BASE": slack.api_base,
            },
        ).start(),
    ]
    # on_ready: discord.py has the guild loaded (it waits for GUILD_CREATE before reporting ready).
    await until(lambda: "connected to Discord" in service.bots[0].log() and slack.connections >= 1, 60)
    return service


async def until(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(interval_s)
    raise TimeoutError(f"condition not met within {timeout_s}s")


async def terminal_ask(bus: Bus, question: str, user: str) -> list[Any]:
    """What `kullm ask` does: enqueue, then follow to the end (riding out a Redis restart)."""
    item = Question.new("terminal", question, ttl_s=600, user=user)
    await bus.enqueue(item)
    return await _follow_all(bus, item.id)


async def soak(service: Service, questions: int, users: int, rows: list[Scenario]) -> dict[str, Any]:
    """`questions` from `users` simulated people over Discord, Slack and the terminal, all at once-ish."""
    d, s = service.discord, service.slack
    row = Scenario("soak: Discord + Slack + terminal, 2 workers", runs=1, questions=questions)
    rng = random.Random(7)
    discord_asks: list[tuple[int, str]] = []
    slack_asks: list[tuple[str, str]] = []
    terminal: list[tuple[asyncio.Task[list[Any]], str]] = []
    started = time.monotonic()
    for n in range(questions):
        user = n % users
        question, expected = ASKED[rng.randrange(len(ASKED))]
        platform = ("discord", "slack", "terminal")[user % 3]
        if platform == "discord":
            author = discord_user(2200000000000000000 + user, f"user{user}", None)
            d.users[int(author["id"])] = author  # a guild member, as everyone who can post there is
            d.member_roles.setdefault(int(author["id"]), [])
            message = await d.send_message(d.channel_id, author, f"<@{d.bot_id}> {question}", mention_bot=True)
            discord_asks.append((int(message["id"]), expected))
        elif platform == "slack":
            message = await s.post_user_message(
                s.channel_id, f"U{user:06d}", f"<@{s.bot_user_id}> {question}", mention=True
            )
            slack_asks.append((message["ts"], expected))
        else:
            terminal.append((asyncio.create_task(terminal_ask(service.bus, question, f"user{user}")), expected))
        await asyncio.sleep(rng.uniform(0, 0.05))

    def discord_done() -> bool:
        return all(_discord_final(d, mid) is not None for mid, _ in discord_asks)

    def slack_done() -> bool:
        return all(_slack_final(s, ts) is not None for ts, _ in slack_asks)

    progress(f"all {questions} asked; waiting for answers")
    results = await asyncio.gather(*(task for task, _ in terminal))
    progress("terminal answers in")
    try:
        await until(lambda: discord_done() and slack_done(), args_timeout(questions), 0.5)
    except TimeoutError:
        for bot in service.bots:
            progress(f"{bot.adapter} log tail:\n{bot.log()[-2500:]}")
        raise
    elapsed = time.monotonic() - started
    await asyncio.sleep(2)  # anything posted twice would show up now
    for mid, expected in discord_asks:
        _grade(row, [m["content"] for m in _discord_bot_messages(d, mid)], expected)
    for ts, expected in slack_asks:
        _grade(row, [m["text"] for m in s.thread(s.channel_id, ts) if m.get("bot_id")], to_slack_mrkdwn(expected))
    for events, (_, expected) in zip(results, terminal, strict=True):
        _grade(row, [e.text for e in events if isinstance(e, Done)], expected)
    waits = await _queue_waits(service.bus)
    memory = (await service.bus.redis.info("memory"))["used_memory_peak_human"]
    row.notes.append(
        f"{questions} questions from {users} users in {elapsed:.0f} s; queue wait p50 "
        f"{_pct(waits, 50):.2f} s, p99 {_pct(waits, 99):.2f} s; Redis peak memory {memory!s}"
    )
    rows.append(row)
    return {"elapsed_s": elapsed, "waits": waits}


async def busy(service: Service, rows: list[Scenario]) -> None:
    """Past MAX_QUEUE users are told the service is busy, and nothing already queued is lost."""
    row = Scenario("burst past MAX_QUEUE (terminal clients)", runs=1)
    limit = await service.bus.queue_depth() + 20
    accepted: list[asyncio.Task[list[Any]]] = []
    refused = 0
    for n in range(60):
        item = Question.new("terminal", "한국의 수도는 어디야?", ttl_s=600, user=f"burst{n}")
        try:
            await service.bus.enqueue(item, max_queue=limit)
        except QueueFull:
            refused += 1
            continue
        accepted.append(asyncio.create_task(_follow_all(service.bus, item.id)))
    for events in await asyncio.gather(*accepted):
        row.questions += 1
        _grade(row, [e.text for e in events if isinstance(e, Done)], tiny_model.CAPITAL)
    row.notes.append(f"{refused} of 60 refused as busy (exit 3 / 🚦 message); every accepted one answered")
    rows.append(row)


async def worker_kills(service: Service, trials: int, rows: list[Scenario]) -> None:
    """SIGKILL the worker answering a long question at a random point; another one finishes it."""
    row = Scenario("worker SIGKILLed at a random point of generation", runs=trials, questions=trials)
    rng = random.Random(11)
    for trial in range(trials):
        item = Question.new("terminal", "긴 이야기를 들려줘", ttl_s=600, user="killer")
        await service.bus.enqueue(item)
        events: list[Any] = []
        follower = asyncio.create_task(_follow_all(service.bus, item.id, events))
        started = await until(lambda seen=events: next((e for e in seen if e.type == "started"), None), 60)
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        victim = next(w for w in service.workers if w.env["WORKER_NAME"] == started.worker)
        victim.kill()
        service.workers.remove(victim)
        service.start_worker(100 + trial)
        events = await follower
        _grade(row, [e.text for e in events if isinstance(e, Done)], tiny_model.LONG_STORY)
    await until(lambda: all(w.ready() for w in service.workers), 120)
    rows.append(row)


async def redis_restarts(service: Service, trials: int, rows: list[Scenario]) -> None:
    """Kill Redis (SIGKILL) while questions are queued and answered; restart it on its AOF."""
    row = Scenario("Redis SIGKILLed under load, restarted with AOF", runs=trials)
    for _ in range(trials):
        items = [Question.new("terminal", q, ttl_s=600, user="aof") for q, _ in ASKED * 4]
        for item in items:
            await service.bus.enqueue(item)
        service.redis.kill()
        await asyncio.sleep(0.5)
        service.redis.start()  # same port and directory: the AOF is replayed
        results = await asyncio.gather(*(_follow_all(service.bus, item.id) for item in items))
        for item, events in zip(items, results, strict=True):
            row.questions += 1
            _grade(row, [e.text for e in events if isinstance(e, Done)], dict(ASKED)[item.question])
    rows.append(row)


async def _follow_all(bus: Bus, question_id: str, sink: list[Any] | None = None) -> list[Any]:
    events = sink if sink is not None else []
    after = "0-0"
    while True:
        try:
            async for event_id, event in bus.follow(question_id, after=after, start_timeout_s=300, stall_timeout_s=300):
                after = event_id
                events.append(event)
            return events
        except (ConnectionError, OSError):
            await asyncio.sleep(0.2)


def args_timeout(questions: int) -> float:
    """How long answers may take to arrive: generous, two workers on two cores."""
    return 60 + questions * 2


def progress(message: str) -> None:
    """A line on stderr, so a long run shows where it is."""
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _grade(row: Scenario, finals: list[str], expected: str) -> None:
    if not finals:
        row.lost += 1
    elif len(finals) > 1:
        row.duplicated += 1
    elif finals[0] != expected:
        row.wrong += 1
    else:
        row.answered_once += 1


def _discord_bot_messages(d: DiscordStandIn, message_id: int) -> list[dict[str, Any]]:
    return [m for m in d.messages_in(message_id) if int(m["author"]["id"]) == d.bot_id and not m.get("components")]


def _discord_final(d: DiscordStandIn, message_id: int) -> dict[str, Any] | None:
    messages = _discord_bot_messages(d, message_id)
    return messages[0] if messages and not messages[0]["content"].startswith("⏳") else None


def _slack_final(s: SlackStandIn, ts: str) -> dict[str, Any] | None:
    replies = [m for m in s.thread(s.channel_id, ts) if m.get("bot_id") and not m.get("blocks")]
    return replies[0] if replies else None


async def _queue_waits(bus: Bus) -> list[float]:
    waits = []
    async for key in bus.redis.scan_iter(match=bus.keys.answers("*"), count=500):
        for _, fields in await bus.redis.xrevrange(key, count=1):
            event = decode_event(fields)
            if isinstance(event, Done):
                waits.append(event.queued_s)
    return waits


def _pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else 0.0


def render(rows: list[Scenario], command: str) -> str:
    lines = [
        "# Reliability",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} (this file is its output; do not edit by hand).",
        "Each question must end with exactly one final answer with the expected text, in the right thread.",
        "",
        "| scenario | runs | questions | answered once | lost | duplicated | wrong text |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.runs} | {row.questions} | {row.answered_once} | {row.lost} | "
            f"{row.duplicated} | {row.wrong} |"
        )
    lines.append("")
    lines += [f"- {row.name}: {note}" for row in rows for note in row.notes]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> int:
    rows: list[Scenario] = []
    with tempfile.TemporaryDirectory() as directory:
        service = await start_service(Path(directory))
        try:
            progress("service up; soak")
            await soak(service, args.questions, args.users, rows)
            progress("burst past MAX_QUEUE")
            await busy(service, rows)
            progress("worker kills")
            await worker_kills(service, args.kill_trials, rows)
            progress("redis restarts")
            await redis_restarts(service, args.redis_trials, rows)
        finally:
            for bot in service.bots:
                await asyncio.to_thread(bot.stop)
            for worker in service.workers:
                await asyncio.to_thread(worker.stop)
            await service.bus.redis.aclose()
            await service.discord.stop()
            await service.slack.stop()
            service.redis.stop()
    command = "python -m bench.soak " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "output"
    )
    report = render(rows, command)
    print(report)
    Path(args.output).write_text(report)
    failures = sum(r.lost + r.duplicated + r.wrong for r in rows)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--kill-trials", type=int, default=10)
    parser.add_argument("--redis-trials", type=int, default=3)
    parser.add_argument("--output", default=str(ROOT / "docs" / "RELIABILITY.md"))
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
