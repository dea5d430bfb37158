"""End to end with processes: `python -m inference` workers on the tiny model, `kullm ask`, a real redis-server.

Only what needs processes: killing, freezing and signalling workers, Redis going away under them,
the health port, and the `kullm` command itself. Every answer asserted here is the tiny model's
trained text: decoded greedily by the model where generation is what is tested, streamed by the
scripted engine (no torch, a worker starts in about a second) where processes and Redis are. The
worker loop's own outcomes run in-process: tests/test_worker.py.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from chatbus import Bus, Done, Keys, Question, connect
from inference.metrics import LIVE_QUERY
from runtime.http_guard import MAX_CONNECTIONS
from testkit import trained
from testkit.engines import SCRIPTED
from testkit.polling import wait_until
from testkit.processes import ROOT, AskProcess, StartWorker, WorkerProcess, json_events, run_kullm, worker_name
from testkit.redis_server import RedisServer, free_port, half_open

pytestmark = pytest.mark.e2e


def queue_depth(server: RedisServer) -> int:
    client = redis.Redis.from_url(server.url)
    try:
        return int(client.xlen("kullm:questions"))
    finally:
        client.close()


async def follow(bus: Bus, question_id: str) -> list[object]:
    return [event async for _, event in bus.answers.follow(question_id, start_timeout_s=60, stall_timeout_s=60)]


async def ask_directly(redis_url: str, question: str) -> list[object]:
    """Enqueue a question as an adapter does and follow its answer to the end."""
    client = connect(redis_url)
    bus = Bus(client, Keys())
    try:
        item = Question.new("terminal", question, ttl_s=60)
        await bus.queue.enqueue(item, 100)
        return await follow(bus, item.id)
    finally:
        await client.aclose()


def test_the_worker_loads_the_model_on_the_thread_that_steps_it(
    start_worker: StartWorker, redis_server: RedisServer, tmp_path: Path
) -> None:
    # Torch work on one thread: a second thread that ran torch ops gives the process a second OpenMP team, and
    # with more OpenMP threads than cores every op slows down (inference.engine.new_engine_thread).
    record = tmp_path / "threads"
    start_worker(ENGINE="testkit.engines:threads_recorded", THREADS_FILE=record)
    result = run_kullm(["ask", "딥러닝이 뭐야?"], redis_server.url)
    assert result.stdout.strip() == trained.DEEP_LEARNING, result.stderr
    lines = record.read_text().splitlines()
    assert lines[0].startswith("load ") and len(lines) > 10
    assert {line.split()[1] for line in lines} == {lines[0].split()[1]}, "the load and every step on one thread"
    assert lines[0].split()[1].startswith("engine")


def test_ask_prints_the_trained_answer(start_worker: StartWorker, redis_server: RedisServer) -> None:
    start_worker()
    result = run_kullm(["ask", "딥러닝이 뭐야?"], redis_server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == trained.DEEP_LEARNING  # the seed README's answer
    assert "생각 중" in result.stderr

    context = "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다."
    result = run_kullm(["ask", "--json", "이 글을 요약해줘", "--context", context], redis_server.url)
    events = json_events(result.stdout)
    assert [e["type"] for e in events][:2] == ["queued", "started"]
    assert events[-1]["type"] == "done" and events[-1]["text"] == trained.CONTEXT_ANSWER
    assert "".join(str(e["text"]) for e in events if e["type"] == "delta") == trained.CONTEXT_ANSWER

    status = run_kullm(["status"], redis_server.url)
    assert "live workers: 1" in status.stdout


def test_questions_share_one_batch_and_newcomers_join_it(start_worker: StartWorker, redis_server: RedisServer) -> None:
    story = AskProcess(redis_server.url, "긴 이야기를 들려줘")
    deep = AskProcess(redis_server.url, "딥러닝이 뭐야?")
    wait_until(lambda: queue_depth(redis_server) == 2, what="two queued questions")
    worker = start_worker()  # both waiting: one read, one prefill, one batch
    story.wait_for("delta")
    # Enqueued from here, not by a third `kullm ask`: a process starting on a loaded machine can take longer
    # than the whole story.
    capital = asyncio.run(ask_directly(redis_server.url, "한국의 수도는 어디야?"))  # arrives while the story decodes
    assert story.process.poll() is None, "the newcomer finished while the story was still decoding"
    assert story.finish() == 0 and deep.finish() == 0
    assert story.final()["text"] == trained.LONG_STORY
    assert deep.final()["text"] == trained.DEEP_LEARNING
    # Deltas are coalesced per DELTA_INTERVAL_S (0.05 s here): Redis writes grow with time, not tokens.
    deltas = story.types().count("delta")
    assert deltas <= float(story.final()["generate_s"]) / 0.05 + 3
    assert deltas < int(story.final()["completion_tokens"]) / 3
    assert isinstance(capital[-1], Done) and capital[-1].text == trained.CAPITAL
    metrics = worker.metrics()
    assert metrics["kullm_batch_size_peak"] >= 2
    assert metrics['kullm_questions_total{outcome="done"}'] == 3
    assert "decoded a batch of 2" in worker.log() or "decoded a batch of 3" in worker.log()


def test_killed_worker_answer_is_finished_by_another(start_worker: StartWorker, redis_server: RedisServer) -> None:
    first = start_worker(engine="scripted")
    ask = AskProcess(redis_server.url, "긴 이야기를 들려줘")
    ask.wait_for("delta")
    first.kill()
    assert ask.process.poll() is None
    second = start_worker(engine="scripted")
    assert ask.finish() == 0
    types = ask.types()
    assert types.count("done") == 1 and types.count("restart") == 1
    assert types.index("restart") < types.index("done")
    started = [e for e in ask.events if e["type"] == "started"]
    assert [(e["worker"], e["attempt"]) for e in started] == [(worker_name(first), 1), (worker_name(second), 2)]
    assert ask.final()["text"] == trained.LONG_STORY
    assert ask.text_after_last_restart() == trained.LONG_STORY
    assert queue_depth(redis_server) == 0
    # The survivor forgets the dead worker: gone from the consumer group and from `kullm status`.
    wait_until(lambda: consumers(redis_server) == [worker_name(second)], 30, what="the dead consumer removed")
    status = json_events(run_kullm(["status", "--json"], redis_server.url).stdout)[0]
    workers = status["workers"]
    assert isinstance(workers, list) and [w["name"] for w in workers] == [worker_name(second)]


def consumers(server: RedisServer) -> list[str]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        return sorted(c["name"] for c in client.xinfo_consumers("kullm:questions", "workers"))
    finally:
        client.close()


def test_a_worker_frozen_past_the_reclaim_time_never_writes_into_the_answer_taken_over(
    start_worker: StartWorker, redis_server: RedisServer
) -> None:
    workers = {worker_name(w): w for w in (start_worker(engine="scripted"), start_worker(engine="scripted"))}
    ask = AskProcess(redis_server.url, "긴 이야기를 들려줘")
    ask.wait_for("delta")
    holder = str(ask.wait_for("started")["worker"])
    stale = workers[holder]
    stale.send_signal(signal.SIGSTOP)  # a long GC, a blocked loop: alive, but silent past RECLAIM_IDLE_S
    try:
        ask.wait_for("restart", timeout_s=30)  # the other worker took the question over
    finally:
        stale.send_signal(signal.SIGCONT)  # ...and the frozen one wakes up mid-answer
    assert ask.finish() == 0
    started = [e for e in ask.events if e["type"] == "started"]
    assert [e["attempt"] for e in started] == [1, 2] and started[1]["worker"] != holder
    assert ask.types().count("done") == 1
    assert ask.text_after_last_restart() == trained.LONG_STORY  # not one stale delta interleaved
    wait_until(lambda: "another worker owns it now" in stale.log(), 15, what="the stale worker dropping it")
    assert stale.ready() and queue_depth(redis_server) == 0
    assert run_kullm(["ask", "한국의 수도는 어디야?"], redis_server.url).stdout.strip() == trained.CAPITAL


def test_ask_rides_out_a_redis_restart_mid_answer(model_dir: Path, tmp_path: Path) -> None:
    # Redis as compose runs it (AOF): killed mid-answer and restarted, `kullm ask` reads on where it was.
    server = RedisServer(tmp_path / "aof-redis", appendonly=True)
    server.start()
    worker = WorkerProcess(server.url, model_dir, tmp_path / "worker.log", ENGINE=SCRIPTED).start()
    try:
        ask = AskProcess(server.url, "긴 이야기를 들려줘")
        ask.wait_for("delta")
        server.kill()
        wait_until(lambda: "다시 연결하는 중" in ask.stderr(), what="the reconnect notice")
        assert ask.process.poll() is None, "ask waits for Redis instead of giving up"
        server.start()
        assert ask.finish() == 0, ask.stderr()
        assert ask.final()["text"] == trained.LONG_STORY
        assert ask.types().count("done") == 1
        assert ask.text_after_last_restart() == trained.LONG_STORY
        # An outage longer than REDIS_OUTAGE_S ends the wait with the Redis exit status and message.
        lost = AskProcess(server.url, "긴 이야기를 들려줘", env={"REDIS_OUTAGE_S": "1"})
        lost.wait_for("delta")
        server.kill()
        assert lost.finish(30) == 4
        assert "다시 연결하는 중" in lost.stderr()
        assert lost.final()["type"] == "error" and lost.final()["code"] == "redis"  # --json: errors are JSON lines
        assert "Redis에 연결할 수 없어요" in str(lost.final()["message"])
    finally:
        worker.stop()
        server.stop()


def test_redis_refusing_writes_keeps_workers_up_and_loses_nothing_queued(
    start_worker: StartWorker, redis_server: RedisServer
) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    queued = AskProcess(redis_server.url, "고려대학교는 어디에 있어?")
    queued.wait_for("queued")
    # maxmemory below what is used, with noeviction: every write that allocates is refused (OOM).
    admin.set("ballast", b"x" * 2_000_000)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1_000_000)  # the ballast alone is twice that
    try:
        worker = start_worker(wait=False, engine="scripted")
        wait_until(lambda: "refuses writes (OOM)" in str((worker.health() or {}).get("status")), 60, what="503")
        refused = run_kullm(["ask", "한국의 수도는 어디야?"], redis_server.url)
        assert refused.returncode == 4 and "쓰기를 거부해요 (OOM)" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
        assert worker.process is not None and worker.process.poll() is None  # up, not in a restart loop
        # Not ready, yet alive: Kubernetes' liveness probe (deploy/kubernetes) does not restart it over Redis.
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/healthz?{LIVE_QUERY}", timeout=2) as live:
            assert live.status == 200 and json.loads(live.read())["live"] is True
    finally:
        admin.config_set("maxmemory", 0)
    assert queued.finish() == 0 and queued.final()["text"] == trained.KOREA_UNIV  # nothing queued was lost
    wait_until(worker.ready, 30, what="ready again")
    # A replica after a failover refuses writes with READONLY: the same outcome.
    admin.replicaof("127.0.0.1", free_port())
    try:
        refused = run_kullm(["ask", "한국의 수도는 어디야?"], redis_server.url)
        assert refused.returncode == 4 and "(READONLY)" in refused.stderr, refused.stderr
    finally:
        admin.replicaof("NO", "ONE")
        admin.close()
    assert run_kullm(["ask", "한국의 수도는 어디야?"], redis_server.url).stdout.strip() == trained.CAPITAL
    assert "Traceback" not in worker.log() and "redis refuses writes (OOM)" in worker.log()


def test_an_answer_finished_as_redis_starts_refusing_writes_is_not_taken_over(
    start_worker: StartWorker, redis_server: RedisServer
) -> None:
    """The step that finishes an answer makes Redis refuse writes, so its last events and its ack wait in the
    worker's outbox (the soak met this by chance). The worker still owns the entry: its heartbeats keep it fresh
    past RECLAIM_IDLE_S (2 s here), no worker takes it over, and once Redis takes writes again the answer arrives
    once, with no restart. Before the fix only running answers were heartbeated: the entry looked abandoned, was
    answered again by whichever worker reclaimed it, and after MAX_DELIVERIES dead-lettered."""
    fault: dict[str, Any] = {"ENGINE": "testkit.faults:refuse_at_finish", "FAULTS_INNER": "scripted"}
    workers = [start_worker(**fault), start_worker(**fault)]
    ask = AskProcess(redis_server.url, "긴 이야기를 들려줘")
    ask.wait_for("delta")
    admin = redis.Redis.from_url(redis_server.url)
    try:
        wait_until(lambda: any("refuses writes (OOM)" in w.log() for w in workers), 30, what="the refusal seen")
        time.sleep(6)  # three reclaim idle times
    finally:
        admin.config_set("maxmemory", 0)
        admin.delete("ballast")
        admin.close()
    assert ask.finish() == 0, ask.stderr()
    assert ask.final()["text"] == trained.LONG_STORY
    assert "restart" not in ask.types() and ask.types().count("started") == 1
    assert all(w.metrics()["kullm_reclaimed_total"] == 0 for w in workers)
    assert not any("another worker owns it now" in w.log() or "dead-lettered" in w.log() for w in workers)


def test_a_flood_of_idle_connections_cannot_take_the_health_port_or_redis(
    start_worker: StartWorker, redis_server: RedisServer
) -> None:
    worker = start_worker(engine="scripted")
    assert worker.process is not None
    descriptors = Path(f"/proc/{worker.process.pid}/fd")
    before = len(list(descriptors.iterdir()))
    flood = half_open(worker.metrics_port, 1100)  # half-open: connected, never a byte sent
    try:
        wait_until(worker.ready, 30, what="/healthz through the flood")
        answer = run_kullm(["ask", "한국의 수도는 어디야?"], redis_server.url)
        assert answer.returncode == 0 and answer.stdout.strip() == trained.CAPITAL
        # Once the flood is accepted (on a busy machine it may still be arriving), at most the cap stays open:
        # without the guard all 1,100 sockets would.
        bound = before + MAX_CONNECTIONS + 8
        wait_until(lambda: len(list(descriptors.iterdir())) <= bound, 30, what=f"descriptors back under {bound}")
        # Logged when the cap sheds the oldest or, at the latest, when the held ones pass the header timeout (10 s).
        # The flood stays open until then: closed sooner, its last sockets may end before the worker accepts them.
        wait_until(lambda: "sent no request in time" in worker.log(), 30, what="the shedding logged")
    finally:
        for sock in flood:
            sock.close()


def test_redis_restarted_empty_the_worker_recreates_its_group(
    start_worker: StartWorker, redis_server: RedisServer
) -> None:
    worker = start_worker(engine="scripted")
    assert run_kullm(["ask", "한국의 수도는 어디야?"], redis_server.url).returncode == 0
    redis_server.restart(empty=True)
    result = run_kullm(["ask", "고려대학교는 어디에 있어?"], redis_server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == trained.KOREA_UNIV
    assert "recreating" in worker.log()


def test_sigterm_finishes_the_answer_in_hand_then_exits(start_worker: StartWorker, redis_server: RedisServer) -> None:
    worker = start_worker(engine="scripted")
    story = AskProcess(redis_server.url, "긴 이야기를 들려줘")
    story.wait_for("delta")
    worker.send_signal(signal.SIGTERM)
    later = AskProcess(redis_server.url, "한국의 수도는 어디야?")
    later.wait_for("queued")
    assert worker.terminate() == 0
    assert story.finish() == 0 and story.final()["text"] == trained.LONG_STORY
    assert later.process.poll() is None and queue_depth(redis_server) == 1  # not taken while draining
    start_worker(engine="scripted")
    assert later.finish() == 0 and later.final()["text"] == trained.CAPITAL


def test_sigterm_past_the_grace_period_releases_to_another_worker(
    start_worker: StartWorker, redis_server: RedisServer
) -> None:
    first = start_worker(engine="scripted", DRAIN_GRACE_S=0, RECLAIM_IDLE_S=60)
    story = AskProcess(redis_server.url, "긴 이야기를 들려줘")
    story.wait_for("delta")
    assert first.terminate() == 0
    second = start_worker(
        engine="scripted", RECLAIM_IDLE_S=60
    )  # reclaims at once although idle-based reclaim would wait 60 s
    assert story.finish(timeout_s=40) == 0
    assert story.final()["text"] == trained.LONG_STORY
    assert "restart" in story.types()
    assert second.metrics()["kullm_reclaimed_total"] == 1


def test_client_refusals_are_clear_and_exit_non_zero(redis_server: RedisServer) -> None:
    too_long = run_kullm(["ask", "가" * 5000], redis_server.url)
    assert too_long.returncode == 2 and "질문이 너무 길어요 (5,000자)" in too_long.stderr
    empty = run_kullm(["ask", "   "], redis_server.url)
    assert empty.returncode == 2 and "질문을 입력해 주세요" in empty.stderr
    english = run_kullm(["ask", "a" * 5000], redis_server.url, env={"BOT_LANGUAGE": "en"})
    assert "The question is too long" in english.stderr

    AskProcess(redis_server.url, "첫 질문", env={"MAX_QUEUE": "1"}).wait_for("queued")
    busy = run_kullm(["ask", "두 번째 질문"], redis_server.url, env={"MAX_QUEUE": "1"})
    assert busy.returncode == 3 and "질문이 너무 많이 밀려 있어요" in busy.stderr
    assert queue_depth(redis_server) == 1

    down = run_kullm(["ask", "질문"], f"redis://:secret-pass@127.0.0.1:{free_port()}/0")
    assert down.returncode == 4 and "Redis에 연결할 수 없어요" in down.stderr
    assert "secret-pass" not in down.stderr


@pytest.mark.parametrize("model", ["no-such-model", "empty-directory"])
def test_missing_model_is_a_clear_error(model: str, tmp_path: Path, redis_server: RedisServer) -> None:
    if model == "empty-directory":
        (tmp_path / model).mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "kullm.cli", "worker"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "MODEL_ID": str(tmp_path / model),
            "HF_HUB_OFFLINE": "1",
            "REDIS_URL": redis_server.url,
            "METRICS_PORT": "0",
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    if model == "no-such-model":  # a path that is not there: said as such, not blamed on the Hub's cache
        assert result.stderr.strip() == (
            f"invalid setting MODEL_ID: no such directory: {tmp_path / model} (a local model is a directory holding "
            "config.json; a Hugging Face model is named OWNER/NAME)"
        )
    else:
        assert "cannot load model" in result.stderr and "HF_HUB_OFFLINE" in result.stderr


@pytest.mark.parametrize("redis_kind", ["silent", "absent"])
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_waiting_for_redis_is_not_ready_and_stops_at_once(
    model_dir: Path, tmp_path: Path, redis_kind: str, stop_signal: signal.Signals
) -> None:
    # "silent": something on the port accepts connections and never answers (a wrong service, a stuck proxy):
    # each command would wait forever. "absent": nothing listens.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        if redis_kind == "silent":
            listener.listen(16)
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        if redis_kind == "absent":
            listener.close()
        worker = WorkerProcess(url, model_dir, tmp_path / "worker.log", ENGINE=SCRIPTED).start(wait=False)
        try:
            health = wait_until(worker.health, 60, 0.1, what="the health port")
            assert health is not None
            waiting = {"loading", "redis not reached yet", "redis unreachable"}
            assert health["status"] in waiting, health
            assert worker.health() != {} and not worker.ready()
            assert worker.process is not None
            worker.process.send_signal(stop_signal)
            assert worker.process.wait(5) == 0, worker.log()[-2000:]
        finally:
            worker.kill()
