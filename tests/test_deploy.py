"""Deployment: docker-compose.yml validated offline, images' commands, `kullm up`, `kullm download`.

No Docker engine runs on these machines: compose is checked against the Compose specification
schema (check-jsonschema's vendored copy) plus assertions the schema cannot make, and the
images' commands are the `kullm` commands the other tests run as processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from chatbus import Bus, Done, Question
from inference.worker import Worker
from kullm.parser import parser as kullm_parser
from testkit import trained
from testkit.polling import wait_until
from testkit.processes import ROOT, AskProcess, run_kullm, start_kullm_up
from testkit.redis_server import RedisServer, free_port
from tests.test_settings import example_keys

COMPOSE = ROOT / "docker-compose.yml"
SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY", re.IGNORECASE)


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


OVERRIDES = [ROOT / "docker" / "compose.redis-public.yml", ROOT / "docker" / "compose.redis-tls.yml"]


@pytest.mark.parametrize("path", [COMPOSE, *OVERRIDES], ids=lambda path: path.name)
def test_compose_files_match_the_compose_specification(path: Path) -> None:
    result = subprocess.run(
        [Path(sys.executable).parent / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_worker_reserves_a_gpu_caches_the_model_and_drains() -> None:
    worker = compose()["services"]["worker"]
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    assert "hf-cache:/cache/huggingface" in worker["volumes"]
    assert "/healthz" in " ".join(worker["healthcheck"]["test"])
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    # Compose's SIGKILL comes when the worker's own drain period ends: one number, DRAIN_GRACE_S.
    from inference.settings import WorkerSettings

    default_s = WorkerSettings.model_fields["drain_grace_s"].default
    assert worker["stop_grace_period"] == f"${{DRAIN_GRACE_S:-{default_s:.0f}}}s"


def test_redis_keeps_its_queue_and_stays_private() -> None:
    redis = compose()["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and '--requirepass "$$REDIS_PASSWORD"' in command
    # The image's entrypoint drops to the redis user only when `redis-server` is its first argument.
    for path in [COMPOSE, *OVERRIDES]:
        commands = " ".join(yaml.safe_load(path.read_text())["services"]["redis"].get("command", []))
        assert "redis-server" not in commands or "exec docker-entrypoint.sh redis-server " in commands, path.name
    assert "redis-data:/data" in redis["volumes"]
    assert "redis-cli" in redis["healthcheck"]["test"][1] and "REDIS_PASSWORD" in redis["healthcheck"]["test"][1]
    assert "ports" not in redis


class _ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it: `!reset` (drop what the file before set) kept as a marker."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: "!reset")


def test_the_cpu_override_tries_the_stack_without_a_gpu_and_says_how() -> None:
    override = yaml.load((ROOT / "docker" / "compose.cpu.yml").read_text(), Loader=_ComposeLoader)
    worker = override["services"]["worker"]
    assert worker["deploy"] == "!reset", "no GPU reserved"
    assert worker["environment"] == {"DEVICE": "cpu", "MODEL": "${MODEL:-demo}"}, "the CPU on purpose, the demo model"
    assert "demo-model:/app/.kullm" in worker["volumes"] and "demo-model" in override["volumes"]
    assert "RUN useradd --create-home --uid 10001 kullm" in (ROOT / "docker" / "worker.Dockerfile").read_text()
    assert "chown kullm:kullm /cache/huggingface /app/.kullm" in (ROOT / "docker" / "worker.Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "TORCH_CHANNEL=cpu docker compose -f docker-compose.yml -f\ndocker/compose.cpu.yml up -d" in readme
    assert "needs driver **580 or newer**" in readme and "make compose-check" in readme
    assert compose()["services"]["worker"]["build"]["args"] == {"TORCH_CHANNEL": "${TORCH_CHANNEL:-pypi}"}


@pytest.mark.parametrize("path", OVERRIDES, ids=lambda path: path.name)
def test_redis_is_published_only_with_a_password(path: Path) -> None:
    redis = yaml.safe_load(path.read_text())["services"]["redis"]
    assert redis["ports"], "the override publishes Redis"
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?"), "refused without a password"
    assert "--requirepass" in " ".join(redis.get("command", [])) or "command" not in redis


def test_redis_password_reaches_every_service_through_env() -> None:
    services = compose()["services"]
    for name in ("worker", "discord", "slack", "slack-http"):
        assert services[name]["env_file"][0]["path"] == ".env", f"{name} reads REDIS_PASSWORD from .env"
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == "${REDIS_PASSWORD:-}"


def test_adapters_are_profiles_waiting_for_redis_and_share_one_image() -> None:
    services = compose()["services"]
    for name in ("discord", "slack", "slack-http"):
        service = services[name]
        assert service["profiles"] == [name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["build"] == {"context": ".", "dockerfile": "docker/bot.Dockerfile"}
        assert service["image"] == "kullm-bot:latest"
    assert "torch" not in (ROOT / "docker" / "bot.Dockerfile").read_text().replace("no torch", "")


def test_the_vllm_profile_serves_the_model_on_the_gpu_for_the_worker_in_openai_mode() -> None:
    services = compose()["services"]
    vllm, worker = services["vllm"], services["worker"]
    assert vllm["profiles"] == ["vllm"] and vllm["image"].startswith("vllm/vllm-openai:")
    [device] = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    # The model the worker's MODEL_ID names (so ENGINE_MODEL may stay empty), in fp16 with KULLM's window.
    assert vllm["command"][0] == "${MODEL_ID:-metterian/kullm-polyglot-12.8b}"
    assert "--dtype=float16" in vllm["command"] and "--max-model-len=${CONTEXT_WINDOW:-2048}" in vllm["command"]
    assert vllm["environment"]["VLLM_API_KEY"] == "${ENGINE_API_KEY:-}"
    assert "/health" in " ".join(vllm["healthcheck"]["test"]) and vllm["ipc"] == "host"
    # The worker finds it by name and waits for it only when the profile is on.
    assert worker["environment"]["ENGINE_URL"] == "${ENGINE_URL:-http://vllm:8000/v1}"
    assert worker["depends_on"]["vllm"] == {"condition": "service_healthy", "required": False}
    from inference.engines.openai.engine import api_base

    assert (
        api_base("http://vllm:8000/v1") == "http://vllm:8000/v1"
        and api_base("http://vllm:8000") == "http://vllm:8000/v1"
    )


def test_the_compose_version_it_needs_is_stated_where_users_look() -> None:
    # `env_file` entries with `required` are the newest feature the file uses (Compose v2.24.0): an older
    # Compose refuses the file at once. The README and the file's header say so, with the same version.
    [stated] = set(re.findall(r"Docker Compose v(\d+\.\d+\.\d+) or newer", (ROOT / "README.md").read_text()))
    assert f"Needs Docker Compose v{stated} or newer" in COMPOSE.read_text()
    assert stated == "2.24.0" and compose()["services"]["worker"]["env_file"] == [{"path": ".env", "required": False}]


def test_every_service_restarts_after_a_reboot_and_rotates_its_logs() -> None:
    for name, service in compose()["services"].items():
        # The adapters exit 0 on SIGTERM: `on-failure` would leave them down after a reboot.
        assert service["restart"] == "unless-stopped", name
        assert service["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "5"}}, name


def test_only_profiles_publish_ports_and_only_on_loopback() -> None:
    for name, service in compose()["services"].items():
        if "ports" in service:
            assert service.get("profiles"), f"{name} publishes a port without being asked to"
            assert all(str(port).startswith("127.0.0.1:") for port in service["ports"]), name
    assert {n for n, s in compose()["services"].items() if "ports" in s} == {"slack-http", "api", "grafana"}


def test_each_service_gets_only_its_own_secrets() -> None:
    from bot.api.settings import ApiSettings
    from bot.settings import DiscordSettings, SlackSettings
    from inference.settings import WorkerSettings

    def secrets(settings: type[BaseSettings]) -> set[str]:
        return {name.upper() for name, field in settings.model_fields.items() if "SecretStr" in str(field.annotation)}

    needs: dict[str, type[BaseSettings]] = {
        "worker": WorkerSettings,
        "discord": DiscordSettings,
        "slack": SlackSettings,
        "slack-http": SlackSettings,
        "api": ApiSettings,
    }
    every = set().union(*(secrets(settings) for settings in needs.values()))
    assert {"HF_TOKEN", "DISCORD_TOKEN", "SLACK_BOT_TOKEN", "REDIS_PASSWORD"} <= every
    services = compose()["services"]
    for name, settings in needs.items():
        blanked = {key for key, value in services[name]["environment"].items() if value == ""}
        assert blanked == every - secrets(settings), name  # REDIS_PASSWORD is everyone's


def test_images_install_pinned_dependencies_before_the_source_and_run_as_a_user() -> None:
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        lines = dockerfile.read_text().splitlines()
        [base] = [line for line in lines if line.startswith("FROM ")]
        assert re.fullmatch(r"FROM [\w./-]+:\d+\.\d+\.\d+[\w.-]*", base), f"{dockerfile.name}: exact tag"
        install = next(i for i, line in enumerate(lines) if "pip install -c lock.txt -r requirements.txt" in line)
        source = next(i for i, line in enumerate(lines) if line.startswith("COPY chatbus"))
        assert install < source, f"{dockerfile.name}: dependencies before the source"
        assert any(re.fullmatch(r"USER (?!root)\w+", line) for line in lines), f"{dockerfile.name}: not root"
    assert "worker quantization" in (ROOT / "docker" / "worker.Dockerfile").read_text(), "bitsandbytes"
    for image in ("redis", "prometheus", "grafana", "vllm"):
        assert re.fullmatch(r".+:v?\d+\.\d+\.\d+(-\w+)?", compose()["services"][image]["image"]), image
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git", ".cache", ".gpu", "*.safetensors"} <= set(ignored)


def test_the_requirements_the_images_install_come_from_pyproject_and_the_lock_pins_them() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("requirements", ROOT / "docker" / "requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lock = (ROOT / "constraints" / "lock.txt").read_text()
    pinned = {m[1].lower().replace("_", "-") for m in re.finditer(r"^([\w.-]+)==", lock, re.MULTILINE)}
    for extras in (["worker", "quantization"], ["discord", "slack"], ["test"]):
        for requirement in module.requirements(extras, ROOT / "pyproject.toml"):
            name = re.match(r"[\w.-]+", requirement)
            assert name and name[0].lower().replace("_", "-") in pinned, f"{requirement} is not in constraints/lock.txt"
    torch = re.search(r"^torch==(\S+)$", lock, re.MULTILINE)
    assert torch and f"pip install torch=={torch[1]}" in (ROOT / "README.md").read_text(), "README: the lock's torch"


def test_no_secret_is_written_inline_and_every_variable_is_documented() -> None:
    text = COMPOSE.read_text()
    for service in compose()["services"].values():
        for key, value in (service.get("environment") or {}).items():
            # A secret is either passed on (`${…}`) or blanked (another service's): never a value.
            assert not SECRET.search(key) or value == "" or str(value).startswith("${"), f"{key} written inline"
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    assert used and used <= set(example_keys()), used - set(example_keys())


def test_every_image_command_is_a_kullm_command_the_tests_run() -> None:
    commands = {name: service["command"] for name, service in compose()["services"].items() if "build" in service}
    assert commands == {
        "worker": ["kullm", "worker"],
        "discord": ["kullm", "discord"],
        "slack": ["kullm", "slack"],
        "slack-http": ["kullm", "slack"],
        "api": ["kullm", "api"],
    }
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        [cmd] = re.findall(r"^CMD (.+)$", dockerfile.read_text(), re.MULTILINE)
        assert cmd in ('["kullm", "worker"]', '["kullm", "discord"]')
    (subparsers,) = [a for a in kullm_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    subcommands = set(subparsers.choices)
    assert {"worker", "discord", "slack", "api", "up", "download", "ask", "status"} <= subcommands
    servers = (ROOT / "testkit" / "processes.py").read_text()
    assert '"kullm.cli", "worker"' in servers and '"kullm.cli", self.adapter' in servers


def test_kullm_up_runs_redis_and_a_worker_restarts_crashes_and_stops_on_ctrl_c(model_dir: Path, tmp_path: Path) -> None:
    redis_port = free_port()
    up = start_kullm_up(tmp_path, redis_port, MODEL_ID=str(model_dir), DO_SAMPLE="false")
    log_path = tmp_path / "up.log"
    try:
        url = f"redis://127.0.0.1:{redis_port}/0"

        def healthy() -> bool:
            result = run_kullm(["status", "--json"], url, timeout_s=30)
            return result.returncode == 0 and '"workers": [{' in result.stdout

        wait_until(healthy, 120, 0.5, what="kullm up: worker registered")
        assert "services: redis, worker" in log_path.read_text()  # no adapter tokens: no adapters
        assert f"redis: private redis-server on port {redis_port} (data {tmp_path.resolve()}" in log_path.read_text()
        answer = run_kullm(["ask", "딥러닝이 뭐야?"], url)
        assert answer.stdout.strip() == trained.DEEP_LEARNING

        worker_pid = int(re.findall(r"worker started \(pid (\d+)\)", log_path.read_text())[-1])
        os.kill(worker_pid, signal.SIGKILL)
        wait_until(lambda: "worker exited with status -9; restarting" in log_path.read_text(), 30)
        wait_until(lambda: len(re.findall(r"worker started", log_path.read_text())) == 2, 30)
        time.sleep(1)
        answer = run_kullm(["ask", "한국의 수도는 어디야?"], url, timeout_s=120)
        assert answer.stdout.strip() == trained.CAPITAL

        # Ctrl-C in the terminal: the whole foreground process group gets SIGINT. Only `kullm up` is in it: it stops
        # the worker first, which finishes the answer in hand, and Redis last, so the answer arrives whole.
        story = AskProcess(url, "긴 이야기를 들려줘")
        story.wait_for("delta")
        os.killpg(up.pid, signal.SIGINT)
        assert story.finish(90) == 0
        assert story.events[-1]["type"] == "done" and story.events[-1]["text"] == trained.LONG_STORY
        assert up.wait(90) == 0
        stopped = re.findall(r"kullm\.up: (\w+) stopped", log_path.read_text())
        assert stopped == ["worker", "redis"], "the worker drains while Redis is still up"
        assert (tmp_path / ".kullm" / "redis" / "appendonlydir").exists(), "AOF on"
        assert run_kullm(["status"], url).returncode == 4, "redis is gone with it"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)


def test_kullm_download_explains_offline_and_local_models(tmp_path: Path) -> None:
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    offline = run_kullm(["download", "--model", "metterian/kullm-polyglot-12.8b"], "redis://unused", env=env)
    assert offline.returncode == 1 and "HF_HUB_OFFLINE" in offline.stderr
    local = run_kullm(["download", "--model", str(tmp_path)], "redis://unused", env=env)
    assert local.returncode == 0 and "local directory" in local.stdout


@pytest.mark.parametrize("variable", ["DISCORD_TOKEN", "SLACK_BOT_TOKEN"])
def test_adapters_join_kullm_up_when_their_token_is_set(
    variable: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from kullm.up import plan

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/0")
    for name in ("DISCORD_TOKEN", "SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "x")
    chosen = plan(tmp_path)
    assert chosen.redis_url == "redis://example:6379/0" and chosen.redis_said == "REDIS_URL redis://example:6379/0"
    assert [s.name for s in chosen.services] == ["worker", "discord" if variable == "DISCORD_TOKEN" else "slack"]


def test_kullm_up_does_not_restart_a_worker_with_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-model").mkdir()  # a directory, so the settings pass; the worker finds no model in it
    up = start_kullm_up(tmp_path, free_port(), MODEL_ID=str(tmp_path / "not-a-model"))
    try:
        assert up.wait(120) == 2, (tmp_path / "up.log").read_text()[-3000:]
        log = (tmp_path / "up.log").read_text()
        assert "worker exited with a configuration error (status 2" in log and "nothing left to run but Redis" in log
        assert len(re.findall(r"worker started", log)) == 1, "not restarted in a loop"
        assert re.findall(r"kullm\.up: (\w+) stopped", log) == ["redis"]
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)


def test_the_example_env_keeps_kullm_ups_private_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kullm.up import plan

    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    monkeypatch.chdir(tmp_path)
    for key in example_keys():
        monkeypatch.delenv(key, raising=False)
    chosen = plan(tmp_path / ".kullm", free_port())
    assert chosen.services[0].name == "redis" and chosen.redis_said.startswith("private redis-server on port")


def test_kullm_up_uses_only_its_own_redis_on_the_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chatbus.config import RedisRecord
    from kullm.up import UpError, plan

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REDIS_URL", raising=False)
    data = tmp_path / ".kullm"
    foreign = RedisServer(tmp_path / "someone-elses")
    foreign.start()
    try:
        with pytest.raises(UpError, match=f"--redis-port {foreign.port} is held by another Redis"):
            plan(data, foreign.port)  # a port asked for is kept to
        RedisRecord(foreign.port, "").write(data)  # the port it used last is someone else's now
        chosen = plan(data)
        assert chosen.services[0].name == "redis" and str(foreign.port) not in chosen.redis_url
        assert f"port {foreign.port} holds another Redis (data {(tmp_path / 'someone-elses').resolve()})" in (
            chosen.redis_said
        )
        moved = RedisRecord.read(data)
        assert moved is not None and chosen.redis_url == moved.url, "the clients follow it"
    finally:
        foreign.kill()
    ours = RedisServer(data.resolve() / "redis")  # left running by an earlier `kullm up` in this directory
    ours.start()
    try:
        chosen = plan(data, ours.port)
        assert [s.name for s in chosen.services] == ["worker"]
        assert chosen.redis_url == f"redis://127.0.0.1:{ours.port}/0" and "already running" in chosen.redis_said
    finally:
        ours.kill()


async def test_every_metric_the_dashboard_shows_is_served_by_a_worker(bus: Bus, worker: Worker) -> None:
    question = Question.new("test", "딥러닝이 뭐야?", ttl_s=60)
    await bus.queue.enqueue(question, 10)
    events = [event async for _, event in bus.answers.follow(question.id, start_timeout_s=30, stall_timeout_s=30)]
    assert isinstance(events[-1], Done)
    lines = worker.metrics.render().decode().splitlines()  # what GET /metrics serves
    served = {re.split(r"[{ ]", line)[0] for line in lines if line and not line.startswith("#")}
    dashboard = json.loads((ROOT / "docker" / "monitoring" / "grafana" / "dashboards" / "kullm.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queried = {name for expr in exprs for name in re.findall(r"\bkullm_\w+", expr)}
    assert queried <= served, f"the dashboard queries metrics no worker serves: {sorted(queried - served)}"
    families = {"queue_depth", "inflight", "batch_size", "generated_tokens", "time_to_first_token", "questions"}
    families |= {"out_of_memory", "reclaimed", "queue_wait"}
    assert all(any(f"kullm_{family}" in name for name in queried) for family in families), "a panel is missing"
    prometheus = yaml.safe_load((ROOT / "docker" / "monitoring" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["dns_sd_configs"] for job in prometheus["scrape_configs"]}
    assert jobs["kullm-worker"] == [{"names": ["worker"], "type": "A", "port": 9400, "refresh_interval": "30s"}]
    bots = [{"names": ["discord", "slack", "slack-http"], "type": "A", "port": 9410, "refresh_interval": "30s"}]
    assert jobs["kullm-bots"] == bots and prometheus["rule_files"] == ["alerts.yml"]
    grafana = compose()["services"]["grafana"]
    assert (
        grafana["profiles"] == ["monitoring"]
        and "./docker/monitoring/grafana:/etc/grafana/provisioning:ro" in (grafana["volumes"])
    )


def test_images_take_their_build_backend_and_every_torch_build_from_the_lock() -> None:
    # The real proof is `make compose-check`, which compares each built image's `pip freeze` with the lock.
    lock = (ROOT / "constraints" / "lock.txt").read_text()
    assert re.search(r"^setuptools==", lock, re.MULTILINE) and re.search(r"^async-timeout==", lock, re.MULTILINE)
    for name in ("bot", "worker"):
        dockerfile = (ROOT / "docker" / f"{name}.Dockerfile").read_text()
        assert "pip install -c lock.txt setuptools && pip install --no-deps --no-build-isolation ." in dockerfile
    worker = (ROOT / "docker" / "worker.Dockerfile").read_text()
    assert "ARG TORCH_CHANNEL=pypi" in worker and "torch=\"$(grep '^torch==' lock.txt)\"" in worker
    assert "cu126|cu128|cu130|cpu)" in worker and "local)" in worker
    keeps = "grep -E '^(async-timeout|bitsandbytes|setuptools)=='"
    assert keeps in (ROOT / "Makefile").read_text(), "make lock keeps the pins made by hand"


@pytest.mark.e2e
def test_the_lock_pins_every_package_pypis_cuda_torch_installs() -> None:
    """The worker image's default build (TORCH_CHANNEL=pypi, CUDA 13.0): what `pip install torch==X` brings on its
    Python, resolved from PyPI's metadata with the lock as constraints (no wheel is downloaded), is all pinned."""
    import urllib.request

    try:
        urllib.request.urlopen("https://pypi.org/simple/triton/", timeout=10).close()
    except OSError as exc:
        pytest.skip(f"PyPI is not reachable: {exc}")
    check = [sys.executable, "docker/cuda_pins.py", "--check", "constraints/lock.txt"]
    done = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pins all" in done.stdout and "nvidia-" not in done.stdout
    assert "docker/cuda_pins.py $(LOCK)" in (ROOT / "Makefile").read_text(), "make lock adds them again"
