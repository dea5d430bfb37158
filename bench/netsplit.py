"""A multi-host run on one machine; writes docs/MULTIHOST.md from what it measured.

Three network namespaces joined by virtual links through a bridge (testkit.netns): `core` holds Redis (AOF, a
password, TLS) and what stands in for Discord and Slack; `gpu-a` holds a worker; `gpu-b` holds a worker and the
front-ends beside it (the Discord and Slack bots, `kullm ask`). The GPU hosts' loopback is down, so everything
goes over their links, encrypted.

Each round asks a stream of questions over Discord, Slack and `kullm ask`, cuts gpu-a off (its link down) while
its worker writes an answer, keeps asking while it is away, and checks that gpu-b's worker takes over what gpu-a
held and that every question ends with exactly one answer, the right one. Then it brings the link back and checks
that the returning worker is fenced off (its late writes reach no asker and change nothing in Redis) and that it
answers questions again.

    python -m bench.netsplit [--rounds 3] [--questions 24] [--engine builtin|scripted]

It needs root to make namespaces; without, it says why in one line and exits 0 (1 with `--require`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.soak import (
    ASKED,
    LONG,
    Ask,
    Scenario,
    Service,
    grade,
    leftovers,
    platform_of,
    progress,
    settle,
    streamed_text,
)
from chatbus import Bus, Keys, connect
from testkit import netns
from testkit.polling import eventually
from testkit.processes import ROOT, WorkerProcess, worker_name
from testkit.redis_server import RedisServer
from testkit.standins.discord import DiscordStandIn
from testkit.standins.slack import SlackStandIn

TAKEN_OVER = 'kullm_questions_total{outcome="taken_over"}'  # a worker's: what it dropped, found taken over
RECLAIMED = "kullm_reclaimed_total"  # a worker's: what it took over from others
CATCH_TRIES = 12  # long questions asked one by one until gpu-a's worker is the one writing
STREAM_GAP_S = 0.4  # between the questions of the stream
QUIET_S = 3.0  # after gpu-a is back: time for any late write of its to show up
OUTER_TIMEOUT_S = 1500


@dataclass
class Round:
    """One cut: the questions' outcomes, and the times the table reports."""

    outcome: Scenario
    takeover_s: float = 0.0  # link down → the asker of the answer cut off sees it start over from the other worker
    settled_s: float = 0.0  # link down → every question asked so far has its answer
    rejoin_s: float = 0.0  # link back → gpu-a's worker is ready again
    reclaimed: int = 0  # questions gpu-b's worker took over from gpu-a's
    fenced: int = 0  # questions gpu-a's worker held while away, whose writes were dropped on its return


async def catch_writing(service: Service, victim: WorkerProcess, base: int, asks: list[Ask]) -> Ask | None:
    """Ask long questions one at a time (into `asks`) until `victim` is writing one: it has streamed part of it."""
    for attempt in range(CATCH_TRIES):
        asked = await service.ask("terminal", LONG[0], base + attempt)
        asks.append(asked)
        started = await _within(lambda a=asked: _event(a, "started"), 60)
        if started and started["worker"] == worker_name(victim):
            begun = await _within(lambda a=asked: _event(a, "delta") or _event(a, "done"), 30)
            if begun and begun["type"] == "delta":
                return asked
        await settle(service, [asked], 120)  # the other worker took it: let it finish, and ask again
    return None


