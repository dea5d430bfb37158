"""End to end on the GPU: a real worker with the 12.8B random-weight shape, many `kullm ask` at once.

The worker is `kullm worker` as a process (`ENGINE=testkit.random_weights:random_weights_engine`,
`MODEL_ID=random:<architecture>`: the real shape, random fp16 weights, nothing downloaded) on the
given Redis. After one warm-up question, `--clients` `kullm ask --json` processes start together;
each event's arrival is timed as the client prints it. Reported: enqueue → first delta and
enqueue → done percentiles (enqueue = the client's `queued` line, printed right after its XADD),
tokens/s across the burst, and the largest batch the worker ran. Exit 1 unless every question
got exactly one `done`.

    python -m bench.gpu.e2e --redis-url redis://127.0.0.1:6379/0 [--architecture polyglot-ko-12.8b]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.engine import QUESTIONS
from testkit.polling import wait_until
from testkit.processes import AskProcess, WorkerProcess
from testkit.random_weights import ARCHITECTURES, RANDOM_PREFIX
from testkit.tiny_model import build


@dataclass(frozen=True)
class Timing:
    """One client's answer, seconds after its enqueue."""

    first_delta_s: float
    done_s: float
    completion_tokens: int
    done_at: float
    queued_at: float


def timing(client: AskProcess) -> Timing | None:
    """None unless the client saw `queued` and exactly one `done`, and exited 0.

    The first text is the first `delta`, or the `done` of an answer finished within one delta interval.
    """
    types = client.types()
    if client.process.returncode != 0 or types.count("done") != 1 or "queued" not in types:
        return None
    at = dict(zip(types[::-1], client.arrived_s[::-1], strict=True))  # the first arrival of each type
    done = next(e for e in client.events if e["type"] == "done")
    first_text = at.get("delta", at["done"])
    return Timing(
        first_text - at["queued"],
        at["done"] - at["queued"],
        int(str(done["completion_tokens"])),
        at["done"],
        at["queued"],
    )


def start_worker(args: argparse.Namespace) -> WorkerProcess:
    """`kullm worker` serving the random-weight shape with the seed's sampling."""
    worker = WorkerProcess(
        args.redis_url,
        build(),
        args.worker_log,
        ENGINE="testkit.random_weights:random_weights_engine",
        MODEL_ID=f"{RANDOM_PREFIX}{args.architecture}",
        DEVICE=args.device,
        DTYPE="auto",
        MAX_BATCH_SIZE=args.clients,
        DO_SAMPLE="true",
        CUDA_GRAPHS=args.cuda_graphs,
        RECLAIM_IDLE_S=60,
        RECLAIM_INTERVAL_S=2,
        HEARTBEAT_INTERVAL_S=5,
        DELTA_INTERVAL_S=0.2,
        LOG_LEVEL="INFO",
    ).start(wait=False)
    wait_until(worker.ready, args.ready_timeout_s, 0.5, what=f"worker ready (log {args.worker_log})")
    return worker


def burst(args: argparse.Namespace) -> list[AskProcess]:
    """Start every client at once and wait for all of them."""
    options = ["--max-new-tokens", str(args.new_tokens)]
    clients = [AskProcess(args.redis_url, QUESTIONS[i % len(QUESTIONS)], *options) for i in range(args.clients)]
    deadline = time.monotonic() + args.burst_timeout_s
    for client in clients:
        try:
            client.finish(max(1.0, deadline - time.monotonic()))
        except Exception:  # a hung client counts as unanswered below
            client.close()
    return clients


def report(args: argparse.Namespace, timings: list[Timing], clients: int, peak_batch: float) -> str:
    first = [t.first_delta_s for t in timings]
    done = [t.done_s for t in timings]
    tokens = sum(t.completion_tokens for t in timings)
    wall = max(t.done_at for t in timings) - min(t.queued_at for t in timings)
    return "\n".join(
        [
            f"end to end: kullm worker ({args.architecture}, random weights, {args.device}, seed sampling, "
            f"CUDA_GRAPHS={args.cuda_graphs}) · "
            f"{clients} concurrent `kullm ask` · up to {args.new_tokens} new tokens each",
            "",
            "| measure | p50 | p95 | max |",
            "|---|---|---|---|",
            f"| enqueue → first delta | {_p(first, 50):.3f}s | {_p(first, 95):.3f}s | {max(first):.3f}s |",
            f"| enqueue → done | {_p(done, 50):.3f}s | {_p(done, 95):.3f}s | {max(done):.3f}s |",
            "",
            f"answered {len(timings)}/{clients} · {tokens} tokens in {wall:.2f}s = {tokens / wall:,.1f} tokens/s · "
            f"largest batch {peak_batch:.0f}",
        ]
    )


def _p(values: list[float], pct: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def main(argv: list[str] | None = None) -> int:
    """Run the burst and print the table; exit 1 if any question was not answered once."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="polyglot-ko-12.8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--cuda-graphs", choices=["auto", "true", "false"], default="auto", help="the worker's CUDA_GRAPHS"
    )
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--worker-log", type=Path, default=Path("e2e-worker.log"))
    parser.add_argument("--ready-timeout-s", type=float, default=150)
    parser.add_argument("--burst-timeout-s", type=float, default=150)
    args = parser.parse_args(argv)
    worker = start_worker(args)
    try:
        warm_up = AskProcess(args.redis_url, QUESTIONS[0], "--max-new-tokens", "8")
        if warm_up.finish(args.burst_timeout_s) != 0:
            print(f"the warm-up question failed: {warm_up.stderr()[-2000:]}", file=sys.stderr)
            return 1
        clients = burst(args)
        peak_batch = worker.metrics().get("kullm_batch_size_peak", float("nan"))
    finally:
        worker.stop()
    timings = [t for t in map(timing, clients) if t is not None]
    for client in clients:
        if timing(client) is None:
            print(f"unanswered: exit {client.process.returncode}, events {client.types()}", file=sys.stderr)
            print(client.stderr()[-1000:], file=sys.stderr)
    if timings:
        print(report(args, timings, len(clients), peak_batch))
    return 0 if len(timings) == len(clients) else 1


if __name__ == "__main__":
    sys.exit(main())
