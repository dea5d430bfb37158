"""A newcomer's first ten minutes, as processes: one Redis for `kullm up` and every client started in its directory,
the same port across restarts, the demo model, a queue no worker serves, the Hub out of reach, a model that cannot
fit, and one line (never a traceback) for each mistake a first run makes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from chatbus import WorkerStatus
from chatbus.config import RedisRecord
from inference.demo import DEMO_QUESTIONS
from inference.placement import available_ram
from inference.presets import PRESETS
from testkit import trained
from testkit.engines import SCRIPTED
from testkit.polling import wait_until
from testkit.processes import ROOT, AskProcess, StartWorker, WorkerProcess, json_events, run_kullm
from testkit.redis_server import RedisServer, free_port

pytestmark = pytest.mark.e2e

CONTEXT = "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다."


def without_redis_url() -> dict[str, str]:
    """The environment of a terminal where REDIS_URL was never set."""
    return {key: value for key, value in os.environ.items() if key not in {"REDIS_URL", "DISCORD_TOKEN"}}


def recorded(directory: Path, other_than: int | None = None) -> RedisRecord:
    """The Redis `kullm up` recorded in `directory` (waited for; `other_than`: not on that port)."""

    def found() -> RedisRecord | None:
        record = RedisRecord.read(directory / ".kullm")
        return record if record is not None and record.port != other_than else None

    record = wait_until(found, 30, what="kullm up's Redis record")
    assert record is not None
    return record


def kullm_in(directory: Path, args: list[str], timeout_s: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """`kullm ARGS` typed in a terminal whose working directory is `directory`, without REDIS_URL."""
    return subprocess.run(
        [sys.executable, "-m", "kullm.cli", *args],
        cwd=directory,
        env={**without_redis_url(), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def kullm_up_in(directory: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """`kullm up ARGS` in a terminal of its own in `directory` (its own session, as a shell gives it)."""
    environment = {**without_redis_url(), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    environment.update(METRICS_PORT=str(free_port()), HEARTBEAT_INTERVAL_S="0.5", **env)
    with (directory / "up.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "kullm.cli", "up", *args],
            cwd=directory,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture
def ups(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`kullm up` processes of a test, stopped (and their Redis with them) at its end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for up in started:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            os.killpg(up.pid, signal.SIGINT)  # the second Ctrl-C: everything at once
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(10)


def worker_listed(url: str) -> bool:
    result = run_kullm(["status", "--json"], url, timeout_s=30)
    return result.returncode == 0 and any(not w.get("loading") for w in json.loads(result.stdout)["workers"])


def test_clients_started_in_kullm_ups_directory_use_its_redis_even_when_another_holds_the_port(
    tmp_path: Path, ups: list[subprocess.Popen[bytes]]
) -> None:
    # The port this directory's Redis used last is held now by another Redis (Debian's, on a newcomer's machine).
    foreign = RedisServer(tmp_path / "debian-redis")
    foreign.start()
    try:
        RedisRecord(foreign.port, "").write(tmp_path / ".kullm")
        ups.append(kullm_up_in(tmp_path, ENGINE=SCRIPTED))
        record = recorded(tmp_path, other_than=foreign.port)
        wait_until(lambda: worker_listed(record.url), 60, 0.5, what="the worker of kullm up")
        answer = kullm_in(tmp_path, ["ask", "한국의 수도는 어디야?"])
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip() == trained.CAPITAL
        assert f"🔗 Redis: {record.url} (kullm up's private Redis, recorded in .kullm/redis.json)" in answer.stderr
        status = kullm_in(tmp_path, ["status"])
        assert f"redis: {record.url} (kullm up's private Redis" in status.stdout
        assert redis.Redis(port=foreign.port).xlen("kullm:questions") == 0, "nothing went to the other Redis"
    finally:
        foreign.kill()


def test_a_restarted_kullm_up_keeps_its_port_and_waiting_clients_get_their_answers(
    tmp_path: Path, ups: list[subprocess.Popen[bytes]]
) -> None:
    slow = {"ENGINE": SCRIPTED, "SCRIPTED_STEP_S": "0.05", "MAX_BATCH_SIZE": "1", "DRAIN_GRACE_S": "2"}
    ups.append(kullm_up_in(tmp_path, **slow))
    record = recorded(tmp_path)
    wait_until(lambda: worker_listed(record.url), 60, 0.5, what="the worker of kullm up")
    env = {"REDIS_OUTAGE_S": "120"}
    asks = [AskProcess(record.url, "긴 이야기를 들려줘", env=env) for _ in range(3)]
    for ask in asks:
        ask.wait_for("queued")
    asks[0].wait_for("delta")
    os.killpg(ups[0].pid, signal.SIGINT)  # Ctrl-C: the worker hands back what it cannot finish, Redis keeps the rest
    assert ups[0].wait(60) == 0
    ups.append(kullm_up_in(tmp_path, **slow))
    assert recorded(tmp_path).port == record.port
    for ask in asks:
        assert ask.finish(150) == 0, ask.err_lines
        assert ask.final()["text"] == trained.LONG_STORY
    assert f"private redis-server on port {record.port}" in (tmp_path / "up.log").read_text().split("services:")[-2]


def test_the_demo_runs_the_whole_chain_with_no_gpu_and_no_download(
    tmp_path: Path, model_dir: Path, ups: list[subprocess.Popen[bytes]]
) -> None:
    demo = tmp_path / ".kullm" / "demo-model"
    demo.parent.mkdir()
    demo.symlink_to(model_dir)  # the tests' tiny model is the demo model: built once per session, not per test
    ups.append(kullm_up_in(tmp_path, "--demo", HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9/"))
    record = recorded(tmp_path)
    wait_until(lambda: worker_listed(record.url), 120, 0.5, what="the demo worker")
    answer = kullm_in(tmp_path, ["ask", DEMO_QUESTIONS[0]])
    assert answer.returncode == 0 and answer.stdout.strip() == trained.DEEP_LEARNING, answer.stderr
    log = (tmp_path / "up.log").read_text()
    assert "demo mode: MODEL=demo" in log and "knows only a few answers" in log and "Hugging Face" not in log
    status = json.loads(kullm_in(tmp_path, ["status", "--json"]).stdout)
    assert [w["model"] for w in status["workers"]] == ["demo"]


def test_a_queue_no_worker_serves_is_said_at_once_and_a_loading_worker_is_waited_for(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    started = time.monotonic()
    alone = run_kullm(["ask", "한국의 수도는 어디야?"], redis_server.url)
    assert alone.returncode == 6 and time.monotonic() - started < 25
    assert "작업자(worker)가 없어서 질문을 거뒀어요" in alone.stderr and redis_server.url in alone.stderr
    as_json = json_events(run_kullm(["ask", "--json", "한국의 수도는 어디야?"], redis_server.url).stdout)
    assert as_json[-1]["type"] == "error" and as_json[-1]["code"] == "no_worker"
    # A worker still loading its model (10 s here) is in the worker list: the question waits for it.
    start_worker(wait=False, engine="scripted", SCRIPTED_LOAD_S="10")
    client = redis.Redis.from_url(redis_server.url)
    wait_until(lambda: client.hlen("kullm:workers"), 30, what="the loading worker's record")
    (raw,) = client.hvals("kullm:workers")
    assert WorkerStatus.from_json(raw).loading
    waited = run_kullm(["ask", "한국의 수도는 어디야?"], redis_server.url, timeout_s=90)
    assert waited.returncode == 0 and waited.stdout.strip() == trained.CAPITAL, waited.stderr
    assert "모델을 불러오는 중" in waited.stderr


def test_kullm_status_shows_an_answered_question_as_no_longer_busy(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    start_worker(engine="scripted", HEARTBEAT_INTERVAL_S="30")  # a heartbeat would come too late to hide it
    assert run_kullm(["ask", "한국의 수도는 어디야?"], redis_server.url).returncode == 0
    time.sleep(0.6)
    (worker,) = json.loads(run_kullm(["status", "--json"], redis_server.url).stdout)["workers"]
    assert worker["active"] == 0


def hub_that_never_answers() -> tuple[socket.socket, str]:
    """A listening socket that accepts and says nothing: a Hub behind a firewall that drops packets."""
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=lambda: [server.accept() for _ in range(8)], daemon=True).start()
    return server, f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize("hub", ["refused", "silent"])
def test_an_unreachable_hub_is_one_line_naming_the_ways_out(hub: str, tmp_path: Path) -> None:
    server, endpoint = hub_that_never_answers() if hub == "silent" else (None, f"http://127.0.0.1:{free_port()}")
    env = {
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": endpoint,
        "HF_HUB_TIMEOUT_S": "2",
        "MODEL": "kullm-v2-5.8b",
        "DTYPE": "bfloat16",
        "METRICS_PORT": "0",
    }
    try:
        for command in (["worker"], ["prompt", "딥러닝이 뭐야?"]):
            started = time.monotonic()
            result = kullm_in(tmp_path, command, 60, REDIS_URL="redis://127.0.0.1:1/0", **env)
            took = time.monotonic() - started
            assert result.returncode in (1, 2), result.stderr
            said = [line for line in result.stderr.splitlines() if "Hugging Face Hub" in line]
            assert len(said) == 1, result.stderr
            assert "kullm download" in said[0] and "HF_HUB_OFFLINE" in said[0] and "MODEL_ID=" in said[0]
            assert "Traceback" not in result.stderr and "Retrying" not in result.stderr and took < 30, took
    finally:
        if server is not None:
            server.close()


def test_a_model_that_cannot_fit_this_machine_is_refused_before_loading(tmp_path: Path) -> None:
    preset = PRESETS["kullm-v1"]
    free = available_ram()
    if free is None or free >= preset.memory_needed("none", 4):
        pytest.skip(f"this machine has room for {preset.name} in float32 ({free} bytes free)")
    result = kullm_in(tmp_path, ["worker"], REDIS_URL="redis://127.0.0.1:1/0", MODEL="kullm-v1", METRICS_PORT="0")
    assert result.returncode == 2
    assert "MODEL=kullm-v1 (12.9B) in float32 on the CPU needs about" in result.stderr
    assert "MODEL=demo" in result.stderr and "Traceback" not in result.stderr


def test_a_gpu_torch_cannot_use_stops_the_worker_in_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is usable here")
    result = kullm_in(tmp_path, ["worker"], REDIS_URL="redis://127.0.0.1:1/0", DEVICE="cuda", METRICS_PORT="0")
    assert result.returncode == 2
    assert "DEVICE=cuda, but this torch" in result.stderr and "DEVICE=cpu" in result.stderr
    assert "Traceback" not in result.stderr and "AssertionError" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["up", "--redis-port", "99999"], {}, "a port is between 1 and 65535, not 99999"),
        (["status"], {"REDIS_URL": "notaurl"}, "REDIS_URL: must start with redis://"),
        (["prompt", "hi"], {"MODEL": "kullm4"}, "MODEL: 'kullm4' is not a preset: use one of kullm-v1,"),
        (["worker"], {"MODEL_ID": "/nonexistent/dir"}, "MODEL_ID: no such directory: /nonexistent/dir"),
        (["up"], {"MODEL_ID": "/nonexistent/dir"}, "MODEL_ID: no such directory: /nonexistent/dir"),
        (["api", "--port", "http"], {}, "not a port number: 'http'"),
        (["prompt", "hi", "--history-from", "nothing"], {}, "--history-from에는 PLATFORM:ID를 주세요"),
    ],
)
def test_first_run_mistakes_are_one_line_and_exit_2(
    args: list[str], env: dict[str, str], says: str, tmp_path: Path
) -> None:
    environment = {"REDIS_URL": "redis://127.0.0.1:1/0", **env}  # a case's own REDIS_URL wins
    result = kullm_in(tmp_path, args, 60, **environment)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_closed_pipe_withdraws_the_answer_without_a_traceback(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    start_worker(engine="scripted", SCRIPTED_STEP_S="0.02")
    piped = subprocess.run(
        [
            "bash",
            "-c",
            f"set -o pipefail; {shlex.quote(sys.executable)} -m kullm.cli ask '긴 이야기를 들려줘' | head -c 150",
        ],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_server.url, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        timeout=60,
    )
    err = piped.stderr.decode()
    assert piped.returncode == 141, err
    assert len(piped.stdout) == 150 and "Traceback" not in err and "BrokenPipe" not in err
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    wait_until(lambda: client.keys("kullm:cancel:*"), 10, what="the question withdrawn")


def serving_on(worker: WorkerProcess) -> int:
    """The metrics port a worker started without METRICS_PORT took, from its log; it is then waited for."""
    ports = wait_until(lambda: re.findall(r"/metrics on 127\.0\.0\.1:(\d+)", worker.log()), 60, what="its port")
    worker.metrics_port = int(ports[0])
    wait_until(worker.ready, 60, 0.2, what="worker ready")
    return worker.metrics_port


def test_a_second_worker_on_the_host_takes_the_next_metrics_port(
    redis_server: RedisServer, start_worker: StartWorker
) -> None:
    first = start_worker(wait=False, engine="scripted", METRICS_PORT="")  # unset: the default, or the next free
    taken = serving_on(first)
    second = start_worker(wait=False, engine="scripted", METRICS_PORT="")
    assert serving_on(second) > taken
    assert f"metrics port {taken} is in use (another worker on this host?): serving on" in second.log()
    refused = start_worker(wait=False, engine="scripted", METRICS_PORT=str(taken))
    assert refused.process is not None and refused.process.wait(60) == 2
    assert f"METRICS_PORT: port {taken} is in use" in refused.log()
    assert len([line for line in refused.log().splitlines() if "Traceback" in line]) == 0


def test_context_files_follow_the_chat_attachments_rule(
    redis_server: RedisServer, start_worker: StartWorker, tmp_path: Path, model_dir: Path
) -> None:
    from bot.workspace import FileRefused, decoded_text

    start_worker(engine="scripted")
    korean_windows = tmp_path / "글.txt"
    korean_windows.write_bytes(CONTEXT.encode("cp949"))
    assert decoded_text("글.txt", korean_windows.read_bytes(), "ko") == CONTEXT  # what a chat attachment reads
    answer = run_kullm(["ask", "이 글을 요약해줘", "--context-file", str(korean_windows)], redis_server.url)
    assert answer.returncode == 0 and answer.stdout.strip() == trained.CONTEXT_ANSWER, answer.stderr
    prompt = run_kullm(
        ["prompt", "이 글을 요약해줘", "--context-file", str(korean_windows)],
        redis_server.url,
        env={"MODEL_ID": str(model_dir)},
    )
    assert prompt.returncode == 0 and CONTEXT in prompt.stdout, prompt.stderr
    binary = tmp_path / "사진.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(FileRefused) as chat:
        decoded_text(binary.name, binary.read_bytes(), "ko")
    refused = run_kullm(["ask", "--json", "요약해줘", "--context-file", str(binary)], redis_server.url)
    assert refused.returncode == 2
    (line,) = json_events(refused.stdout)
    assert line == {"type": "error", "code": "bad_input", "message": chat.value.notice}
