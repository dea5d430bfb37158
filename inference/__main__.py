"""`python -m inference` (also `kullm worker`): load the model once and serve the queue."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from pydantic import ValidationError

from chatbus import Bus, Keys, connect
from inference.engine import engine_factory, new_engine_thread
from inference.errors import InferenceError
from inference.metrics import WorkerMetrics, serve_http
from inference.settings import WorkerSettings
from inference.worker import Worker

log = logging.getLogger("inference")


def configure_logging(level: str) -> None:
    """One logging set-up per process; ids and counts only, never user text."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def serve(settings: WorkerSettings) -> int:
    """Load the model, then run the worker until SIGTERM/SIGINT drains it."""
    metrics = WorkerMetrics()
    worker: Worker | None = None

    def health() -> tuple[bool, dict[str, Any]]:
        if worker is None:
            return False, {"status": "loading", "model": settings.model_id}
        return worker.health()

    runner = None
    if settings.metrics_port:
        runner = await serve_http(settings.metrics_host, settings.metrics_port, metrics, health)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: worker.request_drain() if worker else stop.set())
    engine_thread = new_engine_thread()  # loads the model, then steps it: torch work on one thread only
    try:
        load = engine_factory(settings.engine)
        loading = asyncio.ensure_future(loop.run_in_executor(engine_thread, load, settings))
        stopped = asyncio.ensure_future(stop.wait())
        either: list[asyncio.Future[Any]] = [loading, stopped]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not loading.done():
            log.info("stopped while loading the model")
            return 0
        loaded = loading.result()
        log.info("model %s ready", settings.model_id)
        redis = connect(settings.redis_url, settings.redis_password)
        worker = Worker(Bus(redis, Keys(settings.key_prefix)), loaded, settings, metrics, engine_thread)
        await worker.run()
        await redis.aclose()
        return 0
    finally:
        engine_thread.shutdown(wait=False)
        if runner:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    try:
        settings = WorkerSettings()
    except ValidationError as exc:
        print(f"invalid worker settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        return asyncio.run(serve(settings))
    except InferenceError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
