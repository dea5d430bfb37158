"""Engines with injected faults, selected with ENGINE=testkit.faults:<factory> in worker processes.

Each wraps the real `BuiltinEngine` on the tiny model (or, with FAULTS_INNER=scripted, the
scripted engine of testkit/engines.py) and adds one failure, raised the way the real engine
raises it (out of memory as `EngineOutOfMemory`). `ModelsFront` puts one fault in front of a real
engine server instead.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import redis
from aiohttp import web

from inference.engine import DelegatingEngine, GenerationRequest, GenerationUpdate, Loaded
from inference.errors import EngineOutOfMemory
from inference.settings import WorkerSettings
from testkit.redis_server import free_port

POISON = "💣"


def _inner(settings: WorkerSettings) -> Loaded:
    """The engine a fault wraps: the tiny model, or the scripted engine (FAULTS_INNER=scripted, no torch)."""
    if os.environ.get("FAULTS_INNER") == "scripted":
        from testkit.engines import scripted

        return scripted(settings)
    from inference.engines import builtin

    return builtin.build(settings)


class PoisonEngine(DelegatingEngine):
    """Every step fails while a question containing 💣 is in the batch."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.poisoned: set[str] = set()

    def add(self, request: GenerationRequest) -> None:
        if POISON in request.prompt:
            self.poisoned.add(request.id)
        super().add(request)

    def cancel(self, request_id: str) -> None:
        self.poisoned.discard(request_id)
        super().cancel(request_id)

    def reset(self) -> list[str]:
        self.poisoned.clear()
        return super().reset()

    def step(self) -> list[GenerationUpdate]:
        if self.poisoned:
            raise RuntimeError("injected failure: poisoned question in the batch")
        return super().step()


class OutOfMemoryOnce(DelegatingEngine):
    """The first step with more than one question runs out of memory."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.fired = False

    def step(self) -> list[GenerationUpdate]:
        if not self.fired and self.inner.active > 1:
            self.fired = True
            raise EngineOutOfMemory("injected: CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().step()


class OutOfMemorySometimes(DelegatingEngine):
    """A GPU with room for OOM_ABOVE rows: larger batches run out of memory at random (OOM_RATE per step)."""

    def __init__(self, inner: Any, above: int, rate: float, seed: str) -> None:
        super().__init__(inner)
        self.above, self.rate = above, rate
        self.rng = random.Random(seed)

    def step(self) -> list[GenerationUpdate]:
        batch = min(self.inner.max_batch_size, self.inner.active)  # rows this step decodes or prefills
        if batch > self.above and self.rng.random() < self.rate:
            raise EngineOutOfMemory("injected: CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().step()


class Paced(DelegatingEngine):
    """Every step takes at least `step_s`: the tiny model, as slow as a bigger one, so a fault can strike while an
    answer is still being written (the tiny model alone writes the long story in well under a second)."""

    def __init__(self, inner: Any, step_s: float) -> None:
        super().__init__(inner)
        self.step_s = step_s

    def step(self) -> list[GenerationUpdate]:
        started = time.monotonic()
        updates = super().step()
        if self.inner.active:
            time.sleep(max(0.0, self.step_s - (time.monotonic() - started)))
        return updates


class RefuseWritesAtFinish(DelegatingEngine):
    """The step that finishes the first answer also makes Redis refuse writes (`maxmemory` under what it holds,
    `noeviction`), so that answer's last events and its ack are left in the worker's outbox. The test lifts it."""

    def __init__(self, inner: Any, redis_url: str) -> None:
        super().__init__(inner)
        self.redis_url = redis_url
        self.fired = False

    def step(self) -> list[GenerationUpdate]:
        updates = super().step()
        if not self.fired and any(update.finished for update in updates):
            self.fired = True
            admin = redis.Redis.from_url(self.redis_url)
            try:
                admin.set("ballast", b"x" * 2_000_000)
                admin.config_set("maxmemory-policy", "noeviction")
                admin.config_set("maxmemory", 1_000_000)
            finally:
                admin.close()
        return updates


def paced(settings: WorkerSettings) -> Loaded:
    """ENGINE=testkit.faults:paced, with PACE_STEP_S (default 0.01)."""
    loaded = _inner(settings)
    return Loaded(Paced(loaded.engine, float(os.environ.get("PACE_STEP_S", "0.01"))), loaded.prompts)


def poison(settings: WorkerSettings) -> Loaded:
    """ENGINE=testkit.faults:poison"""
    loaded = _inner(settings)
    return Loaded(PoisonEngine(loaded.engine), loaded.prompts)


def oom_once(settings: WorkerSettings) -> Loaded:
    """ENGINE=testkit.faults:oom_once"""
    loaded = _inner(settings)
    return Loaded(OutOfMemoryOnce(loaded.engine), loaded.prompts)


def oom_random(settings: WorkerSettings) -> Loaded:
    """ENGINE=testkit.faults:oom_random, with OOM_ABOVE (default 4) and OOM_RATE (default 0.3)."""
    loaded = _inner(settings)
    above, rate = int(os.environ.get("OOM_ABOVE", "4")), float(os.environ.get("OOM_RATE", "0.3"))
    engine = OutOfMemorySometimes(loaded.engine, above, rate, os.environ.get("WORKER_NAME", ""))
    return Loaded(engine, loaded.prompts)


def refuse_at_finish(settings: WorkerSettings) -> Loaded:
    """ENGINE=testkit.faults:refuse_at_finish"""
    loaded = _inner(settings)
    return Loaded(RefuseWritesAtFinish(loaded.engine, settings.redis_url), loaded.prompts)


class ModelsFront:
    """An HTTP front for a real OpenAI-compatible server: it passes every request through, streams included, but
    answers the first `times` `GET /v1/models` (all of them when None) with `status` itself.

    500 is what transformers serve 5.17 answers there on a host with no Hugging Face cache (a fresh container, the
    GPU check's host: `huggingface_hub.errors.CacheNotFound`, while completions work); 503 is what a proxy answers
    while the server behind it starts.
    """

    def __init__(self, upstream: str, status: int, times: int | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream = f"{parts.scheme}://{parts.netloc}"
        self.status = status
        self.times = times
        self.models_asked = 0
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="models-front", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ModelsFront:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and request.path.endswith("/models"):
            self.models_asked += 1
            if self.times is None or self.models_asked <= self.times:
                return web.Response(status=self.status, text="Internal Server Error")
        body = await request.read()
        async with (
            aiohttp.ClientSession() as session,
            session.request(request.method, self.upstream + request.path_qs, data=body, headers=request.headers) as up,
        ):
            response = web.StreamResponse(status=up.status)
            response.content_type = up.content_type
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
