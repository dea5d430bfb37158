"""Password-protected and TLS (`rediss://`) Redis work end to end, and no secret reaches a log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit import trained
from testkit.engines import SCRIPTED
from testkit.processes import WorkerProcess, run_kullm
from testkit.redis_server import RedisServer

pytestmark = pytest.mark.e2e
PASSWORD = "s3cret-redis-pass"


@pytest.fixture(params=["password", "tls+password"])
def secure_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "secure-redis", password=PASSWORD, tls=request.param.startswith("tls"))
    server.start()
    yield server
    server.stop()


def test_worker_and_client_over_a_secured_redis(secure_redis: RedisServer, model_dir: Path, tmp_path: Path) -> None:
    worker = WorkerProcess(secure_redis.url, model_dir, tmp_path / "worker.log", ENGINE=SCRIPTED).start()
    try:
        answer = run_kullm(["ask", "딥러닝이 뭐야?"], secure_redis.url)
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip() == trained.DEEP_LEARNING
        status = run_kullm(["status"], secure_redis.url)
        assert "live workers: 1" in status.stdout
        wrong = run_kullm(["ask", "딥러닝이 뭐야?"], secure_redis.url.replace(PASSWORD, "wrong-pass"))
        assert wrong.returncode != 0
    finally:
        worker.stop()
    logs = worker.log() + answer.stdout + answer.stderr + status.stdout + wrong.stdout + wrong.stderr
    assert PASSWORD not in logs and "wrong-pass" not in logs


def test_the_password_can_come_from_redis_password(tmp_path: Path, model_dir: Path) -> None:
    # compose's way: REDIS_URL names the host only, REDIS_PASSWORD holds the secret (never a URL in a log).
    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    server.start()
    bare_url = f"redis://127.0.0.1:{server.port}/0"
    env = {"REDIS_PASSWORD": PASSWORD}
    worker = WorkerProcess(bare_url, model_dir, tmp_path / "worker.log", ENGINE=SCRIPTED, **env).start()
    try:
        answer = run_kullm(["ask", "딥러닝이 뭐야?"], bare_url, env=env)
        assert answer.returncode == 0 and answer.stdout.strip() == trained.DEEP_LEARNING, answer.stderr
        refused = run_kullm(["ask", "딥러닝이 뭐야?"], bare_url)
        assert refused.returncode == 4 and "Redis가 비밀번호를 받아들이지 않아요" in refused.stderr
        wrong = run_kullm(["ask", "딥러닝이 뭐야?"], bare_url, env={"REDIS_PASSWORD": "wrong-pass"})
        assert wrong.returncode == 4 and "Redis가 비밀번호를 받아들이지 않아요" in wrong.stderr
    finally:
        worker.stop()
        server.kill()
    assert PASSWORD not in worker.log() + answer.stderr + refused.stderr
