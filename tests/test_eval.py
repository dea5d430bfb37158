"""`kullm eval` for real: the items asked through the queue to a real worker (the tiny model), judged by a real
OpenAI-compatible judge — `kullm api` on the tiny judge model (testkit.judge_model), with log-probabilities — the
report, the chart, a run killed and resumed, and the probability weighting checked against a hand computation; then
judges that misbehave (garbage, 429, too slow, no log-probabilities, a refused key) against a stand-in judge."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from chatbus import Bus, Vote, usage_field
from kullm.eval.items import load_items
from kullm.eval.protocols import KULLM_2023
from testkit.engines import RunWorker
from testkit.polling import eventually
from testkit.processes import ROOT, WorkerProcess, run_kullm
from testkit.redis_server import RedisServer, free_port
from tests.test_api import running_api

pytestmark = pytest.mark.e2e
LIMIT = 12


def eval_command(out: Path, judge_url: str, *extra: str, judge: str = "tiny-judge") -> list[str]:
    return ["eval", "run", "--out", str(out), "--judge-url", judge_url, "--judge-model", judge, *extra]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def by_hand(tokens: list[Any]) -> dict[str, float]:
    """G-Eval's weighting, computed here from the judge's own tokens: at the token after each `name:`, the
    probability of each allowed value among the alternatives, and the expected value."""
    scores: dict[str, float] = {}
    text = ""
    for token, logprob, top in tokens:
        for criterion in KULLM_2023.criteria:
            if text.rstrip().endswith(criterion.name + ":") and token.strip().isdigit() and criterion.key not in scores:
                mass = {v: 0.0 for v in criterion.values}
                for alternative, alternative_logprob in {token: logprob, **dict(top)}.items():
                    if alternative.strip().isdigit() and int(alternative.strip()) in mass:
                        mass[int(alternative.strip())] += math.exp(alternative_logprob)
                scores[criterion.key] = sum(v * p for v, p in mass.items()) / sum(mass.values())
        text += token
    return scores


@contextlib.asynccontextmanager
async def tiny_judge(
    redis_server: RedisServer, judge_model_dir: Path, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """`kullm api` and a worker on the tiny judge model, on their own queue (KEY_PREFIX) of the same Redis: the
    judge's URL and a key for it."""
    env = {"KEY_PREFIX": "judge"}
    worker = WorkerProcess(redis_server.url, judge_model_dir, tmp_path / "judge-worker.log", TEMPLATE="kullm-v1", **env)
    await asyncio.to_thread(worker.start)
    try:
        async with running_api(redis_server.url, tmp_path, API_MAX_TOKENS="200", **env) as api:
            made = run_kullm(["keys", "create", "evaluator"], redis_server.url, env=env)
            assert made.returncode == 0, made.stderr
            yield api.base_url, made.stdout.strip()
    finally:
        await asyncio.to_thread(worker.stop)


