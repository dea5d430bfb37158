"""The alerting rules (deploy/monitoring/alerts.yml) as Prometheus reads them: `promtool check rules`, their unit
tests (`promtool test rules`: each alert fires on the series that should raise it and stays quiet otherwise), the
compose monitoring profile's configuration with them, and every metric they use exported by the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bot.metrics import AdapterMetrics
from inference.metrics import WorkerMetrics
from testkit.processes import ROOT

MONITORING = ROOT / "deploy" / "monitoring"
RULES, RULE_TESTS = MONITORING / "alerts.yml", MONITORING / "alerts.test.yml"
OBJECTIVES = {  # the objectives, each an alert
    "KullmFirstTokenSlow",
    "KullmQueueWaitLong",
    "KullmNoLiveWorker",
    "KullmDeadLettersGrowing",
    "KullmRedisRefusingWrites",
    "KullmRedisUnusable",
    "KullmFrontEndDisconnected",
}


def promtool() -> str:
    """promtool on the PATH, or the one `make promtool` unpacked under .cache."""
    found = shutil.which("promtool") or str(ROOT / ".cache" / "promtool" / "usr" / "bin" / "promtool")
    if not Path(found).exists():
        pytest.skip("promtool is not installed (make promtool unpacks it from Debian's prometheus package)")
    return found


def run(*args: str, cwd: Path = MONITORING) -> str:
    done = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def rules() -> list[dict[str, str]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_the_rules_are_valid_and_each_objective_has_one() -> None:
    assert "SUCCESS: 7 rules found" in run("check", "rules", RULES.name)
    assert {rule["alert"] for rule in rules()} == OBJECTIVES


def test_each_alert_fires_when_it_should_and_only_then() -> None:
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test["alert_rule_test"]}  # fmt: skip
    assert tested == OBJECTIVES, "every alert has its unit test"
    assert "SUCCESS" in run("test", "rules", RULE_TESTS.name)


def test_every_metric_the_rules_use_is_exported() -> None:
    families = set()
    for registry in (WorkerMetrics("kullm-v1").registry, AdapterMetrics("discord").registry):
        families |= {family.name for family in registry.collect()}
    used = {name for rule in rules() for name in re.findall(r"\b(?:vllm:|kullm_)[a-z0-9_:]+", rule["expr"])}
    assert used, "the rules read the service's own metrics"
    for name in used:
        base = re.sub(r"_(bucket|sum|count|total)$", "", name)
        assert base in families, f"{name}: no such metric in the code"


def test_the_compose_monitoring_profile_loads_the_rules(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/monitoring/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    shutil.copy(ROOT / "docker" / "monitoring" / "prometheus.yml", tmp_path / "prometheus.yml")  # as mounted
    shutil.copy(RULES, tmp_path / "alerts.yml")
    checked = run("check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS: 1 rule files found" in checked and "SUCCESS: 7 rules found" in checked
    for bot in ("discord", "slack", "slack-http"):
        environment = compose["services"][bot]["environment"]
        assert (environment["ADAPTER_METRICS_HOST"], environment["ADAPTER_METRICS_PORT"]) == ("0.0.0.0", "9410")
