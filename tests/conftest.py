"""Fixtures: a real redis-server per test (or module), the tiny trained model, workers as processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from chatbus import Bus, Keys, connect
from tests import tiny_model
from tests.servers import RUNNING_ASKS, RedisServer, WorkerProcess


def pytest_report_header() -> str:
    """The versions the engine tests ran against (`make test` runs them on the transformers floor too)."""
    import torch
    import transformers

    return f"torch {torch.__version__}, transformers {transformers.__version__}"


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The tiny KULLM stand-in, trained once and cached under .cache/."""
    return tiny_model.build()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for one test, free to be killed and restarted."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[Bus]:
    """The contract on the test's Redis."""
    client = connect(redis_server.url)
    yield Bus(client, Keys())
    await client.aclose()


@pytest.fixture
def start_worker(redis_server: RedisServer, model_dir: Path, tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Start workers on the test's Redis; all are stopped at the end."""
    workers: list[WorkerProcess] = []

    def start(wait: bool = True, **env: object) -> WorkerProcess:
        worker = WorkerProcess(redis_server.url, model_dir, tmp_path / f"worker{len(workers)}.log", **env)
        workers.append(worker)
        return worker.start(wait=wait)

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture(autouse=True)
def _reap_clients() -> Iterator[None]:
    """Background `kullm ask` clients never outlive their test."""
    yield
    while RUNNING_ASKS:
        RUNNING_ASKS.pop().close()
