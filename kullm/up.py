"""`kullm up`: the compose services as local processes, for hosts without Docker (and for the tests).

Starts a private redis-server (AOF on, data under `.kullm/redis`) when REDIS_URL is unset and
nothing answers on localhost:6379, then the worker and each chat adapter whose token is set.
A child that exits is reported and restarted with backoff; Ctrl-C (or SIGTERM) stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
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

log = logging.getLogger("kullm.up")

LOCAL_HOST = "127.0.0.1"
STOP_GRACE_S = 75.0  # a little over the worker's default drain period
RESTART_DELAY_S = 1.0
RESTART_DELAY_MAX_S = 30.0
# A child that ran this long before exiting gets its backoff reset.
HEALTHY_RUN_S = 60.0


@dataclass
class Service:
    """One supervised child process."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0


def plan(data_dir: Path, redis_port: int = 6379) -> tuple[str, list[Service]]:
    """The Redis URL to use and the services to run, from the environment and `.env`."""
    discord, slack = DiscordSettings(), SlackSettings()
    services: list[Service] = []
    url = discord.redis_url
    if "redis_url" not in discord.model_fields_set and not _answers(LOCAL_HOST, redis_port):
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("no Redis: set REDIS_URL, or install redis-server (apt-get install redis-server)")
        (data_dir / "redis").mkdir(parents=True, exist_ok=True)
        services.append(
            Service(
                "redis",
                [
                    binary,
                    "--port",
                    str(redis_port),
                    "--bind",
                    LOCAL_HOST,
                    "--appendonly",
                    "yes",
                    "--dir",
                    str((data_dir / "redis").resolve()),
                    "--save",
                    "",
                ],
            )
        )
        url = f"redis://{LOCAL_HOST}:{redis_port}/0"
    elif "redis_url" not in discord.model_fields_set:
        url = f"redis://{LOCAL_HOST}:{redis_port}/0"
    python = sys.executable
    services.append(Service("worker", [python, "-m", "inference"]))
    if discord.discord_token is not None:
        services.append(Service("discord", [python, "-m", "bot", "discord"]))
    if slack.slack_bot_token is not None:
        services.append(Service("slack", [python, "-m", "bot", "slack"]))
    for service in services:
        service.env = {**os.environ, "REDIS_URL": url}
    return url, services


async def supervise(services: list[Service], stop: asyncio.Event) -> int:
    """Run every service until `stop` is set; restart any that exits meanwhile."""
    watchers = [asyncio.create_task(_keep_running(service, stop)) for service in services]
    await stop.wait()
    log.info("stopping %s", ", ".join(s.name for s in services))
    # Adapters and the worker first, Redis last, so in-flight answers can be handed over.
    for group in ([s for s in services if s.name != "redis"], [s for s in services if s.name == "redis"]):
        await asyncio.gather(*(_stop(service) for service in group))
    for watcher in watchers:
        watcher.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    return 0


async def _keep_running(service: Service, stop: asyncio.Event) -> None:
    delay = RESTART_DELAY_S
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        service.process = await asyncio.create_subprocess_exec(*service.argv, env=service.env)
        log.info("%s started (pid %d)", service.name, service.process.pid)
        code = await service.process.wait()
        if stop.is_set():
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


async def _stop(service: Service) -> None:
    process = service.process
    if process is None or process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_GRACE_S)
    except TimeoutError:
        log.warning("%s did not stop in %.0fs: killing it", service.name, STOP_GRACE_S)
        process.kill()
        await process.wait()
    log.info("%s stopped", service.name)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def main(data_dir: Path = Path(".kullm"), redis_port: int = 6379) -> int:
    """`kullm up`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url, services = plan(data_dir, redis_port)
    log.info("redis: %s; services: %s", redact_url(url), ", ".join(s.name for s in services))

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await supervise(services, stop)

    return asyncio.run(run())
