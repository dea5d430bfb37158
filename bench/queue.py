"""Queue benchmark: the worker loop and Redis with generation taken out.

An engine that answers at once (used only here) sits behind the real `Worker`, `Bus` and a
private `redis-server`. Measured in one run, next to the floor of a raw round trip:

- idle latency: one question at a time, enqueue → `started` and enqueue → `done` (p50/p99);
- throughput: questions/s through one worker loop with many questions queued at once.

    python -m bench.queue [--questions 5000] [--idle 300]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from chatbus import Bus, Done, Keys, Question, Started, connect
from inference.engine import GenerationRequest, GenerationUpdate, Loaded
from inference.prompt import PromptBuilder, Template
from inference.settings import WorkerSettings
from inference.worker import Worker
from testkit.redis_server import RedisServer

ANSWER = "딥러닝은 인공신경망으로 학습하는 머신러닝의 한 분야입니다."


class InstantEngine:
    """Finishes every request in the step after it was added: no model, only the loop's own cost."""

    model_id = "instant"
    logprobs = False

    def __init__(self, max_batch_size: int) -> None:
        self.max_batch_size = max_batch_size
        self.last_batch = self.last_tokens = 0
        self._requests: list[GenerationRequest] = []

    @property
    def active(self) -> int:
        return len(self._requests)

    def add(self, request: GenerationRequest) -> None:
        self._requests.append(request)

    def cancel(self, request_id: str) -> None:
        self._requests = [r for r in self._requests if r.id != request_id]

    def reset(self) -> list[str]:
        ids = [r.id for r in self._requests]
        self._requests = []
        return ids

    def close(self) -> None:
        """Nothing held."""

    def step(self) -> list[GenerationUpdate]:
        done, self._requests = self._requests, []
        self.last_batch = self.last_tokens = len(done)
        return [GenerationUpdate(r.id, ANSWER, True, "stop", 10, 20) for r in done]


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


async def ping_floor(bus: Bus, count: int) -> list[float]:
    """Raw round trips with the same client: the floor any queue operation sits on."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await bus.redis.ping()
        times.append(time.perf_counter() - started)
    return times


async def idle_latency(bus: Bus, count: int) -> tuple[list[float], list[float]]:
    """One question at a time: enqueue → started, enqueue → done."""
    to_started, to_done = [], []
    for i in range(count):
        question = Question.new("bench", f"질문 {i}", ttl_s=60)
        began = time.perf_counter()
        await bus.queue.enqueue(question)
        async for _, event in bus.answers.follow(question.id):
            if isinstance(event, Started):
                to_started.append(time.perf_counter() - began)
            elif isinstance(event, Done):
                to_done.append(time.perf_counter() - began)
    return to_started, to_done


async def throughput(bus: Bus, worker: Worker, count: int) -> float:
    """Questions/s with `count` questions queued at once, until the worker answered them all."""
    before = worker.metrics.questions.labels("done")._value.get()
    questions = [Question.new("bench", f"질문 {i}", ttl_s=600) for i in range(count)]
    began = time.perf_counter()
    async with bus.redis.pipeline(transaction=False) as pipe:
        for question in questions:
            pipe.xadd(bus.keys.questions, question.to_fields())  # type: ignore[arg-type]
        await pipe.execute()
    while worker.metrics.questions.labels("done")._value.get() - before < count:
        await asyncio.sleep(0.005)
    return count / (time.perf_counter() - began)


def redis_benchmark(port: int, requests: int) -> str:
    """`redis-benchmark -t ping` against the same server, when installed."""
    binary = shutil.which("redis-benchmark")
    if not binary:
        return "redis-benchmark not installed"
    out = subprocess.run(
        [binary, "-p", str(port), "-t", "ping", "-n", str(requests), "-c", "1", "-q"], capture_output=True, text=True
    )
    lines = out.stdout.replace("\r", "\n").splitlines()
    return " / ".join(line.strip() for line in lines if "requests per second" in line)


async def run(args: argparse.Namespace, server: RedisServer) -> str:
    redis = connect(server.url)
    bus = Bus(redis, Keys())
    settings = WorkerSettings(  # type: ignore[call-arg]
        _env_file=None, redis_url=server.url, max_batch_size=args.batch, metrics_port=0, worker_name="bench"
    )
    loaded = Loaded(InstantEngine(args.batch), PromptBuilder(Template.KULLM_V1, len, 2048))  # type: ignore[arg-type]
    worker = Worker(bus, loaded, settings)
    serving = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)
    floor = await ping_floor(bus, args.idle)
    await idle_latency(bus, 20)  # warm-up
    to_started, to_done = await idle_latency(bus, args.idle)
    rate = await throughput(bus, worker, args.questions)
    worker.request_drain()
    await serving
    await redis.aclose()
    ms = 1000
    return "\n".join(
        [
            f"queue benchmark · {args.idle} idle questions, {args.questions} queued at once, batch {args.batch}",
            "",
            "| measure | p50 | p99 |",
            "|---|---|---|",
            f"| floor: PING round trip (same client) | {pct(floor, 50) * ms:.3f} ms | {pct(floor, 99) * ms:.3f} ms |",
            f"| enqueue → started | {pct(to_started, 50) * ms:.3f} ms | {pct(to_started, 99) * ms:.3f} ms |",
            f"| enqueue → done | {pct(to_done, 50) * ms:.3f} ms | {pct(to_done, 99) * ms:.3f} ms |",
            "",
            f"throughput through one worker loop: {rate:,.0f} questions/s",
            f"redis-benchmark floor: {redis_benchmark(server.port, args.floor_requests)}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Start a private redis-server, run the measures, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=5000)
    parser.add_argument("--idle", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--floor-requests", type=int, default=20000, help="PINGs redis-benchmark sends")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            print(asyncio.run(run(args, server)))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