async def one_round(
    service: Service, net: netns.Network, victim: WorkerProcess, survivor: WorkerProcess, trial: int, questions: int
) -> Round:
    row = Round(Scenario(f"round {trial + 1}: gpu-a cut off mid-answer, then back", runs=1))
    base = 20000 + 1000 * trial
    asks: list[Ask] = []

    async def stream(count: int, first: int) -> None:
        for n in range(count):
            user = first + n
            asks.append(await service.ask(platform_of(user), ASKED[user % len(ASKED)][0], user))
            await asyncio.sleep(STREAM_GAP_S)

    before = asyncio.create_task(stream(questions // 2, base))
    caught = await catch_writing(service, victim, base + 500, asks)
    if caught is None:
        await before
        row.outcome.fail(f"gpu-a's worker never took one of {CATCH_TRIES} long questions")
        return row
    fenced_before, reclaimed_before = _count(victim, TAKEN_OVER), _count(survivor, RECLAIMED)
    net.cut(net.gpu_a)
    cut_at = time.monotonic()
    progress(f"round {trial + 1}: gpu-a cut off while writing {caught.question!r}")
    during = asyncio.create_task(stream(questions - questions // 2, base + questions // 2))
    restarted = await _within(lambda: _event(caught, "restart"), 60)
    row.takeover_s = time.monotonic() - cut_at
    if restarted is None:
        row.outcome.fail("the answer gpu-a was writing never started over on gpu-b")
    await before
    await during
    await settle(service, asks, 180)
    row.settled_s = time.monotonic() - cut_at
    grade(service, row.outcome, asks)
    if streamed_text(caught.events) != caught.expected:
        row.outcome.fail("the answer cut off mid-stream was streamed with text that is not its own")
    shown = {id(a): service.finals(a) for a in asks}
    written = await _answer_lengths(service, asks)

    net.restore(net.gpu_a)
    back_at = time.monotonic()
    await _within(lambda: asyncio.to_thread(victim.ready), 120)  # /healthz blocks up to a second: off the loop
    row.rejoin_s = time.monotonic() - back_at
    await _within(lambda: _count(victim, TAKEN_OVER) > fenced_before, 30)
    row.fenced = _count(victim, TAKEN_OVER) - fenced_before
    row.reclaimed = _count(survivor, RECLAIMED) - reclaimed_before
    if not row.fenced:
        row.outcome.fail("gpu-a's worker came back without finding the answer it was writing taken over")
    await asyncio.sleep(QUIET_S)
    if {id(a): service.finals(a) for a in asks} != shown:
        row.outcome.fail("an answer shown to an asker changed after gpu-a came back")
    if await _answer_lengths(service, asks) != written:
        row.outcome.fail("an answer stream in Redis grew after gpu-a came back (a late write was not fenced)")

    wave = [await service.ask(platform_of(n), ASKED[n % len(ASKED)][0], base + 700 + n) for n in range(6)]
    returned = await catch_writing(service, victim, base + 800, wave)
    await settle(service, wave, 120)
    grade(service, row.outcome, wave)
    if returned is None:
        row.outcome.fail("gpu-a's worker answered nothing after it came back")
    row.outcome.stuck += await leftovers(service)
    return row


async def _answer_lengths(service: Service, asks: list[Ask]) -> dict[str, int]:
    """Events in each terminal question's answer stream in Redis (the chat ones are checked as shown)."""
    ids = [str(_event(a, "queued")["id"]) for a in asks if a.platform == "terminal" and _event(a, "queued")]
    return {qid: int(await service.bus.redis.xlen(service.bus.keys.answers(qid))) for qid in ids}


def _count(worker: WorkerProcess, sample: str) -> int:
    return int(worker.metrics().get(sample, 0))


def _event(asked: Ask, kind: str) -> dict[str, Any] | None:
    return next((e for e in asked.events if e["type"] == kind), None)


async def _within(probe: Callable[[], Any], timeout_s: float) -> Any:
    """`eventually`'s value, or None when the condition did not hold in time (the round says what went wrong)."""
    try:
        return await eventually(probe, timeout_s, 0.05)
    except TimeoutError:
        return None


async def inside(args: argparse.Namespace) -> int:
    """The run itself, in core's namespace (see `main`)."""
    net = netns.Network(args.inside)
    tmp = Path(args.tmp)
    password = secrets.token_urlsafe(24)
    redis = RedisServer(tmp / "redis", appendonly=True, password=password, tls=True, host=net.core.address)
    redis.start()
    discord, slack = DiscordStandIn(), SlackStandIn()
    await discord.start(point_discord_py=False, host=net.core.address)
    await slack.start(host=net.core.address)
    service = Service(tmp, redis, discord, slack, Bus(connect(redis.url), Keys()), engine=args.engine, front=net.gpu_b)
    rounds: list[Round] = []
    try:
        victim = service.start_worker("gpu-a", host=net.gpu_a)
        survivor = service.start_worker("gpu-b", host=net.gpu_b)
        progress("waiting for the workers on gpu-a and gpu-b")
        await eventually(lambda: asyncio.to_thread(lambda: all(w.ready() for w in service.workers)), 180, 0.2)
        await service.start_bots()
        for trial in range(args.rounds):
            rounds.append(await one_round(service, net, victim, survivor, trial, args.questions))
    finally:
        with contextlib.suppress(Exception):
            net.restore(net.gpu_a)
        await service.stop_bots()
        await service.stop_workers()
        await service.bus.redis.aclose()
        await discord.stop()
        await slack.stop()
        redis.stop()
    report = render(rounds, args)
    print(report)
    Path(args.output).write_text(report)
    return 1 if any(r.outcome.failures for r in rounds) or len(rounds) < args.rounds else 0


def render(rounds: list[Round], args: argparse.Namespace) -> str:
    command = f"python -m bench.netsplit --rounds {args.rounds} --questions {args.questions} --engine {args.engine}"
    lines = [
        "# Several hosts",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} (this file is its output; do not edit by hand).",
        "Three network namespaces joined by veth links through a bridge: `core` (Redis with AOF, a password and",
        "TLS; the Discord and Slack stand-ins), `gpu-a` (a worker) and `gpu-b` (a worker, the Discord and Slack bots",
        "and `kullm ask`). Only core's loopback is up. Each round asks a stream of questions, cuts gpu-a's link while",
        "its worker writes an answer, keeps asking, then brings the link back and asks again. Times are from the cut",
        "(takeover: the asker sees the answer start over; settled: every answer shown) and from the return (rejoin:",
        "gpu-a's worker is ready). Reclaimed: questions gpu-b's worker took over from gpu-a's (its metrics). Fenced:",
        "questions gpu-a's worker held while cut off and dropped on return, their writes refused (its metrics).",
        "Workers take over after RECLAIM_IDLE_S=2 without a heartbeat (the soak's setting; the default is 30).",
        "",
        "| round | questions | answered once | lost | duplicated | wrong | stuck | takeover s | settled s | rejoin s "
        "| reclaimed | fenced |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        o = r.outcome
        lines.append(
            f"| {o.name} | {o.questions} | {o.answered_once} | {o.lost} | {o.duplicated} | {o.wrong} | {o.stuck} "
            f"| {r.takeover_s:.1f} | {r.settled_s:.1f} | {r.rejoin_s:.1f} | {r.reclaimed} | {r.fenced} |"
        )
    if rounds:
        span = [min(r.takeover_s for r in rounds), max(r.takeover_s for r in rounds)]
        lines += [
            "",
            f"Takeover {span[0]:.1f}–{span[1]:.1f} s (median {statistics.median(r.takeover_s for r in rounds):.1f}).",
        ]
    lines += [f"- {r.outcome.name}: {note}" for r in rounds for note in r.outcome.notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=24, help="questions in each round's stream")
    parser.add_argument("--engine", choices=("builtin", "scripted"), default="builtin")
    parser.add_argument("--output", default=str(ROOT / "docs" / "MULTIHOST.md"))
    parser.add_argument("--require", action="store_true", help="exit 1, not 0, where namespaces cannot be made")
    parser.add_argument("--inside", help=argparse.SUPPRESS)  # the network's tag: run in core's namespace
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        return asyncio.run(inside(args))
    reason = netns.unavailable()
    if reason:
        print(f"bench.netsplit skipped: {reason}")
        return 1 if args.require else 0
    options = ["--rounds", str(args.rounds), "--questions", str(args.questions), "--engine", args.engine]
    with netns.Network() as net, tempfile.TemporaryDirectory() as tmp:
        argv_inside = [sys.executable, "-m", "bench.netsplit", *options, "--output", str(Path(args.output).resolve())]
        command = net.core.command([*argv_inside, "--inside", net.tag, "--tmp", tmp])
        with subprocess.Popen(command, cwd=ROOT) as run:
            try:
                return run.wait(OUTER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                run.kill()
                print(f"bench.netsplit: no result within {OUTER_TIMEOUT_S} s")
                return 1


if __name__ == "__main__":
    raise SystemExit(main())
