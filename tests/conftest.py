"""Fixtures: a real redis-server per test, the tiny trained model, workers in-process and as processes.

Every test that starts a process other than redis-server is an `e2e` test, marked automatically:
by the fixtures it uses (`PROCESS_FIXTURES`) or by the process helpers its code names
(`PROCESS_HELPERS`). A guard makes the marker provably complete: a test without it that starts
a process fails and says so. `make unit` runs the rest (`-m "not e2e"`).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatbus import Bus, Keys, connect
from inference.engine import Engine, Loaded
from inference.metrics import WorkerMetrics
from inference.worker import Worker
from testkit import engines, tiny_model
from testkit.engines import SCRIPTED, RunWorker, worker_settings
from testkit.processes import RUNNING_ASKS, ServeProcess, StartWorker, WorkerProcess
from testkit.redis_server import RedisServer

# Under pytest-xdist every test process (and each worker process it starts) would run torch with one thread per
# core: N test processes on N cores then fight over them, and torch's tests ran three times slower side by side.
# Each takes its share of the cores instead; set before anything imports torch, and inherited by child processes.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    )

LOST_GROUPS = pytest.StashKey[str]()
IN_PROCESS_STEP_S = 0.002  # half the tiny model's pace: the long story streams in about 0.7 s
PROCESS_FIXTURES = {"start_worker", "discord_env", "slack_env_fixture", "gpu_bundle", "engine_server"}
PROCESS_HELPERS = re.compile(
    r"\b(WorkerProcess|AskProcess|BotProcess|ServeProcess|run_kullm|start_kullm_up|subprocess\.(run|Popen|check_output|check_call)|"
    r"asyncio\.create_subprocess_exec)\b"
)


def pytest_report_header() -> str:
    """The versions the engine tests ran against (`make test` runs them on the transformers floor too)."""
    from importlib.metadata import version  # not the packages themselves: importing torch here costs seconds

    return f"torch {version('torch')}, transformers {version('transformers')}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `e2e` every test that starts processes: through a fixture, or a helper its own code names."""
    for item in items:
        if not isinstance(item, pytest.Function) or item.get_closest_marker("e2e"):
            continue
        if PROCESS_FIXTURES & set(item.fixturenames) or PROCESS_HELPERS.search(inspect.getsource(item.function)):
            item.add_marker(pytest.mark.e2e)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`make unit` (`-m "not e2e"`) does not even import a module whose tests are all e2e (it saves seconds)."""
    if config.getoption("markexpr", "") != "not e2e" or not collection_path.name.startswith("test_"):
        return None
    return "\npytestmark = pytest.mark.e2e" in collection_path.read_text(encoding="utf-8") or None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Train the tiny models (when their cache is cold) before the first test, outside every per-test timeout.

    `make test` trains it in its own step first; this covers a bare `pytest` on a fresh clone.
    """
    if any("model_dir" in getattr(item, "fixturenames", ()) for item in session.items):
        tiny_model.build()
    if any("judge_model_dir" in getattr(item, "fixturenames", ()) for item in session.items):
        from testkit import judge_model

        judge_model.build()
    _refuse_lost_groups(session)


def _refuse_lost_groups(session: pytest.Session) -> None:
    """Under `--dist loadgroup`, pytest-xdist suffixes each grouped test's id with `@group`, and schedules by it.
    Some pytest releases silently defeat that (pytest-dev/pytest-xdist#1386): the groups would run apart. Then
    every test fails at setup with the reason (an error raised here would only crash the xdist worker)."""
    if not getattr(session.config.option, "loadgroup", False):  # set in xdist workers under --dist loadgroup
        return
    lost = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        session.config.stash[LOST_GROUPS] = (
            f"pytest-xdist did not group {len(lost)} tests marked xdist_group (first: {lost[0]}): this pytest "
            "and pytest-xdist do not work together; reinstall with the versions pyproject.toml allows"
        )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if LOST_GROUPS in item.config.stash:
        pytest.fail(item.config.stash[LOST_GROUPS], pytrace=False)


