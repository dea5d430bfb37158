"""Real processes the tests drive: a private redis-server, KULLM workers, `kullm ask` clients and bots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from testkit.netns import Host
from testkit.polling import wait_until
from testkit.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90.0
# The limit of the longest process tests (the soak, the GPU dry run): several times what they take on an idle
# 2-core machine, so they pass beside another job that keeps both cores busy.
BUSY_MACHINE_TIMEOUT_S = 540


def in_host(host: Host | None, argv: list[str]) -> list[str]:
    """`argv`, run in `host`'s network namespace where one is given."""
    return host.command(argv) if host else argv


class ChildProcess:
    """A process a test starts, with its output in `log_path`: read it, stop it (SIGTERM, then SIGKILL)."""

    log_path: Path
    process: subprocess.Popen[bytes] | None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait(self, timeout_s: float) -> int:
        """The exit status, once the process ends (TimeoutExpired after `timeout_s`)."""
        assert self.process is not None, "not started"
        return self.process.wait(timeout_s)

    def send_signal(self, sig: int) -> None:
        """Signal the running process (SIGSTOP freezes it, SIGCONT wakes it, SIGTERM stops it)."""
        assert self.process is not None, "not started"
        self.process.send_signal(sig)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 15 s; the exit status (None: never started)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode if self.process else None


