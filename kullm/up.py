"""`kullm up`: the compose services as local processes, for hosts without Docker (and for the tests).

Redis: `REDIS_URL` when it is set (environment or `.env`); otherwise a private redis-server (AOF on, data
under `.kullm/redis`) on the port it used last in this directory (recorded in `.kullm/redis.json`, so clients
waiting through a restart find it again), else `--redis-port` (6379) — or on a free port when another Redis or
program holds that one. A Redis found on the port is used only when it is this directory's own private one, left
running. Every `kullm` command and adapter started in this directory without REDIS_URL reads the record and uses
the same Redis (`chatbus.config`). Then the worker (`--demo`: with the demo model) and each chat adapter whose
token is set.

Each child runs in its own process group, so a Ctrl-C in the terminal reaches `kullm up` alone, which stops
them in order: the adapters, then the workers (they drain: answers in hand are finished), then Redis, so
nothing in flight is lost. A second Ctrl-C stops everything at once. A child that crashes is restarted with
backoff; one that exits with a configuration error (status 2: model not found, bad token) is reported and
left stopped, and when nothing but Redis is left, `kullm up` stops and exits 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bot.settings import DiscordSettings, SlackSettings
from chatbus import redact_url
from chatbus.config import DATA_DIR, RedisRecord
from inference.demo import DEMO_QUESTIONS
from inference.presets import DEMO_PRESET
from inference.settings import WorkerSettings
from runtime.exits import EXIT_CONFIG

log = logging.getLogger("kullm.up")

LOCAL_HOST = "127.0.0.1"
STOP_MARGIN_S = 15.0  # past the worker's drain period (DRAIN_GRACE_S) before it is killed
ADAPTER_STOP_S = 20.0
REDIS_STOP_S = 30.0
RESTART_DELAY_S = 1.0
RESTART_DELAY_MAX_S = 30.0
HEALTHY_RUN_S = 60.0  # a child that ran this long before exiting gets its backoff reset
ADAPTERS = ("discord", "slack")
DEFAULT_REDIS_PORT = 6379
_PR_SET_PDEATHSIG = 1


class UpError(Exception):
    """What stops `kullm up` before it starts anything: one line, exit 2."""


@dataclass
class Service:
    """One supervised child process."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stop_s: float = ADAPTER_STOP_S
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    failed: bool = False  # exited with a configuration error: not restarted


@dataclass
class Plan:
    """What `kullm up` runs, and which Redis it uses (said at start)."""

    redis_url: str
    redis_said: str
    services: list[Service]
    private: bool = False  # a Redis of this directory's own, recorded for the clients


def plan(data_dir: Path = DATA_DIR, redis_port: int | None = None, *, demo: bool = False) -> Plan:
    """The Redis to use and the services to run, from the environment and `.env`."""
    extra = {"MODEL": DEMO_PRESET} if demo else {}
    discord, slack = DiscordSettings(), SlackSettings()
    worker = WorkerSettings(model=DEMO_PRESET) if demo else WorkerSettings()
    services: list[Service] = []
    private = "redis_url" not in discord.model_fields_set
    if not private:
        url = discord.redis_url
        said = f"REDIS_URL {redact_url(url)}"
    else:
        record = RedisRecord.read(data_dir)
        wanted = redis_port or (record.port if record else DEFAULT_REDIS_PORT)
        port, said, redis = _private_redis(data_dir.resolve() / "redis", wanted, fixed=redis_port is not None)
        RedisRecord(port, str(data_dir.resolve() / "redis")).write(data_dir)
        url = RedisRecord(port, "").url
        if redis is not None:
            services.append(redis)
    python = sys.executable
    services.append(Service("worker", [python, "-m", "inference"], stop_s=worker.drain_grace_s + STOP_MARGIN_S))
    if discord.discord_token is not None:
        services.append(Service("discord", [python, "-m", "bot", "discord"]))
    if slack.slack_bot_token is not None:
        services.append(Service("slack", [python, "-m", "bot", "slack"]))
    for service in services:
        service.env = {**os.environ, **extra, "REDIS_URL": url}
    return Plan(url, said, services, private)


def _private_redis(directory: Path, port: int, *, fixed: bool = False) -> tuple[int, str, Service | None]:
    """This directory's own redis-server: left running from before, or one to start — on `port`, else (when another
    Redis or program holds it) on 6379 or a free port. A port given with --redis-port (`fixed`) is kept to: the
    Redis there not being ours stops `kullm up`."""
    found = _redis_dir(LOCAL_HOST, port)
    if found == str(directory):
        return port, f"private redis-server already running on port {port} (data {directory})", None
    binary = shutil.which("redis-server")
    if binary is None:
        raise UpError("no Redis: set REDIS_URL, or install redis-server (apt-get install redis-server)")
    taken = ""
    if found is not None or _port_taken(LOCAL_HOST, port):
        what = f"another Redis (data {found or 'unknown'})" if found is not None else "another program"
        if fixed:
            raise UpError(f"--redis-port {port} is held by {what}: pick another port, or set REDIS_URL to use it")
        taken = f"; port {port} holds {what}, not used (set REDIS_URL to use it)"
        port = DEFAULT_REDIS_PORT if not _port_taken(LOCAL_HOST, DEFAULT_REDIS_PORT) else _free_port()
    directory.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", LOCAL_HOST, "--appendonly", "yes", "--dir", str(directory)]
    service = Service("redis", [*argv, "--save", ""], stop_s=REDIS_STOP_S)
    return port, f"private redis-server on port {port} (data {directory}){taken}", service