@pytest.fixture(autouse=True)
def _processes_only_in_e2e(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked e2e starts no Python or shell process (workers, clients, bots, scripts):
    `make unit` stays fast, and the automatic marker provably complete. redis-server may run."""
    if request.node.get_closest_marker("e2e"):
        return
    popen_init = subprocess.Popen.__init__

    def guarded(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        program = str(args[0] if isinstance(args, list | tuple) else args).split()[0]
        if program == sys.executable or Path(program).name.startswith(("python", "bash", "sh", "kullm")):
            raise AssertionError(
                f"{request.node.nodeid} starts {program!r} but is not an e2e test: "
                "start it through a process fixture or helper (tests/conftest.py marks those)"
            )
        popen_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The tiny KULLM stand-in, trained before the session (`make tiny-model` or the collection hook above)."""
    return tiny_model.build()


@pytest.fixture(scope="session")
def judge_model_dir() -> Path:
    """The tiny judge (`testkit.judge_model`): replies to kullm-2023 judge prompts with six score lines."""
    from testkit import judge_model

    return judge_model.build()


@pytest.fixture(scope="session")
def engine_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """`transformers serve` on the tiny model, for ENGINE=openai: one per test process, started when first asked for."""
    server = ServeProcess(model_dir, tmp_path_factory.mktemp("serve") / "serve.log").start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for one test, free to be killed and restarted."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()  # what it holds is thrown away: SIGKILL saves the graceful shutdown's 0.1 s per test


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[Bus]:
    """The contract on the test's Redis."""
    client = connect(redis_server.url)
    yield Bus(client, Keys())
    await client.aclose()


@pytest.fixture
def start_worker(redis_server: RedisServer, model_dir: Path, tmp_path: Path) -> Iterator[StartWorker]:
    """Start worker processes on the test's Redis; all are stopped at the end."""
    workers: list[WorkerProcess] = []

    def start(wait: bool = True, *, engine: str = "builtin", **env: object) -> WorkerProcess:
        if engine == "scripted":
            env = {"ENGINE": SCRIPTED, **env}
        worker = WorkerProcess(redis_server.url, model_dir, tmp_path / f"worker{len(workers)}.log", **env)
        workers.append(worker)
        return worker.start(wait=wait)

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
async def run_worker(bus: Bus, redis_server: RedisServer, model_dir: Path) -> AsyncIterator[RunWorker]:
    """Workers in this test's loop: `scripted` (the tiny model's answers, no model), or an ENGINE (`builtin`,
    `paged`, `openai`) on the tiny model itself. Loop, Redis and fencing are the real ones; no process to start."""
    serving: list[tuple[Worker, asyncio.Task[None]]] = []

    def run(engine: str = "scripted", wrap: Callable[[Engine], Engine] | None = None, **settings: Any) -> Worker:
        config = worker_settings(redis_server.url, worker_name=f"inprocess-{len(serving)}", **settings)
        if engine != "scripted":  # builtin, paged, or openai (its ENGINE_URL in `settings`) on the tiny model
            from inference.engine import engine_factory

            config = config.model_copy(update={"model_id": str(model_dir), "do_sample": False, "hf_hub_offline": True})
            loaded = engine_factory(engine)(config)
        else:
            scripted = engines.ScriptedEngine(config.max_batch_size, step_s=IN_PROCESS_STEP_S)
            loaded = Loaded(scripted, engines.scripted_prompts(config))
        if wrap is not None:  # a fault from testkit/faults.py around the engine
            loaded = Loaded(wrap(loaded.engine), loaded.prompts)
        worker = Worker(bus, loaded, config, WorkerMetrics())
        serving.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield run
    for worker, _ in serving:
        worker.request_drain()
    await asyncio.wait_for(asyncio.gather(*(task for _, task in serving)), 30)


@pytest.fixture
async def worker(run_worker: RunWorker) -> Worker:
    """One in-process worker on the scripted engine."""
    return run_worker()


@pytest.fixture(autouse=True)
def _reap_clients() -> Iterator[None]:
    """Background `kullm ask` clients never outlive their test."""
    yield
    while RUNNING_ASKS:
        RUNNING_ASKS.pop().close()