async def test_a_run_asks_through_the_queue_judges_with_logprobs_resumes_and_reports(
    redis_server: RedisServer,
    bus: Bus,
    run_worker: RunWorker,
    judge_model_dir: Path,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    run_worker("builtin", max_new_tokens=24, max_batch_size=1)  # one answer at a time: the kill lands mid-run
    # A chat member's vote on an answer of the same model and template: the report shows it beside the judge's.
    await bus.feedback.add_vote(
        Vote(
            question_id="q1",
            platform="discord",
            voter="v",
            vote="up",
            at=time.time(),
            model=str(model_dir),
            template="kullm-v1",
        ),
        86400,
    )
    out = tmp_path / "runs"
    async with tiny_judge(redis_server, judge_model_dir, tmp_path) as (judge_url, key):
        env = {**os.environ, "REDIS_URL": redis_server.url, "JUDGE_API_KEY": key, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "kullm.cli", *eval_command(out, judge_url, "--limit", str(LIMIT))]
        with (tmp_path / "first-run.log").open("wb") as log:
            first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        runs = list(out.glob("*/kullm-2023-*"))

        async def some_judged() -> bool:
            runs[:] = list(out.glob("*/kullm-2023-*"))
            return bool(runs) and len(lines(runs[0] / "judgments.jsonl")) >= 1

        assert await eventually(some_judged, timeout_s=120), (tmp_path / "first-run.log").read_text()
        first.send_signal(signal.SIGKILL)
        first.wait()
        answered_before = {a["id"] for a in lines(runs[0].parent / "answers.jsonl")}
        judged_before = lines(runs[0] / "judgments.jsonl")
        assert len(answered_before) < LIMIT, "killed part way"
        finished = await asyncio.to_thread(
            run_kullm,
            eval_command(out, judge_url, "--limit", str(LIMIT)),
            redis_server.url,
            240,
            {"JUDGE_API_KEY": key},
        )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    answers = lines(runs[0].parent / "answers.jsonl")
    judgments = lines(runs[0] / "judgments.jsonl")
    assert sorted(a["id"] for a in answers) == sorted(i.id for i in load_items(LIMIT)), "each item answered once"
    assert judgments[: len(judged_before)] == judged_before, "what was judged before the kill is kept as it was"
    assert len({j["id"] for j in judgments}) == len(judgments) == LIMIT, "and not judged again"
    usage = await bus.ledger.usage(time.strftime("%Y-%m-%d", time.gmtime()))
    asked = usage[usage_field("eval", "kullm-eval", "*", "questions")]
    assert LIMIT <= asked <= LIMIT + 4, f"only the unanswered were asked again (concurrency 4): {asked}"
    assert all(a["answer"] and a["model"] == str(model_dir) for a in answers), "the deployment's own answers"

    # Scores: G-Eval's probability weighting, as computed here from the tokens the judge returned.
    scored = [j for j in judgments if j["scores"] is not None]
    assert len(scored) >= LIMIT - 1 and all(j["method"] == "logprobs" for j in scored)
    for judgment in scored:
        assert judgment["scores"] == pytest.approx(by_hand(judgment["logprobs"]), abs=1e-9)
    assert any(j["scores"][k] != j["written"][k] for j in scored for k in j["scores"]), "the weighting matters"
    deployment = json.loads((runs[0].parent / "deployment.json").read_text())
    assert deployment["engine"] == "builtin" and deployment["model_id"] == str(model_dir)

    # The report: the six means with intervals beside the published rows, the chart, the members' votes, the cost.
    report = finished.stdout
    assert "| **this deployment** (kullm-v1, builtin) |" in report
    row = next(line for line in report.splitlines() if line.startswith("| **this deployment**"))
    assert row.count("[") == 6, row
    assert "| KULLM v2 (Polyglot-ko 12.8B) (published) | 0.742 | 2.083 |" in report
    assert "👍 1, 👎 0" in report
    assert (runs[0] / "report.md").read_text() == report
    chart = (runs[0] / "scores.png").read_bytes()
    assert chart.startswith(b"\x89PNG") and len(chart) > 10_000
    assert "answer tokens generated; judge:" in finished.stderr and "prompt + " in finished.stderr

    again = await asyncio.to_thread(run_kullm, eval_command(out, judge_url, "--limit", str(LIMIT)), redis_server.url)
    assert again.returncode == 0 and "0 answer tokens" not in again.stdout, "a finished run only reports"
    compared = run_kullm(["eval", "compare", str(runs[0]), str(runs[0])], redis_server.url)
    assert compared.returncode == 0 and compared.stdout.count("within noise") == 6, compared.stdout


# ---------------------------------------------------------------- a judge that misbehaves

GOOD = "이해 가능성: 1\n자연스러움: 2\n맥락 유지: 3\n흥미롭기: 2\n지시어 사용: 1\n전반적인 품질: {overall}"


class StandInJudge:
    """An OpenAI-compatible judge whose behaviour each item's instruction picks; it counts requests per item."""

    def __init__(self) -> None:
        self.items = load_items(4)
        self.asked: dict[str, int] = {}
        self.slow = True

    def item(self, body: dict[str, Any]) -> str:
        shown = body["messages"][-1]["content"]
        return next(i.id for i in self.items if i.instruction in shown)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["model"] == "wrong-key":
            return web.json_response({"error": {"message": "Incorrect API key"}}, status=401)
        item = self.item(body)
        count = self.asked[item] = self.asked.get(item, 0) + 1
        if item == self.items[0].id:  # never a readable reply
            return self.reply("점수를 매길 수 없습니다. 답변이 흥미롭네요!", body)
        if item == self.items[1].id and count <= 2:  # busy twice
            return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0"})
        if item == self.items[2].id and self.slow:  # slower than --judge-timeout
            await asyncio.sleep(1.5)
        return self.reply(GOOD.format(overall=1 + count % 5), body)

    def reply(self, text: str, body: dict[str, Any]) -> web.Response:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        if body.get("logprobs") and body["model"] != "no-logprobs":
            pieces = [
                piece
                for line in text.split("\n")
                for piece in (*line.rsplit(" ", 1)[:-1], " " + line.rsplit(" ", 1)[-1], "\n")
            ]
            content = [
                {
                    "token": p,
                    "logprob": -0.5 if p.strip().isdigit() else -0.01,
                    "top_logprobs": [{"token": " 1", "logprob": -1.0}],
                }
                for p in pieces[:-1]
            ]
            choice["logprobs"] = {"content": content}
        usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        return web.json_response({"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage})


async def test_garbage_429_timeouts_no_logprobs_and_a_refused_key_are_each_handled(
    redis_server: RedisServer, run_worker: RunWorker, tmp_path: Path
) -> None:
    run_worker()
    judge = StandInJudge()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", judge.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url, out = f"http://127.0.0.1:{port}/v1", tmp_path / "runs"
    quick = ("--limit", "4", "--judge-timeout", "0.5", "--judge-backoff", "0.01")
    try:
        first = await asyncio.to_thread(run_kullm, eval_command(out, url, *quick), redis_server.url, 120)
        assert first.returncode == 0, first.stdout + first.stderr
        folder = next(out.glob("*/kullm-2023-*"))
        judged = {j["id"]: j for j in lines(folder / "judgments.jsonl")}
        garbage, busy, slow, fine = (judged[i.id] for i in judge.items)
        assert garbage["scores"] is None and garbage["unscored"] == "unreadable" and len(garbage["raw"]) == 3
        assert "점수를 매길 수 없습니다" in garbage["raw"][0], "the judge's own words are kept"
        assert busy["scores"] is not None and judge.asked[judge.items[1].id] == 3, "429 waited out (Retry-After)"
        assert slow["scores"] is None and slow["unscored"].startswith("judge_error"), slow
        assert fine["scores"]["overall"] == pytest.approx(
            (2 * math.exp(-0.5) + 1 * math.exp(-1.0)) / (math.exp(-0.5) + math.exp(-1.0))
        ), "weighted between the written 2 and the alternative 1"
        assert "unscored 1 unreadable, 1 the judge did not answer" in first.stdout

        judge.slow = False  # back: a rerun asks again what the judge failed to answer, not what it wrote garbage to
        asked = dict(judge.asked)
        second = await asyncio.to_thread(run_kullm, eval_command(out, url, *quick), redis_server.url, 120)
        assert second.returncode == 0, second.stdout + second.stderr
        assert judge.asked[judge.items[0].id] == asked[judge.items[0].id]
        assert judge.asked[judge.items[2].id] > asked[judge.items[2].id]
        assert "unscored 1 unreadable, 0 the judge did not answer" in second.stdout

        sampled = await asyncio.to_thread(
            run_kullm, eval_command(out, url, *quick, "--samples", "3", judge="no-logprobs"), redis_server.url, 120
        )
        assert sampled.returncode == 0, sampled.stdout + sampled.stderr
        samples = {j["id"]: j for j in lines(next(out.glob("*/kullm-2023-no-logprobs-*")) / "judgments.jsonl")}
        fine = samples[judge.items[3].id]
        assert fine["method"] == "samples" and len(fine["raw"]) >= 3
        written = [int(raw.rsplit(" ", 1)[-1]) for raw in fine["raw"][-3:]]
        assert fine["scores"]["overall"] == pytest.approx(sum(written) / 3), "the mean of the samples"

        refused = await asyncio.to_thread(
            run_kullm, eval_command(out, url, *quick, judge="wrong-key"), redis_server.url, 60
        )
        assert refused.returncode == 1 and "refused the request (HTTP 401" in refused.stderr, refused.stderr
    finally:
        await runner.cleanup()


async def test_a_fleet_that_answers_differently_is_refused(
    redis_server: RedisServer, run_worker: RunWorker, tmp_path: Path
) -> None:
    run_worker()
    run_worker(temperature=0.2)
    bus = Bus.open(redis_server.url)

    async def both_report() -> bool:
        return len([w for w in (await bus.workers.stats()).workers if w.deployment]) == 2

    assert await eventually(both_report)
    await bus.aclose()
    mixed = await asyncio.to_thread(run_kullm, eval_command(tmp_path, "http://127.0.0.1:9/v1"), redis_server.url)
    assert mixed.returncode == 1 and "answer differently" in mixed.stderr and "temperature 0.2" in mixed.stderr
