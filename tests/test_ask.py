"""`kullm ask` as a user meets it: bad arguments, 맥락 from a file or stdin, and Ctrl-C.

Argument checks run in this process (`kullm.cli.main`); Ctrl-C needs a real `kullm ask` process and a signal.
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
import redis

from kullm.cli import main
from testkit import trained
from testkit.polling import wait_until
from testkit.processes import ROOT, AskProcess, StartWorker, run_kullm
from testkit.redis_server import RedisServer

CONTEXT = "구름(KULLM)은 고려대학교 NLP & AI 연구실이 만든 한국어 LLM입니다."


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--max-new-tokens", "0"], "must be between 1 and 8192, not 0"),
        (["--max-new-tokens", "8193"], "must be between 1 and 8192, not 8193"),
        (["--max-new-tokens", "many"], "not a whole number: 'many'"),
        (["--context", "a", "--context-file", "b"], "not allowed with argument --context"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str], redis_server: RedisServer
) -> None:
    assert main(["ask", "질문", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("question", "says"),
    [
        ("\udcff\udcfe질문", "질문이 올바른 UTF-8 텍스트가 아니에요"),  # undecodable argv bytes (PEP 383)
        ("\u200b\u3164\u2800\u00a0\u0301\ufeff", "질문을 입력해 주세요"),  # zero-width, Hangul filler, braille blank…
        ("\t\u3000\n", "질문을 입력해 주세요"),
    ],
)
def test_undecodable_or_invisible_questions_are_refused_before_redis(
    question: str, says: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached: refused first
    assert main(["ask", question]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


def test_unreadable_context_files_are_one_line_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["ask", "요약해줘", "--context-file", str(tmp_path / "missing.txt")]) == 2
    assert "맥락 파일을 읽을 수 없어요" in capsys.readouterr().err
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    assert main(["ask", "요약해줘", "--context-file", str(latin1)]) == 2
    assert "❌ 파일 latin1.txt을(를) 읽을 수 없어요 (UTF-8, CP949/EUC-KR" in capsys.readouterr().err
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"a" * 800_001)
    assert main(["ask", "요약해줘", "--context-file", str(huge)]) == 2
    assert "맥락이 너무 길어요" in capsys.readouterr().err


def test_context_comes_from_a_file_or_stdin(
    start_worker: StartWorker, redis_server: RedisServer, tmp_path: Path
) -> None:
    start_worker(engine="scripted")
    path = tmp_path / "글.txt"
    path.write_text("\ufeff" + CONTEXT, encoding="utf-8")  # a byte-order mark is not part of the text
    from_file = run_kullm(["ask", "이 글을 요약해줘", "--context-file", str(path)], redis_server.url)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.strip() == trained.CONTEXT_ANSWER
    from_stdin = run_kullm(["ask", "이 글을 요약해줘", "--context-file", "-"], redis_server.url, stdin=CONTEXT)
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout.strip() == trained.CONTEXT_ANSWER


def test_undecodable_argument_bytes_from_a_shell_are_refused(redis_server: RedisServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kullm.cli", "ask", b"\xed\xa0\x80\xff".decode("utf-8", "surrogateescape")],
        cwd=ROOT,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": redis_server.url, "LC_ALL": "C.UTF-8"},
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "❌ 질문이 올바른 UTF-8 텍스트가 아니에요."


def cancel_flag(server: RedisServer, question_id: str) -> bool:
    client = redis.Redis.from_url(server.url)
    try:
        return bool(client.exists(f"kullm:cancel:{question_id}"))
    finally:
        client.close()


def test_ctrl_c_on_a_queued_question_withdraws_it_at_once(start_worker: StartWorker, redis_server: RedisServer) -> None:
    ask = AskProcess(redis_server.url, "딥러닝이 뭐야?")  # no worker yet: it stays in the queue
    ask.wait_for("queued")
    pressed = time.monotonic()
    ask.process.send_signal(signal.SIGINT)
    assert ask.finish(10) == 130
    assert time.monotonic() - pressed < 5, "left at once, not when a worker took the question"
    assert ask.events[-1] == {"type": "left", "id": ask.question_id, "started": False}
    assert cancel_flag(redis_server, ask.question_id)
    # A worker that comes later drops it: the next question is answered, this one never is.
    start_worker(engine="scripted")
    later = run_kullm(["ask", "한국의 수도는 어디야?"], redis_server.url)
    assert later.stdout.strip() == trained.CAPITAL


def test_ctrl_c_mid_answer_keeps_the_text_so_far(start_worker: StartWorker, redis_server: RedisServer) -> None:
    start_worker(engine="scripted")
    ask = AskProcess(redis_server.url, "긴 이야기를 들려줘")
    ask.wait_for("delta")
    ask.process.send_signal(signal.SIGINT)
    assert ask.finish(30) == 130
    assert ask.events[-1]["type"] == "error" and ask.events[-1]["code"] == "cancelled"
    partial = "".join(str(e["text"]) for e in ask.events if e["type"] == "delta")
    assert partial and trained.LONG_STORY.startswith(partial) and partial != trained.LONG_STORY


def test_a_second_ctrl_c_always_leaves(start_worker: StartWorker, redis_server: RedisServer) -> None:
    worker = start_worker(engine="scripted")
    ask = AskProcess(redis_server.url, "긴 이야기를 들려줘")
    ask.wait_for("delta")
    worker.send_signal(signal.SIGSTOP)  # frozen: the first Ctrl-C's cancel is never answered
    try:
        ask.process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert ask.process.poll() is None, "the first Ctrl-C waits for the worker to stop the answer"
        pressed = time.monotonic()
        ask.process.send_signal(signal.SIGINT)
        assert ask.finish(10) == 130
        assert time.monotonic() - pressed < 5
        assert ask.events[-1] == {"type": "left", "id": ask.question_id, "started": True}
        wait_until(lambda: cancel_flag(redis_server, ask.question_id), 5, what="the cancel flag")
    finally:
        worker.send_signal(signal.SIGCONT)


def test_the_readme_documents_every_json_line() -> None:
    from typing import get_args

    from chatbus import AnswerEvent

    rows = re.findall(r"^\| `(\w+)` \| (.*?) \| .*\|$", (ROOT / "README.md").read_text(), re.MULTILINE)
    # Each row's fields, without the values given in parentheses.
    documented = {kind: set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", fields))) for kind, fields in rows}
    events = get_args(get_args(AnswerEvent)[0])
    for event in events:
        kind = event.model_fields["type"].default
        assert documented.get(kind) == set(event.model_fields) - {"v", "type"}, kind
    assert documented["queued"] == {"id", "ahead"} and documented["left"] == {"id", "started"}


def test_a_stalled_redis_is_exit_4_within_seconds(redis_server: RedisServer) -> None:
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        started = time.monotonic()
        result = run_kullm(["ask", "한국의 수도는 어디야?"], redis_server.url)
        waited = time.monotonic() - started
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert result.returncode == 4, result.stderr
    assert "응답하지 않아요" in result.stderr and "Traceback" not in result.stderr
    assert waited < 20, f"it used to wait as long as Redis stayed paused; {waited:.1f}s"


def test_piped_text_ends_its_line_however_the_answer_ends() -> None:
    import io

    from rich.console import Console

    from bot.terminal.render import LiveView, PlainText
    from chatbus import Delta, Done, ErrorEvent

    for ending in (ErrorEvent(code="cancelled", message="stopped"), None):
        out, err = io.StringIO(), io.StringIO()
        shown = PlainText(out, err, "ko")
        shown.event(Delta(text="옛날 옛적"))
        if ending is None:
            shown.left("q1", started=True)  # a second Ctrl-C: left without waiting
        else:
            shown.event(ending)
        assert out.getvalue() == "옛날 옛적\n", "a shell prompt after it starts on its own line"
    done = Done(text="서울", finish_reason="stop", prompt_tokens=3, completion_tokens=5, queued_s=0.1, generate_s=3.2)
    view = LiveView(Console(file=io.StringIO(), force_terminal=True), "ko")
    view.event(done)
    view.close()
    assert view.status == "토큰 5개 · 3.2초", "Korean mode says it in Korean"
