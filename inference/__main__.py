"""`python -m inference` (also `kullm worker`): load the model once and serve the queue.

While the model loads, the worker is already in the worker list as loading, so `kullm ask` and `kullm status`
can tell a worker on its way from no worker at all. A configuration it cannot serve (a model that cannot be found
or does not fit, a GPU torch cannot use, a metrics port in use) is one line on stderr and exit status 2, which
`kullm up` does not restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from typing import Any

from pydantic import ValidationError

from chatbus import Bus, WorkerStatus
from chatbus.config import settings_problem
from inference.engine import engine_factory, new_engine_thread
from inference.errors import InferenceError
from inference.metrics import Endpoint, WorkerMetrics, serve_http
from inference.settings import WorkerSettings
from inference.worker import Worker
from runtime.logs import configure_logging

log = logging.getLogger("inference")

# With METRICS_PORT left at its default, a second worker on the host takes the first free port of the next few.
METRICS_PORT_SEARCH = 16


async def serve(settings: WorkerSettings) -> int:
    """Load the model, then run the worker until SIGTERM/SIGINT drains it."""
    metrics = WorkerMetrics(settings.served_name)
    worker: Worker | None = None

    def health() -> tuple[bool, dict[str, Any]]:
        if worker is None:
            return False, {"status": "loading", "model": settings.served_name}
        return worker.health()

    endpoint: Endpoint | None = None
    if settings.metrics_port:
        search = 0 if "metrics_port" in settings.model_fields_set else METRICS_PORT_SEARCH
        endpoint = await serve_http(settings.metrics_host, settings.metrics_port, metrics, health, next_free=search)
    log.info("redis: %s", settings.redis_said)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: worker.request_drain() if worker else stop.set())
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    engine_thread = new_engine_thread()  # loads the model, then steps it: torch work on one thread only
    announcing = asyncio.create_task(_announce_loading(bus, settings))
    try:
        load = engine_factory(settings.engine)
        loading = asyncio.ensure_future(loop.run_in_executor(engine_thread, load, settings))
        stopped = asyncio.ensure_future(stop.wait())
        either: list[asyncio.Future[Any]] = [loading, stopped]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        announcing.cancel()
        if not loading.done():
            log.info("stopped while loading the model")
            return 0
        loaded = loading.result()
        log.info("model %s ready", settings.model_id)
        worker = Worker(bus, loaded, settings, metrics, engine_thread)
        await worker.run()
        return 0
    finally:
        announcing.cancel()
        if worker is None:  # never served: leave no loading record behind
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.workers.forget(settings.worker_name), 2)
        await bus.aclose()
        engine_thread.shutdown(wait=False)
        if endpoint:
            await endpoint.cleanup()


async def _announce_loading(bus: Bus, settings: WorkerSettings) -> None:
    """Keep a `loading` record in the worker list until the worker's own heartbeat replaces it."""
    while True:
        status = WorkerStatus(
            name=settings.worker_name,
            model=settings.served_name,
            active=0,
            slots=settings.max_batch_size,
            seen_at=time.time(),
            heartbeat_s=settings.heartbeat_interval_s,
            loading=True,
        )
        with contextlib.suppress(Exception):  # Redis not there yet: the worker says so once it serves
            await bus.workers.report(status)
        await asyncio.sleep(settings.heartbeat_interval_s)


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    try:
        settings = WorkerSettings()
    except ValidationError as exc:
        print(settings_problem(exc), file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        return asyncio.run(serve(settings))
    except InferenceError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