class WorkerProcess(ChildProcess):
    """`kullm worker` (the worker image's command) with the tiny model, as a separate process."""

    host: Host | None = None  # the network namespace it runs in (None: this one)
    address = "127.0.0.1"  # where its /healthz and /metrics listen

    def __init__(self, redis_url: str, model_dir: Path, log_path: Path, **env: object) -> None:
        self.metrics_port = free_port()
        self.log_path = log_path
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "MODEL_ID": str(model_dir),
            "HF_HUB_OFFLINE": "1",
            "DO_SAMPLE": "false",
            "METRICS_HOST": "127.0.0.1",
            "METRICS_PORT": str(self.metrics_port),
            "HEARTBEAT_INTERVAL_S": "0.5",
            "RECLAIM_INTERVAL_S": "0.3",
            "RECLAIM_IDLE_S": "2",
            "DELTA_INTERVAL_S": "0.05",
            "LOG_LEVEL": "DEBUG",
            "WORKER_NAME": f"worker-{self.metrics_port}",
            "PYTHONUNBUFFERED": "1",
            **{key: str(value) for key, value in env.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None

    def on(self, host: Host) -> WorkerProcess:
        """Run in `host`'s network namespace, listening on its address (call before `start`)."""
        self.host, self.address = host, host.address
        self.env["METRICS_HOST"] = host.address
        return self

    def start(self, wait: bool = True) -> WorkerProcess:
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                in_host(self.host, [sys.executable, "-m", "kullm.cli", "worker"]),
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            wait_until(self.ready, START_TIMEOUT_S, 0.2, what=f"worker ready (log {self.log_path})")
        return self

    def health(self) -> dict[str, object] | None:
        """The /healthz body, whether it answered 200 or 503; None while nothing listens."""
        import urllib.error

        try:
            with urllib.request.urlopen(f"http://{self.address}:{self.metrics_port}/healthz", timeout=1) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as error:
            with error:
                return dict(json.loads(error.read()))
        except OSError:
            return None

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}: {self.log()[-3000:]}")
        health = self.health()
        return bool(health and health.get("status") == "ready")

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics by name (labels included in the name)."""
        with urllib.request.urlopen(f"http://{self.address}:{self.metrics_port}/metrics", timeout=2) as response:
            lines = response.read().decode().splitlines()
        samples = {}
        for line in lines:
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def terminate(self, timeout_s: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)


class StartWorker(Protocol):
    """The `start_worker` fixture: a worker process on the test's Redis, stopped after the test.

    `engine` is `builtin` (the tiny model, the real path) or `scripted` (the tiny model's answers
    without torch: starts in about a second); `env` adds worker settings (MAX_BATCH_SIZE=2 …).
    """

    def __call__(self, wait: bool = True, *, engine: str = "builtin", **env: object) -> WorkerProcess: ...


def run_kullm(
    args: list[str],
    redis_url: str,
    timeout_s: float = 60,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the `kullm` command as a user would (`stdin`: what is piped into it)."""
    return subprocess.run(
        [sys.executable, "-m", "kullm.cli", *args],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def start_kullm_up(tmp_path: Path, redis_port: int, **env: str) -> subprocess.Popen[bytes]:
    """`kullm up` in a terminal of its own: its own session and process group, as a shell gives it."""
    unset = {"REDIS_URL", "DISCORD_TOKEN", "SLACK_BOT_TOKEN"}
    environment = {key: value for key, value in os.environ.items() if key not in unset}
    environment.update(METRICS_PORT=str(free_port()), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **env)
    with (tmp_path / "up.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "kullm.cli", "up", "--redis-port", str(redis_port)],
            cwd=tmp_path,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def json_events(output: str) -> list[dict[str, Any]]:
    """Parse `kullm ask --json` output."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


RUNNING_ASKS: list[AskProcess] = []


class AskProcess:
    """`kullm ask --json` running in the background, its events collected as they stream."""

    def __init__(
        self,
        redis_url: str,
        question: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        host: Host | None = None,
    ) -> None:
        import threading

        self.process = subprocess.Popen(
            in_host(host, [sys.executable, "-m", "kullm.cli", "ask", "--json", question, *args]),
            cwd=ROOT,
            env={**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, object]] = []
        self.arrived_s: list[float] = []  # time.monotonic() at which each event was read
        self.err_lines: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        RUNNING_ASKS.append(self)

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                if line.strip():
                    self.arrived_s.append(time.monotonic())
                    self.events.append(json.loads(line))

    def _read_err(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            self.err_lines.extend(self.process.stderr)

    def close(self) -> None:
        """Stop the client if it still runs and wait for its pipes to close."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for reader in self._readers:
            reader.join(5)

    def types(self) -> list[object]:
        return [e["type"] for e in self.events]

    def wait_for(self, event_type: str, timeout_s: float = 60) -> dict[str, object]:
        def found() -> dict[str, object] | None:
            return next((e for e in self.events if e["type"] == event_type), None)

        event = wait_until(found, timeout_s, what=event_type)
        assert event is not None
        return event

    def finish(self, timeout_s: float = 90) -> int:
        code = self.process.wait(timeout_s)
        for reader in self._readers:
            reader.join(5)
        return code

    @property
    def question_id(self) -> str:
        return str(self.wait_for("queued")["id"])

    def stderr(self) -> str:
        return "".join(self.err_lines)

    def final(self) -> dict[str, Any]:
        return self.events[-1]

    def text_after_last_restart(self) -> str:
        """The answer a client assembles from deltas, starting over at each `restart`."""
        text = ""
        for event in self.events:
            if event["type"] == "restart":
                text = ""
            elif event["type"] == "delta":
                text += str(event["text"])
        return text


def worker_name(worker: WorkerProcess) -> str:
    return str(worker.env["WORKER_NAME"])


class BotProcess(ChildProcess):
    """`kullm <adapter>` (the bot image's command) as a separate process, so tests can SIGKILL and restart it."""

    def __init__(
        self,
        adapter: str,
        log_path: Path,
        env: Mapping[str, str],
        descriptors: int | None = None,
        host: Host | None = None,
    ) -> None:
        self.adapter = adapter
        self.host = host
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.descriptors = descriptors  # a hard limit on open files (`ulimit -Hn`), as a small host has
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BotProcess:
        command = [sys.executable, "-m", "kullm.cli", self.adapter]
        if self.descriptors is not None:
            limit = f"resource.setrlimit(resource.RLIMIT_NOFILE, ({self.descriptors}, {self.descriptors}))"
            run = "sys.argv[0] = 'kullm'; runpy.run_module('kullm.cli', run_name='__main__')"
            command = [sys.executable, "-c", f"import resource, runpy, sys; {limit}; {run}", self.adapter]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                in_host(self.host, command),
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def stop(self) -> int | None:
        """SIGTERM and wait (call through asyncio.to_thread while a loopback server must keep serving)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


BIND_TRIES = 3  # starts of `transformers serve` when another process took its port first


class ServeProcess(ChildProcess):
    """`transformers serve` (its OpenAI-compatible server) on a model folder: ENGINE=openai's other side."""

    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        *,
        device: str = "cpu",
        continuous_batching: bool = False,
        threads: int | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.log_path = log_path
        self.threads = threads  # its torch threads (OMP_NUM_THREADS); None: torch's default
        self.port = free_port()
        self.options = ["--device", device, *(["--continuous-batching"] if continuous_batching else [])]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def continuous_batching(self) -> bool:
        """Whether the running server was started with `--continuous-batching` (read from its command line)."""
        args = self.process.args if self.process is not None else None
        return isinstance(args, list) and "--continuous-batching" in args

    def start(self) -> ServeProcess:
        """Start it and wait until it answers. The port was free when picked, but the server binds it only after
        loading the model: another test's process (a redis-server) may take it meanwhile, and then it starts again
        on a fresh port (at most BIND_TRIES times)."""
        for attempt in range(1, BIND_TRIES + 1):
            self._spawn()
            try:
                wait_until(self.ready, START_TIMEOUT_S, 0.2, what=f"transformers serve ready (log {self.log_path})")
                return self
            except AssertionError as exc:
                if "address already in use" not in str(exc) or attempt == BIND_TRIES:
                    raise
                self.port = free_port()
        return self

    def _spawn(self) -> None:
        # Through this interpreter, not a `transformers` script beside it: a GPU host's Python has none there.
        command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(self.model_dir)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = str(self.threads)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([*command, *self.options], env=env, stdout=log, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"transformers serve exited with {self.process.returncode}: {self.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False