async def supervise(services: list[Service], stop: asyncio.Event, now: asyncio.Event | None = None) -> int:
    """Run every service until `stop` is set (or only Redis is left); then stop them in order. `now` set
    (a second Ctrl-C) kills what is still running instead of waiting for it."""
    now = now or asyncio.Event()
    watchers = [asyncio.create_task(_keep_running(service, services, stop)) for service in services]
    await stop.wait()
    log.info("stopping %s", ", ".join(s.name for s in services if _running(s)))
    for group in _stop_order(services):
        await asyncio.gather(*(_stop(service, now) for service in group))
    for watcher in watchers:
        watcher.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    return EXIT_CONFIG if any(s.failed for s in services) else 0


def _stop_order(services: list[Service]) -> list[list[Service]]:
    """Adapters first (no new questions), then workers (they finish what they hold), Redis last."""
    adapters = [s for s in services if s.name in ADAPTERS]
    redis = [s for s in services if s.name == "redis"]
    return [adapters, [s for s in services if s not in adapters and s not in redis], redis]


async def _keep_running(service: Service, services: list[Service], stop: asyncio.Event) -> None:
    delay = RESTART_DELAY_S
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        service.process = await asyncio.create_subprocess_exec(
            *service.argv, env=service.env, process_group=0, preexec_fn=_die_with_parent
        )
        log.info("%s started (pid %d)", service.name, service.process.pid)
        code = await service.process.wait()
        if stop.is_set():
            return
        if code == EXIT_CONFIG:
            service.failed = True
            log.error("%s exited with a configuration error (status 2, see its log above): not restarted", service.name)
            if all(s.failed or s.name == "redis" for s in services):
                log.error("nothing left to run but Redis: stopping")
                stop.set()
            return
        if loop.time() - started > HEALTHY_RUN_S:
            delay = RESTART_DELAY_S
        service.restarts += 1
        log.error(
            "%s exited with status %d; restarting in %.0fs (restart %d)", service.name, code, delay, service.restarts
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, RESTART_DELAY_MAX_S)


def _running(service: Service) -> bool:
    return service.process is not None and service.process.returncode is None


async def _stop(service: Service, now: asyncio.Event) -> None:
    process = service.process
    if process is None or process.returncode is not None:
        return
    if not now.is_set():
        process.terminate()
        ended = asyncio.ensure_future(process.wait())
        hurried = asyncio.ensure_future(now.wait())
        await asyncio.wait({ended, hurried}, timeout=service.stop_s, return_when=asyncio.FIRST_COMPLETED)
        hurried.cancel()
    if process.returncode is None:
        log.warning(
            "%s killed (%s)", service.name, "second Ctrl-C" if now.is_set() else f"not stopped in {service.stop_s:.0f}s"
        )
        process.kill()
    await process.wait()
    log.info("%s stopped", service.name)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when `kullm up` dies (even by SIGKILL), so no child outlives it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _redis_dir(host: str, port: int) -> str | None:
    """The data directory of a Redis answering on the port (CONFIG GET dir), or None when none answers."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$3\r\ndir\r\n")
            reply = sock.recv(4096)
    except OSError:
        return None
    if reply.startswith(b"-"):  # a Redis that refuses (a password, CONFIG renamed): not ours
        return ""
    lines = reply.split(b"\r\n")
    if not reply.startswith(b"*2") or len(lines) < 5:
        return None
    return lines[4].decode(errors="replace")


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCAL_HOST, 0))
        return int(probe.getsockname()[1])


def main(data_dir: Path = DATA_DIR, redis_port: int | None = None, *, demo: bool = False) -> int:
    """`kullm up`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        chosen = plan(data_dir, redis_port, demo=demo)
    except UpError as exc:
        print(f"kullm up: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    log.info("redis: %s", chosen.redis_said)
    if chosen.private:
        log.info("clients started in %s without REDIS_URL use this Redis (%s)", Path.cwd(), RedisRecord.path(data_dir))
    if demo:
        asked = " · ".join(f"「{q}」" for q in DEMO_QUESTIONS)
        log.warning(
            "demo mode: MODEL=demo, a tiny model built here (about a minute the first time) that knows only a few "
            'answers, e.g. %s; anything else gets nonsense. Try: kullm ask "%s"',
            asked,
            DEMO_QUESTIONS[0],
        )
    log.info("services: %s", ", ".join(s.name for s in chosen.services))

    async def run() -> int:
        stop, now = asyncio.Event(), asyncio.Event()

        def pressed() -> None:
            if stop.is_set():
                log.warning("stopping now: answers still in hand are handed to other workers or lost")
                now.set()
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, pressed)
        return await supervise(chosen.services, stop, now)

    return asyncio.run(run())
