"""The worker exports vLLM's metric names with vLLM's meanings (inference/vllm_metrics.py), so what is written for
vLLM works against our workers unchanged: every metric vLLM's published Grafana dashboard queries
(tests/reference/vllm/grafana.json) exists after a real answer, labelled with the served model's name, and holds
what that answer did."""

from __future__ import annotations

import json
import re
import urllib.request
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.polling import wait_until
from testkit.processes import ROOT, StartWorker, json_events, run_kullm
from testkit.redis_server import RedisServer

pytestmark = pytest.mark.e2e

DASHBOARD = ROOT / "tests" / "reference" / "vllm" / "grafana.json"
SERVED = "kullm-demo-metrics"  # SERVED_MODEL_NAME: what the dashboard's $model_name picks


def queried() -> set[str]:
    """The series vLLM's dashboard queries (`vllm:…_bucket`, `…_total`, gauges)."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 20, "the dashboard as vLLM publishes it"
    return {name for expr in exprs for name in re.findall(r"vllm:[a-z0-9_]+", expr)}


def scraped(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((dict(sample.labels), sample.value))
    return samples


def one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    [value] = [v for found, v in samples[name] if labels.items() <= found.items()]
    return value


def test_every_metric_vllms_dashboard_queries_exists_after_a_real_answer(
    start_worker: StartWorker, redis_server: RedisServer
) -> None:
    worker = start_worker(SERVED_MODEL_NAME=SERVED)  # the tiny model, real generation
    asked = run_kullm(["ask", "--json", "딥러닝이 뭐야?"], redis_server.url)
    assert asked.returncode == 0, asked.stderr
    done = json_events(asked.stdout)[-1]
    assert done["type"] == "done"
    # The gauges follow the heartbeat: idle again once the answer is done.
    wait_until(lambda: one(scraped(worker.metrics_port), "vllm:num_requests_running") == 0, 15, what="idle")
    samples = scraped(worker.metrics_port)
    missing = sorted(name for name in queried() if not samples.get(name))
    assert not missing, f"vLLM's dashboard would show nothing for {missing}"
    for name in queried():
        assert all(labels.get("model_name") == SERVED for labels, _ in samples[name]), name
    # What the answer did, in vLLM's words.
    model = {"model_name": SERVED}
    assert one(samples, "vllm:request_success_total", finished_reason=done["finish_reason"], **model) == 1
    assert one(samples, "vllm:prompt_tokens_total", **model) == done["prompt_tokens"]
    assert one(samples, "vllm:generation_tokens_total", **model) == done["completion_tokens"]
    for histogram in ("e2e_request_latency_seconds", "time_to_first_token_seconds", "request_queue_time_seconds"):
        assert one(samples, f"vllm:{histogram}_count", **model) == 1, histogram
    assert one(samples, "vllm:request_generation_tokens_sum", **model) == done["completion_tokens"]
    e2e = one(samples, "vllm:e2e_request_latency_seconds_sum", **model)
    ttft = one(samples, "vllm:time_to_first_token_seconds_sum", **model)
    assert 0 < ttft <= e2e and e2e >= done["generate_s"], "from the question's arrival, as vLLM measures"
    assert one(samples, "vllm:time_per_output_token_seconds_count", **model) >= done["completion_tokens"] - 1
    assert one(samples, "vllm:num_requests_swapped", **model) == 0 and one(samples, "vllm:kv_cache_usage_perc") == 0
