"""Prometheus metrics of one worker, and the /healthz + /metrics HTTP endpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from inference.errors import PortInUse
from inference.vllm_metrics import VllmMetrics
from runtime.metrics_http import Endpoint, PortsTaken, serve

__all__ = ["LIVE_QUERY", "Endpoint", "WorkerMetrics", "serve_http"]

log = logging.getLogger(__name__)

LIVE_QUERY = "live"  # `/healthz?live`: the liveness probe's question (Kubernetes: deploy/kubernetes)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class WorkerMetrics:
    """The worker's counters, on a registry of its own (no global state); `vllm` holds the same under vLLM's names
    (`inference.vllm_metrics`), labelled with the served model's name."""

    def __init__(self, model_name: str = "") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.vllm = VllmMetrics(r, model_name)
        self.queue_depth = Gauge("kullm_queue_depth", "Questions in the stream (waiting or being answered)", registry=r)
        self.inflight = Gauge("kullm_inflight", "Questions this worker is answering", registry=r)
        self.batch_size = Histogram(
            "kullm_batch_size", "Rows decoded per step", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.peak_batch = Gauge("kullm_batch_size_peak", "Largest batch decoded so far", registry=r)
        self.tokens = Counter("kullm_generated_tokens", "Tokens generated", registry=r)
        self.tokens_per_s = Gauge("kullm_tokens_per_second", "Generated tokens/s over the last step", registry=r)
        self.questions = Counter("kullm_questions", "Questions finished, by outcome", ["outcome"], registry=r)
        self.tasks = Counter(
            "kullm_tasks", "Questions answered, by task (ask, summarize, translate, proofread)", ["kind"], registry=r
        )
        self.queue_wait = Histogram(
            "kullm_queue_wait_seconds", "Enqueue to start of generation", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.first_token = Histogram(
            "kullm_time_to_first_token_seconds",
            "Start of generation to first text",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.generate = Histogram(
            "kullm_generate_seconds", "Start of generation to done", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.oom = Counter("kullm_out_of_memory", "Steps that ran out of memory", registry=r)
        self.reclaimed = Counter("kullm_reclaimed", "Questions taken over from other workers", registry=r)
        self.redis_usable = Gauge("kullm_redis_usable", "1 while Redis answers and takes writes", registry=r)
        self.redis_writes_refused = Gauge(
            "kullm_redis_writes_refused", "1 while Redis is up and refuses writes (OOM, read-only replica…)", registry=r
        )

    def watch_redis(self, problem: Callable[[], str | None]) -> None:
        """Read Redis's state from `problem` (the worker's RedisHealth: None while all is well) at each scrape."""
        self.redis_usable.set_function(lambda: 0.0 if problem() else 1.0)
        self.redis_writes_refused.set_function(lambda: 1.0 if (problem() or "").startswith("refuses writes") else 0.0)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


async def serve_http(
    host: str,
    port: int,
    metrics: WorkerMetrics,
    health: Callable[[], tuple[bool, dict[str, Any]]],
    *,
    next_free: int = 0,
) -> Endpoint:
    """Serve `/healthz` (200 when ready, 503 otherwise) and `/metrics` on `port`, or, when another process holds it,
    on the first free one of the `next_free` ports after it (said in the log); PortInUse when none is free.

    `/healthz?live` is the liveness question (`LIVE_QUERY`): 200 whenever the worker's event loop answers, loading,
    draining or waiting out a Redis outage included — restarting it then would only reload the model for nothing —
    so only a wedged process fails it."""

    async def healthz(request: web.Request) -> web.Response:
        ok, body = health()
        if LIVE_QUERY in request.query:
            return web.json_response({**body, "live": True})
        return web.json_response(body, status=200 if ok else 503)

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    try:
        return await serve(host, port, {"/healthz": healthz, "/metrics": prometheus}, next_free=next_free)
    except PortsTaken as exc:
        raise PortInUse(
            f"METRICS_PORT: {exc} (another worker on this host?): give each worker its own METRICS_PORT, or "
            "METRICS_PORT=0 for none"
        ) from None
