"""Deployment: docker-compose.yml validated offline, images' commands, `kullm up`, `kullm download`.

No Docker engine runs on these machines: compose is checked against the Compose specification
schema (check-jsonschema's vendored copy) plus assertions the schema cannot make, and the
images' commands are the `kullm` commands the other tests run as processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kullm.cli import _parser
from tests.support import trained
from tests.support.polling import wait_until
from tests.support.processes import ROOT, free_port, run_kullm

COMPOSE = ROOT / "docker-compose.yml"
SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY", re.IGNORECASE)


def compose() -> dict:  # type: ignore[type-arg]
    return dict(yaml.safe_load(COMPOSE.read_text()))


def example_keys() -> set[str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}


def test_compose_file_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [Path(sys.executable).parent / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
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
    grace_s = int(worker["stop_grace_period"].rstrip("s"))
    assert grace_s > 60, "longer than the worker's default DRAIN_GRACE_S"


def test_redis_keeps_its_queue_and_stays_private() -> None:
    redis = compose()["services"]["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert "redis-data:/data" in redis["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "ports" not in redis


def test_adapters_are_profiles_waiting_for_redis() -> None:
    services = compose()["services"]
    for name in ("discord", "slack"):
        service = services[name]
        assert service["profiles"] == [name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["restart"] == "on-failure"
        assert "bot.Dockerfile" in service["build"]["dockerfile"]
    assert "torch" not in (ROOT / "docker" / "bot.Dockerfile").read_text().replace("no torch", "")


def test_no_secret_is_written_inline_and_every_variable_is_documented() -> None:
    text = COMPOSE.read_text()
    for service in compose()["services"].values():
        for key, value in (service.get("environment") or {}).items():
            assert not SECRET.search(key) or str(value).startswith("${"), f"{key} written inline"
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    assert used and used <= example_keys(), used - example_keys()


def test_every_image_command_is_a_kullm_command_the_tests_run() -> None:
    commands = {name: service["command"] for name, service in compose()["services"].items() if "build" in service}
    assert commands == {"worker": ["kullm", "worker"], "discord": ["kullm", "discord"], "slack": ["kullm", "slack"]}
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        [cmd] = re.findall(r"^CMD (.+)$", dockerfile.read_text(), re.MULTILINE)
        assert cmd in ('["kullm", "worker"]', '["kullm", "discord"]')
    subcommands = set(_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert {"worker", "discord", "slack", "up", "download", "ask", "status"} <= subcommands
    servers = (ROOT / "tests" / "support" / "processes.py").read_text()
    assert '"kullm.cli", "worker"' in servers and '"kullm.cli", self.adapter' in servers


def test_kullm_up_runs_redis_and_a_worker_restarts_crashes_and_stops_on_ctrl_c(model_dir: Path, tmp_path: Path) -> None:
    redis_port, metrics_port = free_port(), free_port()
    env = {
        key: value for key, value in os.environ.items() if key not in {"REDIS_URL", "DISCORD_TOKEN", "SLACK_BOT_TOKEN"}
    }
    env.update(
        MODEL_ID=str(model_dir),
        DO_SAMPLE="false",
        METRICS_PORT=str(metrics_port),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "kullm.cli", "up", "--redis-port", str(redis_port)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"redis://127.0.0.1:{redis_port}/0"

        def healthy() -> bool:
            result = run_kullm(["status", "--json"], url, timeout_s=30)
            return result.returncode == 0 and '"workers": [{' in result.stdout

        wait_until(healthy, 120, 0.5, what="kullm up: worker registered")
        assert "services: redis, worker" in log_path.read_text()  # no adapter tokens: no adapters
        answer = run_kullm(["ask", "딥러닝이 뭐야?"], url)
        assert answer.stdout.strip() == trained.DEEP_LEARNING

        worker_pid = int(re.findall(r"worker started \(pid (\d+)\)", log_path.read_text())[-1])
        os.kill(worker_pid, signal.SIGKILL)
        wait_until(lambda: "worker exited with status -9; restarting" in log_path.read_text(), 30)
        wait_until(lambda: len(re.findall(r"worker started", log_path.read_text())) == 2, 30)
        time.sleep(1)
        answer = run_kullm(["ask", "한국의 수도는 어디야?"], url, timeout_s=120)
        assert answer.stdout.strip() == trained.CAPITAL

        up.send_signal(signal.SIGINT)
        assert up.wait(90) == 0
        assert "redis stopped" in log_path.read_text() and "worker stopped" in log_path.read_text()
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
    url, services = plan(tmp_path)
    assert url == "redis://example:6379/0"
    assert [s.name for s in services] == ["worker", "discord" if variable == "DISCORD_TOKEN" else "slack"]
